"""The shared matcher's hot path, compiled: step masks, and advancing a key's trie.

**Probe.** All the steps one event type can match (those of the type, and those of any
type) become one probe, ``probe(attrs) -> mask`` (inlined into the group's ``feed`` for
up to a few event types): an int with bit ``sid`` set for each step ``sid`` the event
matches. The steps whose atoms are all on one attribute (``rating >= 4.5``,
``rating == 5``) are decided by a *memo* of that attribute's values (at most
``MAX_MEMO`` values each; past that a value is tested afresh), so an event reads one
dict instead of testing them. Other range-only steps are tested inline, each attribute
read and type-checked once. Steps anchored on an attribute value (``eq``/``in``/
``contains``) are looked up: the table of the attribute maps a value to the bits of the
steps that value alone decides, ``(bit, rest bit)`` pairs for steps whose other atoms
are on one attribute (a *rest*: a pseudo-step past the steps' bits, decided by that
attribute's memo) and ``(bit, check)`` pairs for the others. A bit set twice is set
once, so a list attribute holding a value twice needs no dedupe; the rest bits are
cleared before the mask is used.

**Plans.** What an event does to a key's partial matches depends only on its mask, so
each mask is turned once into a *plan* (:func:`plan`): the negations its steps cancel and
the trie transitions its steps lead into, each node before its parent. A node reads its
parent's partial match as it was before the event; with children first, every parent is
read before this event rewrites it, so transitions write straight into the key's table
with no scratch dict. Among the orders that allow, the plan takes the one closest to
pattern order and notes whether its firings come out in pattern order (the order the
naive peer fires in), so that most events need no sorting. Plans are cached per mask
(``PatternSet.plans``, at most ``MAX_PLANS`` masks; a full cache is cleared and
refilled, which changes no result, only the cost). Cost per event: one probe, one dict
lookup, then only the transitions that can fire; the number of patterns whose steps the
event misses does not enter.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

from pipelines.codegen import SCALAR_KEYS, Source, atom_expr
from pipelines.predicates import Atom

MAX_PLANS = 4096
MAX_MEMO = 1024
# Values whose steps' outcome a memo may keep: equal ones (1 and 1.0) match the same steps.
MEMO_KEYS = frozenset((str, int, float, type(None)))
_RANGES = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}

Check = Callable[[dict[str, Any]], bool]
# value -> (bits decided by the value alone, ((bit, rest bit it needs too), ...),
#           ((bit, check of the other atoms), ...))
Hit = tuple[int, tuple[tuple[int, int], ...], tuple[tuple[int, Check], ...]]
Table = dict[Any, Hit]
# (node id, parent id or -1, patterns completed there, negations waiting there)
Transition = tuple[int, int, tuple[int, ...], tuple[int, ...]]
# (negations cancelled, transitions, whether the firings they can make come out in
# pattern order already)
Plan = tuple[tuple[int, ...], tuple[Transition, ...], bool]


def compile_probe(
    plain: Sequence[tuple[int, tuple[Atom, ...]]],
    scalar: dict[str, Table],
    contains: dict[str, Table],
    label: str,
    *,
    memo: bool = True,
    keep: int | None = None,
) -> Callable[[dict[str, Any]], int]:
    """``probe(a)``: the mask of the steps the attrs ``a`` match: ``plain`` steps tested
    inline, anchored ones looked up in their ``scalar`` (``eq``/``in``) or ``contains``
    tables, the steps on one attribute through its memo (see the module docstring)."""
    src = Source()
    src.add(0, "def probe(a):")
    probe_lines(src, plain, scalar, contains, label, 1, memo=memo, keep=keep)
    src.add(1, "return m")
    probe: Callable[[dict[str, Any]], int] = src.build("probe", label)
    return probe


def probe_lines(
    src: Source,
    plain: Sequence[tuple[int, tuple[Atom, ...]]],
    scalar: dict[str, Table],
    contains: dict[str, Table],
    label: str,
    indent: int,
    *,
    memo: bool = True,
    keep: int | None = None,
) -> None:
    """The body of :func:`compile_probe` at ``indent``: lines that leave the mask of the
    attrs ``a`` in ``m`` (a group's ``feed`` inlines them, one call fewer per event)."""
    i = indent
    src.add(i, "m = 0")
    if memo:
        plain, scalar = _memoized(src, plain, scalar, label, i)
    # Range steps often test one attribute many times (rating >= 4.5, rating <= 1, ...):
    # read it, and check it is a number, once.
    numeric: dict[str, tuple[str, str]] = {}
    for _, atoms in plain:
        for atom in atoms:
            if atom.op in _RANGES and atom.attr not in numeric:
                v, is_number = src.temp(), src.temp()
                numeric[atom.attr] = (v, is_number)
                src.add(i, f"{v} = {src.get(atom.attr)}")
                src.add(i, f"{is_number} = {src.of_type(v, (float, int))}")
    for sid, atoms in plain:
        bit = src.const(1 << sid)
        parts = []
        for atom in atoms:
            if atom.op in _RANGES:
                v, is_number = numeric[atom.attr]
                parts.append(f"({is_number} and {v} {_RANGES[atom.op]} {src.const(atom.value)})")
            else:
                parts.append(f"({atom_expr(src, atom)})")
        if parts:
            src.add(i, f"if {' and '.join(parts)}:")
            src.add(i + 1, f"m |= {bit}")
        else:
            src.add(i, f"m |= {bit}")

    def hits(table: Table, value: str, indent: int) -> None:
        h = src.temp()
        src.add(indent, f"{h} = {src.const(table)}.get({value})")
        src.add(indent, f"if {h} is not None:")
        hit_lines(table, h, indent + 1)

    def hit_lines(table: Table, h: str, indent: int) -> None:
        src.add(indent, f"m |= {h}[0]")
        # Guarded by the tuple's truth: most values need nothing more, and a loop over
        # an empty tuple still makes an iterator.
        if any(needs for _, needs, _ in table.values()):
            src.add(indent, f"if {h}[1]:")
            src.add(indent + 1, f"for bit, need in {h}[1]:")
            src.add(indent + 2, "if m & need:")
            src.add(indent + 3, "m |= bit")
        if any(checks for _, _, checks in table.values()):
            src.add(indent, f"if {h}[2]:")
            src.add(indent + 1, f"for bit, check in {h}[2]:")
            src.add(indent + 2, "if check(a):")
            src.add(indent + 3, "m |= bit")

    for attr, table in scalar.items():
        v = src.temp()
        # Not a bool: True == 1 would find the steps anchored on 1.
        src.add(i, f"{v} = {src.get(attr)}")
        src.add(i, f"if {src.of_type(v, (str, int, float))}:")
        hits(table, v, i + 1)
    for attr, table in contains.items():
        # A list's hits are those of its values together (see list_hits), looked up as
        # one tuple in the memo of the lists of strings seen.
        v, h = src.temp(), src.temp()
        lists: dict[tuple[str, ...], Hit] = {}
        src.add(i, f"{v} = {src.get(attr)}")
        src.add(i, f"if type({v}) is list:")
        src.add(i + 1, "try:")
        src.add(i + 2, f"{h} = {src.const(lists)}.get(tuple({v}))")
        src.add(i + 1, "except TypeError:  # an unhashable value: never remembered")
        src.add(i + 2, f"{h} = None")
        src.add(i + 1, f"if {h} is None:")
        src.add(i + 2, f"{h} = {src.const(list_hits(table, lists))}({v})")
        hit_lines(table, h, i + 1)
        src.add(i, f"elif {src.of_type(v, (str, int, float))}:")
        hits(table, v, i + 1)
    # The rest bits (pseudo-steps) were only needed above: the mask names steps only.
    if keep is not None:
        src.add(i, f"m &= {src.const(keep)}")


def list_hits(table: Table, memo: dict[tuple[str, ...], Hit]) -> Callable[[list[Any]], Hit]:
    """``hits(values)``: the hit of a list attribute for a ``contains`` table, the hits
    of its values (str, int or float; others find nothing) together: their bits, the
    ``(bits, rest bit)`` pairs of any of them, one per rest bit, and their ``(bit,
    check)`` pairs, once each (a rest bit is never a step's bit, so the order they are
    tested in changes nothing).
    A list of strings is remembered in ``memo`` (at most ``MAX_MEMO`` lists): a list
    equal to it, value by value, has the same hits (numbers are never remembered:
    ``True == 1``, and a boolean finds no step)."""

    def hits(values: list[Any]) -> Hit:
        bits = 0
        needs: dict[int, int] = {}  # rest bit -> the bits it lets through
        checks: dict[tuple[int, Check], None] = {}
        strings = True
        for x in values:
            if type(x) in SCALAR_KEYS:
                hit = table.get(x)
                if hit is not None:
                    bits |= hit[0]
                    for bit, need in hit[1]:
                        needs[need] = needs.get(need, 0) | bit
                    checks.update(dict.fromkeys(hit[2]))
            if type(x) is not str:
                strings = False
        made = (bits, tuple((bit, need) for need, bit in needs.items()), tuple(checks))
        if strings and len(memo) < MAX_MEMO:
            memo[tuple(values)] = made
        return made

    return hits


def plan(
    mask: int,
    edges: Sequence[tuple[tuple[Transition, ...], tuple[int, ...]]],
    nodes: int,
) -> Plan:
    """The plan of ``mask``: the negations its steps cancel (pattern ids, ascending), the
    transitions its steps lead into (``edges[sid]``), each node before its parent
    (:func:`_child_first`), and whether the patterns those transitions complete come
    in pattern order (then one event's firings need no sorting)."""
    cancels: list[int] = []
    transitions: list[Transition] = []
    while mask:
        low = mask & -mask  # the lowest bit set: step ids in ascending order
        into, cancelled = edges[low.bit_length() - 1]
        transitions.extend(into)
        cancels.extend(cancelled)
        mask ^= low
    transitions = _child_first(transitions, nodes)
    completed = [p for t in transitions for p in t[2]]
    ordered = completed == sorted(completed)
    return tuple(sorted(cancels)), tuple(transitions), ordered


def _child_first(transitions: list[Transition], nodes: int) -> list[Transition]:
    """``transitions`` ordered so that each node comes before its parent (the parent's
    partial match is read before this event rewrites it), and otherwise by the first
    pattern completed there, then node id: as close to pattern order as the first rule
    allows, so that most events' firings need no sorting."""

    def rank(t: Transition) -> tuple[int, int]:
        return (t[2][0] if t[2] else nodes + len(transitions), t[0])

    by_node = {t[0]: t for t in transitions}
    waiting = {nid: 0 for nid in by_node}  # children in the plan not yet placed
    for t in transitions:
        if t[1] in waiting:
            waiting[t[1]] += 1
    if not any(waiting.values()):  # no node with its parent: rank alone orders them
        return sorted(transitions, key=rank)
    ready = [(rank(t), t[0]) for t in transitions if not waiting[t[0]]]
    heapq.heapify(ready)
    ordered: list[Transition] = []
    while ready:
        _, nid = heapq.heappop(ready)
        t = by_node[nid]
        ordered.append(t)
        parent = t[1]
        if parent in waiting:
            waiting[parent] -= 1
            if not waiting[parent]:
                heapq.heappush(ready, (rank(by_node[parent]), parent))
    return ordered


def advance_lines(src: Source, patterns: Any, indent: int) -> None:
    """Lines of a group's ``feed`` that advance the key's partial matches by the mask
    ``m`` (not 0) of the event ``ev`` (``ts``, ``seq``; key ``key``, state list
    ``slot``): cancels first, then each transition of the mask's plan, deepest first."""
    plans, make = src.const(patterns.plans), src.const(patterns.plan)
    cancel, wait = src.const(patterns.cancel), src.const(patterns.wait)
    withins, names = src.const(patterns.withins), src.const(patterns.names)
    in_order, stats = src.const(patterns.in_order), src.const(patterns.stats)
    firing = src.const(patterns.firing)
    new_state = src.const(patterns.new_state)
    i = indent
    src.add(i, f"plan = {plans}.get(m)")
    src.add(i, "if plan is None:")
    src.add(i + 1, f"plan = {make}(m)")
    src.add(i, "cancels, transitions, ordered = plan")
    src.add(i, "state = slot[1]")
    src.add(i, "if cancels and state is not None and state.pending:")
    src.add(i + 1, "pending = state.pending")
    src.add(i + 1, "for p in cancels:")
    src.add(i + 2, f"{cancel}(p, ev, pending)")
    src.add(i, "if transitions:")
    src.add(i + 1, "if state is None:")
    src.add(i + 2, f"state = slot[1] = {new_state}()")
    src.add(i + 1, "chains = state.chains")
    src.add(i + 1, "start = len(out)")
    src.add(i + 1, "for nid, parent, fires, waits in transitions:")
    src.add(i + 2, "if parent < 0:")
    src.add(i + 3, "chain = (seq, ts, ev)")
    src.add(i + 2, "else:")
    src.add(i + 3, "prev = chains[parent]")
    src.add(i + 3, "if prev is None or prev[-1].ts > ts:")
    src.add(i + 4, "continue")
    src.add(i + 3, "chain = prev + (ev,)")
    src.add(i + 2, "chains[nid] = chain")
    src.add(i + 2, "if fires:")
    # PatternSet.complete, inline: within T, and after the pattern's last firing.
    src.add(i + 3, "span = ts - chain[1]")
    src.add(i + 3, "fired = state.fired")
    src.add(i + 3, "for p in fires:")
    src.add(i + 4, f"if span <= {withins}[p] and chain[0] > fired[p]:")
    src.add(i + 5, "fired[p] = seq")
    src.add(i + 5, f"out.append(NEW({firing}, ({names}[p], key, chain[2:])))")
    src.add(i + 5, f"{stats}.firings += 1")
    src.add(i + 2, "if waits:")
    src.add(i + 3, "for p in waits:")
    src.add(i + 4, f"{wait}(p, chain, ev, state, key)")
    src.add(i + 1, "if not ordered and len(out) - start > 1:")
    src.add(i + 2, f"{in_order}(out, start)")


def _memoized(
    src: Source,
    plain: Sequence[tuple[int, tuple[Atom, ...]]],
    scalar: dict[str, Table],
    label: str,
    i: int,
) -> tuple[list[tuple[int, tuple[Atom, ...]]], dict[str, Table]]:
    """Lines that set the bits of the steps decided by one attribute through a memo of
    that attribute's values; returns the plain steps and scalar tables left to test."""
    single: dict[str, list[tuple[int, tuple[Atom, ...]]]] = {}
    rest: list[tuple[int, tuple[Atom, ...]]] = []
    for sid, atoms in plain:
        attrs = {atom.attr for atom in atoms}
        if len(attrs) == 1:
            single.setdefault(attrs.pop(), []).append((sid, atoms))
        else:
            rest.append((sid, atoms))
    scalar = dict(scalar)
    for attr, steps in single.items():
        # The attribute's table joins the memo when its values alone decide its steps.
        table = scalar.get(attr)
        tables = {}
        if table is not None and not any(n or c for _, n, c in table.values()):
            tables[attr] = scalar.pop(attr)
        bits = compile_probe(steps, tables, {}, label, memo=False)
        key, v, b, memo = src.const(attr), src.temp(), src.temp(), src.const({})
        src.add(i, f"{v} = {src.get(attr)}")
        src.add(i, f"if {src.of_type(v, (float, int, str, type(None)))}:")
        src.add(i + 1, f"{b} = {memo}.get({v})")
        src.add(i + 1, f"if {b} is None:")
        src.add(i + 2, f"{b} = {src.const(bits)}({{{key}: {v}}})")
        src.add(i + 2, f"if len({memo}) < {src.const(MAX_MEMO)} and {v} == {v}:  # NaN: no key")
        src.add(i + 3, f"{memo}[{v}] = {b}")
        src.add(i + 1, f"m |= {b}")
        src.add(i, "else:")
        src.add(i + 1, f"m |= {src.const(bits)}({{{key}: {v}}})")
    return rest, scalar
