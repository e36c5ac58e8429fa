"""The naive peer of the shared matcher: every pattern matched on its own.

:class:`NaivePatternSet` has the triggers and semantics of
:class:`~pipelines.patterns.PatternSet` and no sharing: every step of every pattern is
tested against every event, and each touched pattern advances its own partial matches.
It is the peer of the benchmark (``bench/pipelines.py``) and the oracle the shared
matcher is tested against (``tests/pipelines/test_patterns.py``); ``Engine(...,
shared=False)`` uses it.
"""

from __future__ import annotations

from typing import Any

from pipelines.codegen import compile_check
from pipelines.events import Event
from pipelines.limits import Limits, Stats
from pipelines.patterns import Chain, Check, Firing, MatcherBase, PatternState
from pipelines.spec import TriggerStage


class NaivePatternSet(MatcherBase):
    """The same triggers and semantics as :class:`PatternSet`, matched one pattern at a
    time: every step of every pattern is tested against every event. The peer of the
    benchmark, and the oracle the shared matcher is tested against."""

    def __init__(self, triggers: list[TriggerStage], limits: Limits, stats: Stats) -> None:
        super().__init__(triggers, limits, stats)
        self.compiled: list[tuple[list[tuple[tuple[str, ...] | None, Check | None]], Any]] = []
        for trigger in triggers:
            steps = [(s.types, compile_check(s.where)) for s in trigger.steps]
            negated = None
            if trigger.negated is not None:
                negated = (trigger.negated.types, compile_check(trigger.negated.where))
            self.compiled.append((steps, negated))

    def match(self, ev: Event) -> list[int]:
        """Every step of every pattern tested on ``ev``: the patterns it touches."""
        attrs = ev.attrs
        touched: list[int] = []
        for p, (steps, negated) in enumerate(self.compiled):
            for types, check in steps:
                if (types is None or ev.type in types) and (check is None or check(attrs)):
                    touched.append(p)
                    break
            else:
                if negated is not None and (
                    (negated[0] is None or ev.type in negated[0])
                    and (negated[1] is None or negated[1](attrs))
                ):
                    touched.append(p)
        return touched

    def advance(
        self,
        matched: list[int],
        ev: Event,
        seq: int,
        key: Any,
        state: PatternState,
        out: list[Firing],
    ) -> None:
        """Advance each touched pattern on its own."""
        attrs = ev.attrs
        ts = ev.ts
        for p in matched:
            steps, negated = self.compiled[p]
            hits = [
                i
                for i, (types, check) in enumerate(steps)
                if (types is None or ev.type in types) and (check is None or check(attrs))
            ]
            if (
                negated is not None
                and state.pending
                and (negated[0] is None or ev.type in negated[0])
                and (negated[1] is None or negated[1](attrs))
            ):
                self._cancel(p, ev, state.pending)
            if not hits:
                continue
            chains = state.chains.get(p)
            if chains is None:
                chains = state.chains[p] = [None] * len(steps)
            fresh: list[tuple[int, Chain]] = []
            for i in hits:
                if i == 0:
                    fresh.append((0, (seq, ts, ev)))
                else:
                    prev = chains[i - 1]
                    if prev is not None and prev[-1].ts <= ts:
                        fresh.append((i, (*prev, ev)))
            for i, chain in fresh:
                chains[i] = chain
                if i == len(steps) - 1:
                    if negated is None:
                        self._complete(p, chain, ev, seq, state.fired, key, out)
                    else:
                        self._wait(p, chain, ev, state, key)
