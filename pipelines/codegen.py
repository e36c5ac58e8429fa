"""Compiling specs to Python functions: the hot path of the engine, without interpretation.

An event crosses a device's pipelines in a few microseconds only if nothing on its way is
interpreted: no loop over a list of operator objects, no call per predicate atom, no
call per aggregate. So the engine turns what a spec describes into Python source, once,
when it is built, and ``exec``\\ s it: a predicate becomes one boolean expression, all the
steps of a pattern set that no index can narrow become one function, and all the
aggregates of a key become straight-line code in one ``feed`` function per group.

**Safety.** No value from a spec ever enters the generated text. Attribute names,
constants, thresholds and window sizes are bound as names of the function's namespace
(``C0``, ``C1``, ...); the text holds only those names, our own integers, and fixed
templates. A spec can change which templates are chosen and what the names hold, never
what the code says. The generated source of any function is kept in ``__source__`` of
its namespace for debugging.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from pipelines.predicates import Atom

_NAME = re.compile(r"\b[A-Za-z_]\w*\b")
NUM = frozenset((int, float))
# The types an ``is`` chain (see Source.of_type) names, as names of every namespace.
_TYPE_NAMES = {str: "T_STR", int: "T_INT", float: "T_FLOAT", bool: "T_BOOL", type(None): "T_NONE"}
SCALAR_KEYS = frozenset((str, int, float))
HASHABLE = frozenset((str, int, float, bool))


class Source:
    """Lines of Python source and the namespace of the constants they name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {
            "NUM": NUM,
            "SCALAR_KEYS": SCALAR_KEYS,
            "HASHABLE": HASHABLE,
            "NEW": tuple.__new__,  # a named tuple without its Python-level __new__
            # Builtins as names of the namespace: a hoisting function reads them as locals.
            "type": type,
            "len": len,
            "tuple": tuple,
            **{name: kind for kind, name in _TYPE_NAMES.items()},
        }
        self._count = 0
        self.offset = 0  # added to every line's indent (a body inlined deeper)
        # Locals computed once per function, by what they hold (see ``_floor``).
        self.shared: dict[Any, Any] = {}
        # Attributes of ``a`` read once into a local, for the lines after that read.
        self.reads: dict[str, str] = {}

    def const(self, value: Any) -> str:
        """A fresh name bound to ``value`` in the namespace."""
        name = f"C{self._count}"
        self._count += 1
        self.ns[name] = value
        return name

    def get(self, attr: str) -> str:
        """An expression for the value of ``attr`` in the attrs dict ``a`` (None when
        missing): the local it was read into, if it was (see ``reads``)."""
        local = self.reads.get(attr)
        return f"a.get({self.const(attr)})" if local is None else local

    def of_type(self, value: str, kinds: Sequence[type]) -> str:
        """An expression: the type of ``value`` (evaluated once) is exactly one of
        ``kinds``, the likeliest first. Cheaper than ``type(v) in SET``: an ``is`` per
        kind tried, against hashing the type for a set."""
        t = self.temp()
        first, *rest = (_TYPE_NAMES[kind] for kind in kinds)
        return (
            "("
            + " or ".join([f"({t} := type({value})) is {first}"] + [f"{t} is {n}" for n in rest])
            + ")"
        )

    def temp(self) -> str:
        """A fresh local variable name."""
        self._count += 1
        return f"_t{self._count}"

    def add(self, indent: int, text: str) -> None:
        self.lines.append("    " * (indent + self.offset) + text)

    def build(self, name: str, label: str, *, hoist: bool = False) -> Any:
        """Execute the source and return the function ``name`` it defines (its ``def``
        the first line). ``hoist``: the namespace's names the body reads become locals,
        unpacked from one tuple on entry (a fast local instead of a global per use: for
        a function that loops, such as the batch path, not one called per event)."""
        lines = self.lines
        if hoist:
            body = "\n".join(lines[1:])
            used = sorted(set(_NAME.findall(body)) & self.ns.keys())
            if used:
                self.ns["__hoisted__"] = tuple(self.ns[n] for n in used)
                lines = [lines[0], f"    {', '.join(used)}, = __hoisted__", *lines[1:]]
        text = "\n".join(lines) + "\n"
        self.ns["__source__"] = text
        exec(compile(text, f"<pipelines {label}>", "exec"), self.ns)  # noqa: S102  # see module docstring
        return self.ns[name]


def _equals(src: Source, first: str, v: str, target: Any) -> str:
    """An expression: a value equals ``target`` by JSON equality. ``first`` is the text
    that reads the value the first time (it may assign ``v``), ``v`` reads it after."""
    if target is None:
        return f"{first} is None"
    if isinstance(target, bool):
        return f"{first} is {'True' if target else 'False'}"
    c = src.const(target)
    if isinstance(target, str):
        return f"{first} == {c}"
    return f"({src.of_type(first, (float, int))} and {v} == {c})"


def atom_expr(src: Source, atom: Atom) -> str:
    """One atom as an expression over the attrs dict ``a``; never raises."""
    v = src.temp()
    get = f"({v} := {src.get(atom.attr)})"
    op, t = atom.op, atom.value
    if op == "eq":
        return _equals(src, get, v, t)
    if op == "ne":
        return f"not {_equals(src, get, v, t)}"
    if op in ("lt", "lte", "gt", "gte"):
        symbol = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
        return f"({src.of_type(get, (float, int))} and {v} {symbol} {src.const(t)})"
    if op in ("in", "not_in"):
        parts = []
        strings = frozenset(x for x in t if isinstance(x, str))
        numbers = frozenset(x for x in t if isinstance(x, int | float) and not isinstance(x, bool))
        if strings:
            parts.append(f"(type(FIRST) is str and {v} in {src.const(strings)})")
        if numbers:
            parts.append(f"({src.of_type('FIRST', (float, int))} and {v} in {src.const(numbers)})")
        for special in (True, False, None):
            if any(x is special for x in t):
                parts.append(f"FIRST is {special}")
        body = " or ".join(parts).replace("FIRST", get, 1).replace("FIRST", v)
        return f"({body})" if op == "in" else f"not ({body})"
    if op == "contains":
        x = src.temp()
        element = _equals(src, x, x, t)
        scalar = _equals(src, v, v, t)
        return f"(any({element} for {x} in {v}) if type({get}) is list else {scalar})"
    assert op == "exists"
    return f"{src.get(atom.attr)} is not None" if t else f"{src.get(atom.attr)} is None"


def where_expr(src: Source, atoms: tuple[Atom, ...]) -> str | None:
    """All of ``atoms`` as one expression over ``a`` (None when there are none)."""
    if not atoms:
        return None
    return " and ".join(f"({atom_expr(src, atom)})" for atom in atoms)


def compile_check(
    atoms: tuple[Atom, ...], label: str = "where"
) -> Callable[[dict[str, Any]], bool] | None:
    """A function of the attrs dict: whether every atom holds (None: no atoms)."""
    src = Source()
    expr = where_expr(src, atoms)
    if expr is None:
        return None
    src.add(0, "def check(a):")
    src.add(1, f"return bool({expr})")
    check: Callable[[dict[str, Any]], bool] = src.build("check", label)
    return check


def _add_lines(src: Source, fn: Any, attr: str | None, states: Sequence[str], indent: int) -> None:
    """Lines that add the event (attrs ``a``) to each aggregate state of ``states`` (a
    sliding window's pane and running total take the same event: one test for both)."""
    name = fn.name
    if name == "count":
        if attr is not None:
            src.add(indent, f"if {src.get(attr)} is not None:")
            indent += 1
        for state in states:
            src.add(indent, f"{state}[0] += 1")
        return
    assert attr is not None  # validated: the functions but count read an attribute
    v = src.temp()
    get = f"({v} := {src.get(attr)})"
    if name in ("sum", "mean", "min", "max"):
        v, number = _number(src, attr)
        src.add(indent, f"if {number}:")
    if name in ("sum", "mean"):
        for state in states:
            src.add(indent + 1, f"{state}[0] += {v}")
            if name == "mean":
                src.add(indent + 1, f"{state}[1] += 1")
        return
    if name in ("min", "max"):
        better = "<" if name == "min" else ">"
        for state in states:
            src.add(indent + 1, f"if {state}[0] is None or {v} {better} {state}[0]:")
            src.add(indent + 2, f"{state}[0] = {v}")
        return
    if name == "top_k":
        x = src.temp()
        src.add(indent, f"if type({get}) is list:")
        src.add(indent + 1, f"for {x} in {v}:")
        src.add(indent + 2, f"if {src.of_type(x, (str, int, float, bool))}:")
        for state in states:
            src.add(indent + 3, f"{state}[{x}] = {state}.get({x}, 0) + 1")
        src.add(indent, f"elif {src.of_type(v, (str, int, float, bool))}:")
        for state in states:
            src.add(indent + 1, f"{state}[{v}] = {state}.get({v}, 0) + 1")
        for state in states:
            src.add(indent, f"if len({state}) > {src.const(fn.cap)}:")
            src.add(indent + 1, f"{src.const(fn.trim)}({state})")
        return
    if name == "last_n":
        src.add(indent, f"if {get} is not None:")
        for state in states:
            src.add(indent + 1, f"{state}.append({v})")
        return
    src.add(indent, f"{v} = {src.get(attr)}")
    for state in states:
        src.add(indent, f"{src.const(fn.add)}({state}, {v})")


def _number(src: Source, attr: str) -> tuple[str, str]:
    """Locals holding the value of ``attr`` and whether it is a number, read once per
    feed (by :func:`_numbers`, before any aggregate)."""
    v, number = src.shared[("number", attr)]
    assert isinstance(v, str) and isinstance(number, str)
    return v, number


def _numbers(src: Source, aggregates: Sequence[Any], indent: int) -> None:
    """Lines reading each attribute that numeric aggregates sum up, once."""
    for aggregate in aggregates:
        attr = aggregate.stage.attr
        if (
            aggregate.fn.name in ("sum", "mean", "min", "max")
            and ("number", attr) not in src.shared
        ):
            v, number = src.temp(), src.temp()
            src.shared[("number", attr)] = (v, number)
            src.add(indent, f"{v} = {src.get(attr)}")
            # v == v: NaN is no number (attrs checked by the SDK hold none; uploads may).
            src.add(indent, f"{number} = {src.of_type(v, (float, int))} and {v} == {v}")


def _floor(src: Source, size: float, indent: int) -> str:
    """A local holding ``ts - ts % size``, computed once per feed for each size."""
    key = ("floor", size)
    v = src.shared.get(key)
    if v is None:
        v = src.shared[key] = src.temp()
        src.add(indent, f"{v} = ts - ts % {src.const(size)}")
    assert isinstance(v, str)
    return v


def _update_lines(src: Source, aggregate: Any, slot: str, indent: int) -> None:
    """Lines that update one aggregate's window state ``slot`` with the event (``a``,
    ``ts``); see :mod:`pipelines.windows` for what each window keeps."""
    window = aggregate.stage.window
    fn, attr = aggregate.fn, aggregate.stage.attr
    new = src.const(fn.new)
    kind = "none" if window is None else window.kind
    if kind == "none":
        _add_lines(src, fn, attr, [f"{slot}[0]"], indent)
        return
    if kind == "tumbling":
        # slot: [window start, state]; an event of an older window changes nothing.
        start, state = _floor(src, window.size, indent), src.temp()
        src.add(indent, f"if {start} == {slot}[0]:")
        src.add(indent + 1, f"{state} = {slot}[1]")
        _add_lines(src, fn, attr, [state], indent + 1)
        src.add(indent, f"elif {start} > {slot}[0]:")
        src.add(indent + 1, f"{slot}[0] = {start}")
        src.add(indent + 1, f"{state} = {slot}[1] = {new}()")
        _add_lines(src, fn, attr, [state], indent + 1)
        return
    if kind == "sliding":
        # slot: [latest pane, {pane start: state}, running total of those panes, state of
        # the latest pane or None]. The total takes every add, and is merged afresh from
        # the panes left when some fall out of the window (at most once per slide and
        # key), so the value costs nothing to read; most events fall in the latest pane,
        # held at hand.
        panes, old, state = src.temp(), src.temp(), src.temp()
        size, slide = src.const(window.size), src.const(window.slide)
        pane = _floor(src, window.slide, indent)
        src.add(indent, f"{state} = {slot}[3]")
        src.add(indent, f"if {pane} != {slot}[0] or {state} is None:")
        i = indent + 1
        src.add(i, f"{panes} = {slot}[1]")
        src.add(i, f"if {pane} > {slot}[0]:")
        src.add(i + 1, f"{slot}[0] = {pane}")
        src.add(i + 1, f"{slot}[3] = None")
        src.add(i + 1, f"{old} = [p for p in {panes} if p < {pane} - {size} + {slide}]")
        src.add(i + 1, f"if {old}:")
        src.add(i + 2, f"for {state} in {old}:")
        src.add(i + 3, f"del {panes}[{state}]")
        src.add(i + 2, f"{slot}[2] = {src.const(aggregate.merged)}({panes})")
        src.add(i, f"if {pane} > {slot}[0] - {size}:")
        src.add(i + 1, f"{state} = {panes}.get({pane})")
        src.add(i + 1, f"if {state} is None:")
        src.add(i + 2, f"{state} = {panes}[{pane}] = {new}()")
        src.add(i + 1, f"if {pane} == {slot}[0]:")
        src.add(i + 2, f"{slot}[3] = {state}")
        src.add(i, "else:  # a pane already out of the window")
        src.add(i + 1, f"{state} = None")
        src.add(indent, f"if {state} is not None:")
        total = src.temp()
        src.add(indent + 1, f"{total} = {slot}[2]")
        _add_lines(src, fn, attr, [state, total], indent + 1)
        return
    # slot: [session start, session end, state]. After the end: the session grows, or
    # (past the gap) a new one starts; before it: within the gap of the start, joins.
    gap = src.const(window.gap)
    state = src.temp()
    src.add(indent, f"if ts > {slot}[1]:")
    src.add(indent + 1, f"if ts > {slot}[1] + {gap}:")
    src.add(indent + 2, f"{slot}[0] = {slot}[1] = ts")
    src.add(indent + 2, f"{state} = {slot}[2] = {new}()")
    src.add(indent + 1, "else:")
    src.add(indent + 2, f"{slot}[1] = ts")
    src.add(indent + 2, f"{state} = {slot}[2]")
    _add_lines(src, fn, attr, [state], indent + 1)
    src.add(indent, f"elif ts >= {slot}[0] - {gap}:")
    src.add(indent + 1, f"if ts < {slot}[0]:")
    src.add(indent + 2, f"{slot}[0] = ts")
    src.add(indent + 1, f"{state} = {slot}[2]")
    _add_lines(src, fn, attr, [state], indent + 1)


def _only_type(guards: Sequence[Any]) -> str | None:
    """The one event type that passes every filter of ``guards``, if they name one."""
    types: set[str] | None = None
    for guard in guards:
        if guard.types is not None:
            types = set(guard.types) if types is None else types & set(guard.types)
    return next(iter(types)) if types is not None and len(types) == 1 else None


def compile_feed(
    group: Any, label: str, guards: Sequence[Any] = ()
) -> Callable[[Any, int, list[Any]], None]:
    """The ``feed(ev, seq, out)`` of a :class:`~pipelines.groups.KeyedGroup`: find the
    key, look its state up (or admit it), update every aggregate inline, advance the
    patterns the event touches. ``guards`` (filter stages) are tested first: a walk
    that is only filters in front of one group is that group's guarded feed."""
    src = Source()
    src.add(0, "def feed(ev, seq, out):")
    feed_lines(src, group, guards, "return")
    feed: Callable[[Any, int, list[Any]], None] = src.build("feed", label)
    return feed


def feed_lines(
    src: Source, group: Any, guards: Sequence[Any], leave: str, *, runs: bool = False
) -> None:
    """The body of a group's ``feed`` over ``ev`` (``seq``, ``out``), one level below
    ``src.offset``; ``leave`` ends it early (``return``, or ``continue`` in a batch loop:
    no line of it is inside a loop of its own). ``runs`` (a batch loop): the locals
    ``last_key`` and ``last_slot`` hold the key of the previous event that reached the
    key table and its state list, so a run of events of one key looks it up (and marks
    it changed) once; the loop resets ``last_key`` to ``NOKEY`` whenever anything else
    may have touched the table (a fallback to ``feed``)."""
    keys, dirty = src.const(group.keys), src.const(group.dirty)
    src.add(1, "a = ev.attrs")
    for guard in guards:
        conditions = []
        if guard.types is not None:
            conditions.append(f"ev.type in {src.const(frozenset(guard.types))}")
        expr = where_expr(src, guard.where)
        if expr is not None:
            conditions.append(f"({expr})")
        if conditions:
            src.add(1, f"if not ({' and '.join(conditions)}):")
            src.add(2, leave)
    if group.key_by is None:
        src.add(1, "key = None")
    else:
        src.add(1, f"key = a.get({src.const(group.key_by)})")
        src.add(1, f"if not {src.of_type('key', (str, int, float))}:")
        src.add(2, leave)
    # Every event past here updates the aggregates: what they read, read once (the
    # pattern probe reads the same attributes, often).
    for aggregate in group.aggregates:
        attr = aggregate.stage.attr
        if attr is not None and attr not in src.reads:
            local = src.temp()
            src.add(1, f"{local} = a.get({src.const(attr)})")
            src.reads[attr] = local
    patterns = group.patterns
    naive = patterns is not None and not hasattr(patterns, "probes")
    flag = "matched" if naive else "m"
    if patterns is not None:
        if naive:  # the naive peer: its own match, a list of the patterns touched
            src.add(1, f"matched = {src.const(patterns.match)}(ev)")
        else:  # the shared matcher: the mask of the steps the event matches
            patterns.probe_lines(src, 1, _only_type(guards))
        if not group.aggregates:
            src.add(1, f"if not {flag}:")
            src.add(2, leave)
    if not runs:  # a batch loop has it
        src.add(1, "ts = ev.ts")
    i = 1
    if runs:
        # The key of the previous event: its slot is marked used and changed already
        # (admitting a key, the only thing that clears the mark, resets last_key).
        src.add(1, "if key == last_key:")
        src.add(2, "slot = last_slot")
        src.add(1, "else:")
        i = 2
    src.add(i, f"slot = {keys}.get(key)")
    src.add(i, "if slot is None:")
    inits = ", ".join(f"{src.const(a.init)}(ts)" for a in group.aggregates)
    src.add(i + 1, f"slot = [1, None, [{inits}], None]")
    src.add(i + 1, f"{src.const(group.admit)}(key, slot)")
    if runs:
        # Admitting may take the used mark of any key (this one too): none is cached.
        src.add(i + 1, "last_key = NOKEY")
    src.add(i, "else:")
    src.add(i + 1, "slot[0] = 1")
    if runs:
        src.add(i + 1, "last_key, last_slot = key, slot")
    if group.aggregates:
        # Marked changed before the update: nothing between touches the dirty keys.
        src.add(i, f"{dirty}[key] = None")
    if group.aggregates:
        src.add(1, "states = slot[2]")
        _numbers(src, group.aggregates, 1)
        for n, aggregate in enumerate(group.aggregates):
            state = src.temp()
            src.add(1, f"{state} = states[{int(n)}]")
            _update_lines(src, aggregate, state, 1)
    if patterns is not None:
        src.add(1, f"if {flag}:")
        if naive:  # the naive peer advances each pattern on its own
            src.add(2, "state = slot[1]")
            src.add(2, "if state is None:")
            src.add(3, f"state = slot[1] = {src.const(group.new_pattern_state)}()")
            src.add(2, f"{src.const(patterns.advance)}(matched, ev, seq, key, state, out)")
        else:
            patterns.advance_lines(src, 2)
