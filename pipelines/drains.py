"""Draining a group's changed features, compiled: one function per group.

After a batch (or an event), the engine drains the features of every key changed since
the last drain: for each, one :class:`~pipelines.windows.FeatureValue` per aggregate,
the aggregate's ``result`` of its window state. :func:`compile_drain` writes that walk
as one function of the group, the results of the functions whose result is a few
bytecodes inline (the same values as :mod:`pipelines.aggregates` gives). Like everything
in :mod:`pipelines.codegen`, no value from a spec enters the generated text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipelines.codegen import Source


def _result_expr(src: Source, fn: Any, state: str) -> str:
    """The feature value of the aggregate state ``state``: ``fn.result``, inline for
    the functions whose result is a few bytecodes (the same values, see
    :mod:`pipelines.aggregates`)."""
    name = fn.name
    if name == "count":
        return f"{state}[0]"
    if name == "sum":
        return f"float({state}[0])"
    if name == "mean":
        return f"({state}[0] / {state}[1] if {state}[1] else None)"
    if name in ("min", "max"):
        return f"(None if {state}[0] is None else float({state}[0]))"
    if name == "distinct":
        return f"len({state})"
    if name == "last_n":
        return f"list({state})"
    return f"{src.const(fn.result)}({state})"


def compile_drain(group: Any, label: str) -> Callable[[list[Any]], None]:
    """``drain(out)`` of a :class:`~pipelines.groups.KeyedGroup`: for each key changed
    since the last drain (and still held), a :class:`~pipelines.windows.FeatureValue`
    per aggregate appended to ``out``, in aggregate order; the changes forgotten."""
    src = Source()
    keys, dirty = src.const(group.keys), src.const(group.dirty)
    feature_value, names = src.const(group.feature_value), src.const(group.names)
    src.add(0, "def drain(out):")
    src.add(1, "append = out.append")
    src.add(1, f"get = {keys}.get")
    src.add(1, f"for key in {dirty}:")
    src.add(2, "slot = get(key)")
    src.add(2, "if slot is None:")
    src.add(3, "continue")
    src.add(2, "names = slot[3]")
    src.add(2, "if names is None:")  # a key's feature names, made once
    src.add(3, f"names = slot[3] = {names}(key)")
    src.add(2, "states = slot[2]")
    for i, aggregate in enumerate(group.aggregates):
        state = src.temp()
        src.add(2, f"{state} = states[{int(i)}][{int(aggregate.part)}]")
        value = _result_expr(src, aggregate.fn, state)
        type_, ttl = src.const(aggregate.type), src.const(aggregate.ttl)
        src.add(2, f"append(NEW({feature_value}, (names[{int(i)}], {value}, {type_}, {ttl})))")
    src.add(1, f"{dirty}.clear()")
    drain: Callable[[list[Any]], None] = src.build("drain", label, hoist=True)
    return drain
