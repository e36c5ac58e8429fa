"""Aggregate functions: what a window (or a key's whole history) sums up into a feature.

Each function is four small operations on a state: ``new``, ``add`` (one attribute value),
``merge`` (two states, for sliding windows built from panes) and ``result`` (the feature
value, with a fixed type tag). States are plain lists, sets, dicts and deques: the engine
calls ``add`` once per event and sink, so it stays a couple of bytecodes long.

============ ========================================= ==================== ==========
fn           reads                                     result               type
============ ========================================= ==================== ==========
``count``    every event (with ``attr``: non-null)     events counted       ``int``
``sum``      numbers (others skipped)                  their sum            ``float``
``mean``     numbers                                   their mean or null   ``float``
``min``      numbers                                   smallest or null     ``float``
``max``      numbers                                   largest or null      ``float``
``distinct`` scalars; each element of a list           how many different   ``int``
``last_n``   any non-null value                        the last ``n``,      ``list``
                                                       oldest first
``top_k``    scalars; each element of a list           ``k`` most frequent  ``list``
                                                       as ``[value, count]``
============ ========================================= ==================== ==========

Caps (``Limits.max_distinct``): a ``distinct`` set stops growing at the cap (the count is
then a lower bound); a ``top_k`` counter past the cap keeps the most frequent half (ties
by value) and counts on, so its counts become lower bounds (the Space-Saving idea, kept
simple). ``top_k`` orders by count; equal counts stay in the order their values were
first counted in the window (trimming keeps the most frequent, ties by value, numbers
first), so device and cloud agree on ties.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

State = Any


@dataclass(frozen=True, slots=True)
class Function:
    """One aggregate function: its operations and its result's type tag."""

    name: str
    type: str
    new: Callable[[], State]
    add: Callable[[State, Any], None]
    merge: Callable[[State, State], None]
    result: Callable[[State], Any]
    cap: int = 0
    trim: Callable[[State], None] | None = None


def _is_number(v: Any) -> bool:
    return (type(v) is float or type(v) is int) and v == v  # NaN


def _hashable(v: Any) -> bool:
    return v is not None and type(v) in (str, int, float, bool)


def _count(attr: str | None) -> Function:
    def add(s: list[int], v: Any) -> None:
        if attr is None or v is not None:
            s[0] += 1

    def merge(a: list[int], b: list[int]) -> None:
        a[0] += b[0]

    return Function("count", "int", lambda: [0], add, merge, itemgetter(0))


def _sum() -> Function:
    def add(s: list[float], v: Any) -> None:
        if _is_number(v):
            s[0] += v

    def merge(a: list[float], b: list[float]) -> None:
        a[0] += b[0]

    return Function("sum", "float", lambda: [0.0], add, merge, lambda s: float(s[0]))


def _mean() -> Function:
    def add(s: list[float], v: Any) -> None:
        if _is_number(v):
            s[0] += v
            s[1] += 1

    def merge(a: list[float], b: list[float]) -> None:
        a[0] += b[0]
        a[1] += b[1]

    return Function(
        "mean", "float", lambda: [0.0, 0], add, merge, lambda s: s[0] / s[1] if s[1] else None
    )


def _extreme(name: str, better: Callable[[float, float], bool]) -> Function:
    def add(s: list[Any], v: Any) -> None:
        if _is_number(v) and (s[0] is None or better(v, s[0])):
            s[0] = v

    def merge(a: list[Any], b: list[Any]) -> None:
        add(a, b[0])

    def result(s: list[Any]) -> float | None:
        return None if s[0] is None else float(s[0])

    return Function(name, "float", lambda: [None], add, merge, result)


def _distinct(cap: int) -> Function:
    def add(s: set[Any], v: Any) -> None:
        if type(v) is list:
            for x in v:
                if _hashable(x) and len(s) < cap:
                    s.add(x)
        elif _hashable(v) and len(s) < cap:
            s.add(v)

    def merge(a: set[Any], b: set[Any]) -> None:
        for x in b:
            if len(a) >= cap:
                break
            a.add(x)

    return Function("distinct", "int", set, add, merge, len)


def _last_n(n: int) -> Function:
    def add(s: deque[Any], v: Any) -> None:
        if v is not None:
            s.append(v)

    def merge(a: deque[Any], b: deque[Any]) -> None:
        a.extend(b)

    return Function("last_n", "list", lambda: deque(maxlen=n), add, merge, list)


def _order(item: tuple[Any, int]) -> tuple[int, int, Any]:
    value, count = item
    # Numbers (and booleans) before strings, so mixed values still sort the same everywhere.
    return (-count, 1 if isinstance(value, str) else 0, value)


def _top_k(k: int, cap: int) -> Function:
    def trim(s: dict[Any, int]) -> None:
        kept = sorted(s.items(), key=_order)[: max(k, cap // 2)]
        s.clear()
        s.update(kept)

    def add(s: dict[Any, int], v: Any) -> None:
        if type(v) is list:
            for x in v:
                if _hashable(x):
                    s[x] = s.get(x, 0) + 1
        elif _hashable(v):
            s[v] = s.get(v, 0) + 1
        else:
            return
        if len(s) > cap:
            trim(s)

    def merge(a: dict[Any, int], b: dict[Any, int]) -> None:
        for x, c in b.items():
            a[x] = a.get(x, 0) + c
        if len(a) > cap:
            trim(a)

    def result(s: dict[Any, int]) -> list[list[Any]]:
        # A stable sort by count alone, with a C-level key: ties stay in the order the
        # values were first counted (the same on every replica of the same events).
        return [[value, s[value]] for value in sorted(s, key=s.__getitem__, reverse=True)[:k]]

    return Function("top_k", "list", dict, add, merge, result, cap, trim)


def function(fn: str, *, attr: str | None, n: int, k: int, max_distinct: int) -> Function:
    """The :class:`Function` ``fn`` of a validated aggregate stage."""
    if fn == "count":
        return _count(attr)
    if fn == "sum":
        return _sum()
    if fn == "mean":
        return _mean()
    if fn == "min":
        return _extreme("min", lambda v, best: v < best)
    if fn == "max":
        return _extreme("max", lambda v, best: v > best)
    if fn == "distinct":
        return _distinct(max_distinct)
    if fn == "last_n":
        return _last_n(n)
    if fn == "top_k":
        return _top_k(k, max_distinct)
    raise ValueError(f"unknown aggregate function {fn!r}")
