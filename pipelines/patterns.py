"""Triggers on event sequences: every pattern at one point of the stream, matched together.

Three shapes, all ``within`` a duration of event time:

- **sequence** ``steps: [A, B, ...]``: A followed by B (and so on), each step an event type
  and/or a ``where``; fires on the event that completes it, with the matched events;
- **repetition** ``repeat: {times: 3, step: A}``: the sequence A, A, A;
- **negation** ``steps: [A], not: B``: A not followed by B within T. It fires once event
  time (the watermark: latest event time minus the allowed lateness) passes T after the
  last A with no B in between, with the A events. Another A before then restarts the
  wait from that A (the latest one is reported); a B cancels it.

**Semantics.** "Followed by" is arrival order, with event times that do not go backwards
(an event older than the previous matched one does not extend a match); events in
between that match no step are skipped. Each pattern node keeps, per key, the one partial
match with the *latest* start, which is the one most likely to complete within T: for
events in time order the start of the best partial match only moves forward, so
replacing it on every extension never loses a match that could still fire (an event out
of time order may, by design: it does not extend what came before it). A match fires if
its first and last events lie within T, and only if it starts after the last event of the pattern's
previous firing for that key, so one event never takes part in two firings of the same
pattern. The result is deterministic: the same events in the same order give the same
firings on a device and in the cloud.

**Sharing (why cost does not grow with the number of patterns).** Steps are
deduplicated across patterns, and patterns are compiled into a trie of step prefixes:
``[A, B]`` and ``[A, C]`` share the node ``A``. Steps are indexed by event type and by
one anchoring attribute value (an ``eq``, ``in`` or ``contains`` in their ``where``), so
an event looks up only the steps it can match (a hash probe per anchored attribute), and
touches only the trie nodes those steps lead into. Patterns whose next step cannot match
an event cost it nothing; the cost grows with the matching work (steps matched, partial
matches extended, firings), not with the number of patterns. Steps that no index can
narrow (ranges only) are tested together in one compiled probe per event type, those on
one attribute through a memo of its values; an event's matched steps are one int mask,
and what the mask does to a key's partial matches is planned once per mask and cached
(:mod:`pipelines.probes`). :class:`~pipelines.naive.NaivePatternSet` is the peer with
the same semantics and no sharing: it tests every step of every pattern on every event.

**State.** Per key: one partial match per trie node, the last firing per pattern, and
the pending negations, kept in the key table of the :class:`~pipelines.groups.KeyedGroup`
(bounded by ``Limits.max_keys``, second-chance eviction). Negation deadlines wait in one
heap per pattern set, bounded by ``Limits.max_pending``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from pipelines.codegen import Source, compile_check
from pipelines.events import Event
from pipelines.limits import Limits, Stats
from pipelines.predicates import Atom, anchor
from pipelines.probes import (
    MAX_PLANS,
    Plan,
    Table,
    advance_lines,
    compile_probe,
    plan,
    probe_lines,
)
from pipelines.spec import Step, TriggerStage

Check = Callable[[dict[str, Any]], bool]
INLINE_TYPES = 3  # a feed inlines the probes of at most this many event types
# What an anchored step needs besides its anchor: nothing, (bit position, atoms on one
# attribute) tested as a pseudo-step of the probe, or a compiled check of other atoms.
Rest = tuple[int, tuple[Atom, ...]] | Check | None
# A partial match, flat: (seq of its first event, ts of its first event, *its events).
Chain = tuple[Any, ...]


class Firing(NamedTuple):
    """A trigger that fired: its name, the key it fired for (None: unkeyed) and the
    matched events, in the order they matched. A named tuple, as
    :class:`~pipelines.windows.FeatureValue`: immutable, and cheap to make on the hot
    path (``tuple.__new__``)."""

    trigger: str
    key: Any
    events: tuple[Event, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "key": self.key,
            "events": [e.to_json() for e in self.events],
        }


@dataclass(slots=True)
class _Pattern:
    name: str
    within: float
    negated: int | None  # the step id of `not`, for a negation


class _Node:
    __slots__ = ("depth", "fires", "id", "parent", "waits")

    def __init__(self, id: int, depth: int, parent: int) -> None:
        self.id = id
        self.depth = depth
        self.parent = parent
        self.fires: list[int] = []  # patterns completed at this node
        self.waits: list[int] = []  # negations whose positive steps end at this node


class PatternState:
    """One key's state in a pattern set: a partial match per trie node (per pattern in
    the naive set), the seq of the last firing per pattern, the pending negations. The
    shared set gives ``chains`` and ``fired`` as lists by node and pattern id (None and
    -1: nothing yet), read by index on its hot path; the naive set, dicts."""

    __slots__ = ("chains", "fired", "pending")

    def __init__(self, chains: Any = None, fired: Any = None) -> None:
        self.chains: Any = {} if chains is None else chains
        self.fired: Any = {} if fired is None else fired
        self.pending: dict[int, tuple[float, int, Chain]] = {}  # pattern -> (deadline, id, chain)


def _by_need(pairs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """``(bits, rest bit)`` pairs with the bits of one rest bit together: one test each."""
    merged: dict[int, int] = {}
    for bits, need in pairs:
        merged[need] = merged.get(need, 0) | bits
    return tuple((bits, need) for need, bits in merged.items())


def _bits(sids: Iterable[int]) -> int:
    mask = 0
    for sid in sids:
        mask |= 1 << sid
    return mask


class _Probe:
    """The steps one event type (or any type) can match: ``plain`` ones, tested inline,
    and those anchored on an attribute value in ``scalar`` (``eq``/``in``) or
    ``contains`` tables, each with what else it needs: nothing, a *rest* bit (its other
    atoms, all on one attribute, tested as a pseudo-step of the probe: bit ``pos``
    past the steps' bits) or a compiled check. Compiled into one ``probe(attrs) ->
    mask`` function (:func:`pipelines.probes.compile_probe`)."""

    __slots__ = ("contains", "plain", "rests", "scalar")

    def __init__(self) -> None:
        self.plain: list[tuple[int, tuple[Atom, ...]]] = []
        self.rests: set[int] = set()
        self.scalar: dict[str, dict[Any, list[tuple[int, Rest]]]] = {}
        self.contains: dict[str, dict[Any, list[tuple[int, Rest]]]] = {}

    def add(self, sid: int, where: tuple[Atom, ...], anchored: Atom | None, rest: Rest) -> None:
        if anchored is None:
            self.plain.append((sid, where))
            return
        if isinstance(rest, tuple) and rest[0] not in self.rests:
            self.rests.add(rest[0])
            self.plain.append(rest)
        tables = self.contains if anchored.op == "contains" else self.scalar
        table = tables.setdefault(anchored.attr, {})
        values = anchored.value if anchored.op == "in" else (anchored.value,)
        for value in values:
            table.setdefault(value, []).append((sid, rest))

    def compile(self, steps: int) -> Callable[[dict[str, Any]], int] | None:
        """The probe; ``steps`` is the number of steps (the bits past them are rests)."""
        if not (self.plain or self.scalar or self.contains):
            return None
        return compile_probe(*self._args(steps), "steps", keep=self._keep(steps))

    def lines(self, src: Source, steps: int, indent: int) -> None:
        """The probe inline: lines leaving the mask in ``m``."""
        probe_lines(src, *self._args(steps), "steps", indent, keep=self._keep(steps))

    def _keep(self, steps: int) -> int | None:
        return (1 << steps) - 1 if self.rests else None

    def _args(
        self, steps: int
    ) -> tuple[list[tuple[int, tuple[Atom, ...]]], dict[str, Table], dict[str, Table]]:
        def packed(tables: dict[str, dict[Any, list[tuple[int, Rest]]]]) -> dict[str, Table]:
            return {
                attr: {
                    value: (
                        _bits(sid for sid, rest in hits if rest is None),
                        _by_need((1 << sid, 1 << r[0]) for sid, r in hits if isinstance(r, tuple)),
                        tuple((1 << sid, r) for sid, r in hits if callable(r)),
                    )
                    for value, hits in table.items()
                }
                for attr, table in tables.items()
            }

        return self.plain, packed(self.scalar), packed(self.contains)


class MatcherBase:
    """What both matchers share: patterns, negation deadlines, firing. The per-key states
    live in the :class:`~pipelines.groups.KeyedGroup` that owns the set: ``keys`` maps a
    key to the group's state list, whose item 1 is the key's :class:`PatternState`."""

    def __init__(self, triggers: list[TriggerStage], limits: Limits, stats: Stats) -> None:
        if not triggers or len({t.key_by for t in triggers}) != 1:
            raise ValueError("a pattern set holds one or more triggers of one key_by")
        self.key_by = triggers[0].key_by
        self.patterns = [_Pattern(t.name, t.within, None) for t in triggers]
        self.max_pending = limits.max_pending
        self.stats = stats
        self.keys: dict[Any, list[Any]] = {}
        # (deadline, pattern, id, key, id of the key's state): ties fire in pattern order.
        self.deadlines: list[tuple[float, int, int, Any, int]] = []
        self.order = {t.name: p for p, t in enumerate(triggers)}
        self.has_negations = any(t.negated is not None for t in triggers)
        self._ids = itertools.count()

    def _complete(
        self,
        p: int,
        chain: Chain,
        ev: Event,
        seq: int,
        fired: dict[int, int],
        key: Any,
        out: list[Firing],
    ) -> None:
        if ev.ts - chain[1] <= self.patterns[p].within and chain[0] > fired.get(p, -1):
            fired[p] = seq
            out.append(Firing(self.patterns[p].name, key, chain[2:]))
            self.stats.firings += 1

    def _wait(self, p: int, chain: Chain, ev: Event, state: PatternState, key: Any) -> None:
        within = self.patterns[p].within
        if ev.ts - chain[1] > within:
            return
        deadline = ev.ts + within
        ident = next(self._ids)
        state.pending[p] = (deadline, ident, chain)
        heapq.heappush(self.deadlines, (deadline, p, ident, key, id(state)))
        if len(self.deadlines) > self.max_pending:
            self._compact()

    @staticmethod
    def _cancel(p: int, ev: Event, pending: dict[int, Any]) -> None:
        entry = pending.get(p)
        if entry is not None and entry[2][-1].ts <= ev.ts <= entry[0]:
            del pending[p]

    def _compact(self) -> None:
        live = [d for d in self.deadlines if self._live(d) is not None]
        heapq.heapify(live)
        while len(live) > self.max_pending:
            heapq.heappop(live)
            self.stats.dropped_deadlines += 1
        self.deadlines = live

    def _live(self, entry: tuple[float, int, int, Any, int]) -> PatternState | None:
        _, p, ident, key, state_id = entry
        slot = self.keys.get(key)
        if slot is None or slot[1] is None or id(slot[1]) != state_id:
            return None
        state: PatternState = slot[1]
        pending = state.pending.get(p)
        return state if pending is not None and pending[1] == ident else None

    def expire(self, watermark: float, out: list[Firing]) -> None:
        """Fire the negations whose deadline the watermark has passed."""
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] < watermark:
            entry = heapq.heappop(deadlines)
            state = self._live(entry)
            if state is not None:
                _, p, _, key, _ = entry
                chain = state.pending.pop(p)[2]
                out.append(Firing(self.patterns[p].name, key, chain[2:]))
                self.stats.firings += 1

    def reset(self) -> None:
        """Forget the pending deadlines (the group forgets the key states)."""
        self.deadlines.clear()


class PatternSet(MatcherBase):
    """The triggers of one key_by at one point of the stream, compiled into one trie.

    :meth:`mask` finds the steps an event matches (one compiled probe per event type);
    advancing the partial matches of its key by the mask's cached plan, and firing, are
    compiled into the group's ``feed`` (:func:`pipelines.probes.advance_lines`), with
    :meth:`in_order` when one event fires several patterns."""

    def __init__(self, triggers: list[TriggerStage], limits: Limits, stats: Stats) -> None:
        super().__init__(triggers, limits, stats)
        step_ids: dict[str, int] = {}
        steps: list[Step] = []

        def step_id(step: Step) -> int:
            canonical = step.canonical()
            if canonical not in step_ids:
                step_ids[canonical] = len(steps)
                steps.append(step)
            return step_ids[canonical]

        nodes: dict[tuple[int, ...], _Node] = {}
        self.nodes: list[_Node] = []
        into: dict[int, list[_Node]] = {}
        cancels: dict[int, list[int]] = {}
        for p, trigger in enumerate(triggers):
            prefix: tuple[int, ...] = ()
            parent = -1
            node: _Node | None = None
            for step in trigger.steps:
                sid = step_id(step)
                prefix = (*prefix, sid)
                node = nodes.get(prefix)
                if node is None:
                    node = nodes[prefix] = _Node(len(self.nodes), len(prefix), parent)
                    self.nodes.append(node)
                    into.setdefault(sid, []).append(node)
                parent = node.id
            assert node is not None
            if trigger.negated is None:
                node.fires.append(p)
            else:
                node.waits.append(p)
                nid = step_id(trigger.negated)
                self.patterns[p].negated = nid
                cancels.setdefault(nid, []).append(p)
        self.steps = steps
        # For each step: the nodes it leads into and the negations it cancels.
        # For each step: the nodes it leads into, as (node id, parent id or -1, patterns
        # completed there, negations waiting there), and the negations it cancels.
        self.edges: list[
            tuple[tuple[tuple[int, int, tuple[int, ...], tuple[int, ...]], ...], tuple[int, ...]]
        ] = [
            (
                tuple(
                    (n.id, n.parent if n.depth > 1 else -1, tuple(n.fires), tuple(n.waits))
                    for n in into.get(sid, [])
                ),
                tuple(cancels.get(sid, [])),
            )
            for sid in range(len(steps))
        ]
        self.withins = [p.within for p in self.patterns]
        self.names = [p.name for p in self.patterns]
        by_type: dict[str, _Probe] = {}
        any_type = _Probe()
        for step in steps:
            for t in step.types or ():
                by_type.setdefault(t, _Probe())
        rests: dict[tuple[Atom, ...], int] = {}
        for sid, step in enumerate(steps):
            anchored = anchor(step.where)
            rest: Rest = None
            others = tuple(a for a in step.where if a is not anchored)
            if anchored is None or not others:
                pass
            elif len({a.attr for a in others}) == 1:  # a pseudo-step: the probe's memo
                rest = (rests.setdefault(others, len(steps) + len(rests)), others)
            else:
                rest = compile_check(others, "step")
            # A step of any type is in every type's probe too: one probe per event.
            targets = (
                [by_type[t] for t in step.types] if step.types else [*by_type.values(), any_type]
            )
            for probe in targets:
                probe.add(sid, step.where, anchored, rest)
        self._by_type = by_type
        self.probes = {t: probe.compile(len(steps)) for t, probe in by_type.items()}
        # The probe of an event whose type no step names (None: such events match nothing).
        self.default_probe = any_type.compile(len(steps))
        self.plans: dict[int, Plan] = {}
        self.cancel = self._cancel
        self.wait = self._wait
        n_nodes, n_patterns = len(self.nodes), len(self.patterns)
        self.new_state = lambda: PatternState([None] * n_nodes, [-1] * n_patterns)
        self.firing = Firing

    def plan(self, mask: int) -> Plan:
        """The plan of the step mask ``mask`` (see :mod:`pipelines.probes`), cached."""
        plans = self.plans
        if len(plans) >= MAX_PLANS:
            plans.clear()
        made = plans[mask] = plan(mask, self.edges, len(self.nodes))
        return made

    def probe_lines(self, src: Source, indent: int, only: str | None = None) -> None:
        """The lines of the group's ``feed`` that leave the event's step mask in ``m``:
        the probes of up to ``INLINE_TYPES`` event types inline (one call fewer per
        event), more through the compiled probes. ``only``: the one type of every
        event that reaches these lines (filters let no other through)."""
        default = "0" if self.default_probe is None else f"{src.const(self.default_probe)}(a)"
        if only is not None:
            probe = self._by_type.get(only)
            if probe is None:
                src.add(indent, f"m = {default}")
            else:
                probe.lines(src, len(self.steps), indent)
            return
        if not self._by_type or len(self._by_type) > INLINE_TYPES:
            src.add(indent, f"probe = {src.const(self.probes)}.get(ev.type)")
            src.add(indent, f"m = {default} if probe is None else probe(a)")
            return
        src.add(indent, "t = ev.type")
        for n, (t, probe) in enumerate(self._by_type.items()):
            src.add(indent, f"{'elif' if n else 'if'} t == {src.const(t)}:")
            probe.lines(src, len(self.steps), indent + 1)
        src.add(indent, "else:")
        src.add(indent + 1, f"m = {default}")

    def advance_lines(self, src: Source, indent: int) -> None:
        """The lines of the group's ``feed`` that advance a key by the event's mask."""
        advance_lines(src, self, indent)

    def in_order(self, out: list[Firing], start: int) -> None:
        """Several firings of one event: in pattern order, as the naive peer fires them."""
        order = self.order
        out[start:] = sorted(out[start:], key=lambda f: order[f.trigger])

    def mask(self, ev: Event) -> int:
        """The mask of the steps ``ev`` matches: bit ``sid`` for step ``sid``."""
        probe = self.probes.get(ev.type, self.default_probe)
        return 0 if probe is None else probe(ev.attrs)

    def match(self, ev: Event) -> list[int]:
        """The ids of the steps ``ev`` matches (looked up, not tested one by one)."""
        mask = self.mask(ev)
        return [sid for sid in range(mask.bit_length()) if mask >> sid & 1]
