"""The engine: specs compiled into one graph per device, fed one event at a time.

``Engine(specs)`` compiles every spec together. Filters and maps that several specs (or
several parts of one spec) share run once: the transform stages form a tree by their
content, and each node of it holds its sinks, one
:class:`~pipelines.groups.KeyedGroup` per key_by (its aggregates, and one
:class:`~pipelines.patterns.PatternSet` for all its triggers). The tree is compiled to
Python (:mod:`pipelines.codegen`): a walk per lateness with each filter an inline
condition, and one ``feed`` per group, so each stage runs at most once per event.

Per event (:meth:`Engine.process`), in order:

1. an event that is not an event is counted ``invalid``; a seen id (within
   ``Limits.max_seen_ids``) is a ``duplicate``: dropped, so replays are idempotent;
2. event time: the latest ``ts`` seen moves forward (see ``Limits`` for clock skew);
   the watermark of each spec is that minus its ``lateness``; negations whose deadline
   the watermark passed fire now;
3. an event older than a spec's watermark is ``late`` for that spec and skipped by it;
4. the event runs through the stages; trigger firings are returned, changed features
   are returned with their new values (``drain``).

A batch (:meth:`Engine.feed_many`, :meth:`Engine.process_many`) goes through one
compiled loop (:mod:`pipelines.batch`) with exactly the outputs of feeding its events one
by one; draining once after it writes the last value of each feature it changed.

Everything is a function of the events and their order, never of the wall clock: the
cloud's :func:`run_batch` over the same events in the same order gives the same
outputs as a device that tracked them one by one. Nothing raises into the caller for a
bad event; only building an engine from a bad spec raises :class:`SpecError`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.batch import compile_batch
from pipelines.codegen import Source, where_expr
from pipelines.errors import SpecError
from pipelines.events import BadEvent, Event, as_event
from pipelines.groups import KeyedGroup
from pipelines.limits import Limits, Stats
from pipelines.naive import NaivePatternSet
from pipelines.patterns import Firing, PatternSet
from pipelines.spec import (
    AggregateStage,
    FilterStage,
    MapStage,
    PipelineSpec,
    Stage,
    TriggerStage,
    validate,
)
from pipelines.windows import Aggregate, FeatureValue

Transform = Callable[[Event], Event | None]


@dataclass(frozen=True, slots=True)
class Outputs:
    """What one event produced: features to write (in order) and trigger firings."""

    features: list[FeatureValue]
    firings: list[Firing]


_NOTHING = Outputs([], [])


class _Node:
    __slots__ = ("children", "groups", "lateness", "sinks", "stage", "transform")

    def __init__(self, stage: Stage | None, transform: Transform | None, lateness: float) -> None:
        self.stage = stage
        self.transform = transform
        self.lateness = lateness
        self.groups: list[KeyedGroup] = []
        self.children: dict[str, _Node] = {}
        # key_by -> (aggregates, triggers), in the order the key_bys first appear
        self.sinks: dict[str | None, tuple[list[AggregateStage], list[TriggerStage]]] = {}


def _map(stage: MapStage) -> Transform:
    project, rename, sets = stage.project, stage.rename, stage.set

    def apply(ev: Event) -> Event:
        source = ev.attrs
        attrs = dict(source) if project is None else {k: source[k] for k in project if k in source}
        for old, new in rename:
            if old in attrs:
                attrs[new] = attrs.pop(old)
        for name, value in sets:
            attrs[name] = value
        return Event(ev.id, ev.type, ev.ts, attrs)

    return apply


def _signature(stage: Stage) -> str:
    if isinstance(stage, FilterStage):
        return json.dumps(["filter", stage.types, [a.canonical() for a in stage.where]])
    assert isinstance(stage, MapStage)
    return json.dumps(["map", stage.project, stage.rename, stage.set])


def _specs(
    specs: PipelineSpec | dict[str, Any] | Sequence[PipelineSpec | dict[str, Any]],
) -> list[PipelineSpec]:
    items = [specs] if isinstance(specs, PipelineSpec | dict) else list(specs)
    result: list[PipelineSpec] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, PipelineSpec):
            result.append(item)
            continue
        try:
            result.append(validate(item))
        except SpecError as exc:
            prefix = f"specs[{i}]." if len(items) > 1 else ""
            problems.extend(prefix + p for p in exc.problems)
    if problems:
        raise SpecError(problems)
    owners: dict[tuple[str, str], int] = {}
    for i, spec in enumerate(result):
        for kind, names in (("feature", spec.features), ("trigger", spec.triggers)):
            for name in names:
                owner = owners.setdefault((kind, name), i)
                if owner != i:
                    problems.append(
                        f"specs[{i}]: the {kind} {name!r} of pipeline {spec.name!r} is also "
                        f"defined by pipeline {result[owner].name!r}; rename one of them"
                    )
    if problems:
        raise SpecError(problems, subject="The pipeline specs")
    return result


class Engine:
    """One device's pipelines: ``specs`` (validated specs or JSON objects) compiled
    together. ``shared=False`` matches each trigger on its own (the naive peer, for
    benchmarks and tests); the outputs are the same."""

    def __init__(
        self,
        specs: PipelineSpec | dict[str, Any] | Sequence[PipelineSpec | dict[str, Any]],
        *,
        limits: Limits | None = None,
        shared: bool = True,
    ) -> None:
        self.specs = _specs(specs)
        self.limits = limits or Limits()
        self.stats = Stats()
        self._root: dict[str, _Node] = {}
        self._groups: list[KeyedGroup] = []
        self._timers: list[tuple[float, PatternSet | NaivePatternSet]] = []
        for spec in self.specs:
            self._add(spec)
        kind = PatternSet if shared else NaivePatternSet
        for node in self._root.values():
            self._build(node, kind)
        self._top = list(self._root.values())
        # One compiled walk per lateness: (lateness, walk(ev, seq, out)).
        self._walks = [(node.lateness, _compile_walk(node)) for node in self._top]
        self._jump = self.limits.max_clock_jump_s
        self._confirm = self.limits.clock_confirm
        self._max_seen = self.limits.max_seen_ids
        self._max_lateness = max((spec.lateness for spec in self.specs), default=0.0)
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._seq = 0
        self._max_ts: float | None = None
        self._ahead = 0
        self._behind = 0
        fused = _fused(self._top[0]) if len(self._top) == 1 else None
        self._batch = compile_batch(self, fused)

    # --- compiling --------------------------------------------------------------------

    def _add(self, spec: PipelineSpec) -> None:
        node = self._root.setdefault(repr(spec.lateness), _Node(None, None, spec.lateness))
        for stage in spec.stages:
            if isinstance(stage, AggregateStage):
                node.sinks.setdefault(stage.key_by, ([], []))[0].append(stage)
            elif isinstance(stage, TriggerStage):
                node.sinks.setdefault(stage.key_by, ([], []))[1].append(stage)
            else:
                signature = _signature(stage)
                child = node.children.get(signature)
                if child is None:
                    # A filter becomes an inline condition of the compiled walk.
                    transform = None if isinstance(stage, FilterStage) else _map(stage)
                    child = node.children[signature] = _Node(stage, transform, node.lateness)
                node = child

    def _build(self, node: _Node, kind: type[PatternSet] | type[NaivePatternSet]) -> None:
        for key_by, (aggregates, triggers) in node.sinks.items():
            patterns = kind(triggers, self.limits, self.stats) if triggers else None
            group = KeyedGroup(
                key_by,
                [Aggregate(stage, self.limits) for stage in aggregates],
                patterns,
                self.limits,
                self.stats,
            )
            node.groups.append(group)
            self._groups.append(group)
            if patterns is not None and patterns.has_negations:
                self._timers.append((node.lateness, patterns))
        for child in node.children.values():
            self._build(child, kind)

    @property
    def triggers(self) -> list[str]:
        """Every trigger name of the engine's specs."""
        return [name for spec in self.specs for name in spec.triggers]

    # --- running ----------------------------------------------------------------------

    def process(self, event: object) -> Outputs:
        """Feed one event; returns the features it changed and the triggers it fired.
        Never raises for a bad event: it is counted (``stats``) and yields nothing."""
        firings = self.feed(event)
        features = self.drain()
        if not firings and not features:
            return _NOTHING
        return Outputs(features, firings)

    def feed(self, event: object) -> list[Firing]:
        """Feed one event and return the firings; the features it changed wait for
        :meth:`drain`. The fast path of :meth:`process`."""
        if type(event) is not Event:
            try:
                event = as_event(event)
            except BadEvent:
                self.stats.invalid += 1
                return []
        assert isinstance(event, Event)
        seen = self._seen
        ident = event.id
        if ident in seen:
            self.stats.duplicates += 1
            return []
        ts = event.ts
        out: list[Firing] = []
        max_ts = self._max_ts
        if max_ts is None or ts > max_ts:
            if max_ts is not None and ts > max_ts + self._jump:
                self._ahead += 1
                self._behind = 0
                if self._ahead < self._confirm:
                    # Maybe one bad clock reading: process the event, but do not let it
                    # drag event time (and so the watermark) ahead of everyone else.
                    self.stats.skewed += 1
                else:
                    self.stats.clock_resets += 1
                    self._advance(ts, out)
                    max_ts = ts
            else:
                self._ahead = self._behind = 0
                self._max_ts = max_ts = ts
                for lateness, patterns in self._timers:
                    deadlines = patterns.deadlines
                    if deadlines and deadlines[0][0] < ts - lateness:
                        patterns.expire(ts - lateness, out)
        elif ts < max_ts - self._max_lateness:
            self._behind += 1
            if self._behind >= self._confirm:
                self._restart(ts)
                max_ts = ts
            else:
                self._ahead = 0
        else:
            self._ahead = self._behind = 0
        seen.add(ident)
        order = self._seen_order
        order.append(ident)
        if len(order) > self._max_seen:
            seen.discard(order.popleft())
        self._seq = seq = self._seq + 1
        accepted = False
        for lateness, walk in self._walks:
            if ts >= max_ts - lateness:
                accepted = True
                walk(event, seq, out)
        if accepted:
            self.stats.events += 1
        else:
            self.stats.late += 1
        return out

    def feed_many(self, events: Iterable[object]) -> list[Firing]:
        """Feed ``events`` in order and return all their firings, in order; the features
        they changed wait for :meth:`drain` (one drain after the batch writes the last
        value of every feature it changed). Exactly :meth:`feed` on each event, with
        the bookkeeping of an event that needs no clock decision, and the walk of the
        stages, compiled into one loop (:mod:`pipelines.batch`): the batch path of the
        cloud, of a device's replay and of the benchmark."""
        return self._batch(events)

    def process_many(self, events: Iterable[object]) -> Outputs:
        """Feed ``events`` in order; the firings of all of them, in order, and the last
        value of every feature they changed (:meth:`feed_many`, then :meth:`drain`)."""
        firings = self.feed_many(events)
        features = self.drain()
        if not firings and not features:
            return _NOTHING
        return Outputs(features, firings)

    def _advance(self, ts: float, out: list[Firing]) -> None:
        self._ahead = self._behind = 0
        self._max_ts = ts
        for lateness, patterns in self._timers:
            if patterns.deadlines:
                patterns.expire(ts - lateness, out)

    def _restart(self, ts: float) -> None:
        # The clock was set back: event time restarts here, and state from "the future"
        # would hold every new event as late or stale, so it goes.
        self.stats.clock_resets += 1
        self._max_ts = ts
        self._behind = self._ahead = 0
        for group in self._groups:
            group.reset()

    def drain(self) -> list[FeatureValue]:
        """The features changed since the last drain, with their current values."""
        out: list[FeatureValue] = []
        for group in self._groups:
            if group.dirty or group.flushed:
                group.drain(out)
        return out


def _compile_walk(node: _Node) -> Callable[[Event, int, list[Firing]], None]:
    """One function that takes an event through ``node``'s tree: each group's feed, each
    filter as an inline condition, each map as a call (see :mod:`pipelines.codegen`).
    A tree that is only filters in front of one group is that group's guarded feed:
    one call per event fewer."""
    fused = _fused(node)
    if fused is not None:
        return fused[0].guarded(fused[1])
    src = Source()
    src.add(0, "def walk(ev, seq, out):")
    _walk_lines(src, node, "ev", 1)
    walk: Callable[[Event, int, list[Firing]], None] = src.build("walk", "walk")
    return walk


def _fused(node: _Node) -> tuple[KeyedGroup, list[FilterStage]] | None:
    """The one group ``node``'s tree amounts to, and the filters in front of it; None
    when the tree maps events or holds more than one group."""
    filters: list[FilterStage] = []
    end = node
    while not end.groups and len(end.children) == 1:
        child = next(iter(end.children.values()))
        if not isinstance(child.stage, FilterStage):
            return None
        filters.append(child.stage)
        end = child
    if len(end.groups) == 1 and not end.children:
        return end.groups[0], filters
    return None


def _walk_lines(src: Source, node: _Node, var: str, indent: int) -> None:
    src.add(indent, "pass")
    for group in node.groups:
        src.add(indent, f"{src.const(group.feed)}({var}, seq, out)")
    for child in node.children.values():
        stage = child.stage
        if isinstance(stage, FilterStage):
            conditions = []
            if stage.types is not None:
                conditions.append(f"{var}.type in {src.const(frozenset(stage.types))}")
            expr = where_expr(src, stage.where)
            if expr is not None:
                src.add(indent, f"a = {var}.attrs")
                conditions.append(f"({expr})")
            src.add(indent, f"if {' and '.join(conditions)}:")
            _walk_lines(src, child, var, indent + 1)
        else:
            mapped = src.temp()
            src.add(indent, f"{mapped} = {src.const(child.transform)}({var})")
            _walk_lines(src, child, mapped, indent)


@dataclass
class BatchResult:
    """The outputs of a batch: every firing in order, the last value of every feature
    written, and the engine's counters."""

    features: dict[str, FeatureValue] = field(default_factory=dict)
    firings: list[Firing] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)

    def to_json(self) -> dict[str, Any]:
        return {
            "features": {
                name: {"value": f.value, "type": f.type, "ttl_s": f.ttl_s}
                for name, f in sorted(self.features.items())
            },
            "firings": [f.to_json() for f in self.firings],
            "stats": self.stats.as_dict(),
        }


def run_batch(
    specs: PipelineSpec | dict[str, Any] | Sequence[PipelineSpec | dict[str, Any]],
    events: Iterable[object],
    *,
    limits: Limits | None = None,
) -> BatchResult:
    """Run ``specs`` over ``events`` in the given order, with the outputs a device that
    took them one at a time would have (the cloud's entry point; one
    :meth:`Engine.feed_many`). Raises :class:`SpecError` for a bad spec only."""
    engine = Engine(specs, limits=limits)
    result = BatchResult(stats=engine.stats)
    features = result.features
    result.firings.extend(engine.feed_many(events))
    for feature in engine.drain():
        features[feature.name] = feature
    return result
