"""Keyed groups: the sinks of one key_by at one point of the stream, sharing one key table.

All aggregates and the pattern set that key events the same way look the key up once per
event and keep their per-key state in one list: ``[referenced, PatternState | None,
[aggregate states...], feature names | None]``. The feature values of the keys an event
changed are computed only when the engine drains them.

**Eviction.** The table holds at most ``Limits.max_keys`` keys. Past the cap a key is
evicted by the CLOCK ("second chance") policy: the oldest key is taken off; if it was
used since it was last looked at it gets another round at the back, else it is evicted
with all its state (windows, partial matches, pending negations) and counted as
``evicted_keys``. This approximates least-recently-used at a fraction of its cost per
event, and like everything in the engine it depends on the events alone, so device and
cloud evict the same keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pipelines.codegen import compile_feed
from pipelines.drains import compile_drain
from pipelines.events import Event
from pipelines.limits import Limits, Stats
from pipelines.naive import NaivePatternSet
from pipelines.patterns import Firing, PatternSet, PatternState
from pipelines.spec import FilterStage
from pipelines.windows import Aggregate, FeatureValue, key_name

_new = tuple.__new__


class KeyedGroup:
    """The ``aggregates`` and ``patterns`` (either may be empty) of one key_by."""

    def __init__(
        self,
        key_by: str | None,
        aggregates: list[Aggregate],
        patterns: PatternSet | NaivePatternSet | None,
        limits: Limits,
        stats: Stats,
    ) -> None:
        self.key_by = key_by
        self.aggregates = aggregates
        self.patterns = patterns
        self.max_keys = limits.max_keys
        self.stats = stats
        self.keys: OrderedDict[Any, list[Any]] = OrderedDict()
        if patterns is not None:
            patterns.keys = self.keys
        self.dirty: dict[Any, None] = {}
        # Per aggregate, what drain needs: (part, result, type, ttl) (see Aggregate).
        self._readers = [(a.part, a.result, a.type, a.ttl) for a in aggregates]
        # Features of changed keys evicted (or reset) before the next drain: drained first.
        self.flushed: list[FeatureValue] = []
        self.admit = self._admit
        self.feature_value = FeatureValue
        self._drain = compile_drain(self, "drain")
        self.new_pattern_state = PatternState
        self.feed: Callable[[Event, int, list[Firing]], None] = compile_feed(self, "group")
        """Take one event: update its key's aggregates and advance its key's patterns."""

    def guarded(self, filters: list[FilterStage]) -> Callable[[Event, int, list[Firing]], None]:
        """The feed, taking only the events that pass ``filters`` (tested first)."""
        return compile_feed(self, "group", filters)

    def _admit(self, key: Any, slot: list[Any]) -> None:
        keys = self.keys
        keys[key] = slot
        while len(keys) > self.max_keys:
            old, old_slot = keys.popitem(last=False)
            if old_slot[0]:
                old_slot[0] = 0  # used since the last round: a second chance
                keys[old] = old_slot
            else:
                if old in self.dirty:  # its last values are still written (see drain)
                    del self.dirty[old]
                    self._values(old, old_slot, self.flushed)
                self.stats.evicted_keys += 1

    def drain(self, out: list[FeatureValue]) -> None:
        """Append the :class:`FeatureValue` of each aggregate of each key changed since
        the last drain, and forget the changes. A changed key evicted (or reset) since
        then comes first, with its values as they were when it went: draining once
        after many events writes what draining after each would have written last."""
        if self.flushed:
            out.extend(self.flushed)
            self.flushed.clear()
        self._drain(out)

    def names(self, key: Any) -> list[str]:
        """The names of ``key``'s features, in aggregate order."""
        return [key_name(a.feature, key) for a in self.aggregates]

    def _values(self, key: Any, slot: list[Any], out: list[FeatureValue]) -> None:
        names = slot[3]
        if names is None:  # a key's feature names, made once
            names = slot[3] = self.names(key)
        for name, (part, result, type_, ttl), state in zip(
            names, self._readers, slot[2], strict=True
        ):
            # tuple.__new__: a FeatureValue without its Python-level __new__ (hot path).
            out.append(_new(FeatureValue, (name, result(state[part]), type_, ttl)))

    def reset(self) -> None:
        """Forget every key (event time restarted); the changed ones are flushed first."""
        keys = self.keys
        for key in self.dirty:
            slot = keys.get(key)
            if slot is not None:
                self._values(key, slot, self.flushed)
        self.keys.clear()
        self.dirty.clear()
        if self.patterns is not None:
            self.patterns.reset()
