"""The batch path, compiled: :meth:`Engine.feed_many <pipelines.engine.Engine.feed_many>`.

One function takes a batch of events through the engine: the per-event bookkeeping of
:meth:`~pipelines.engine.Engine.feed` (the event check, dedupe by id, event time, the
negation deadlines) done inline for every event that needs no clock decision, and the
walk of the stages after it; where the walk is only filters in front of one group (the
usual shape), that group's ``feed`` body is inlined into the loop too (see
:func:`pipelines.codegen.feed_lines`), so an event costs no Python call at all unless it
matches a pattern that fires or waits, and a run of events of one key finds its state
once. The namespace's names are locals of the loop (``Source.build(hoist=True)``).

Any event the fast path does not decide (the first one, a duplicate id, a timestamp too
far ahead, one older than the largest lateness) goes through ``Engine.feed`` itself, with
event time and the sequence number handed over and back, so the outputs are exactly
those of ``feed`` on each event (``tests/pipelines/test_batch.py`` checks it on hostile
streams). Like everything in :mod:`pipelines.codegen`, no value from a spec enters the
generated text: the engine's state and the walks are bound as names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipelines.codegen import Source, feed_lines
from pipelines.events import BadEvent, Event, as_event

Batch = Callable[[Iterable[object]], list[Any]]


def compile_batch(engine: Any, fused: tuple[Any, Sequence[Any]] | None) -> Batch:
    """``feed_many(events) -> firings`` of ``engine``; ``fused`` is the one group, and
    the filters in front of it, that the single walk amounts to (None: call the walks)."""
    src = Source()
    e, stats, feed = src.const(engine), src.const(engine.stats), src.const(engine.feed)
    seen, order = src.const(engine._seen), src.const(engine._seen_order)
    max_seen, jump = src.const(engine._max_seen), src.const(engine._jump)
    max_lateness, timers = src.const(engine._max_lateness), src.const(engine._timers)
    # NOKEY: equal to no key (the key of the previous event, before there is one).
    src.ns.update(Event=Event, BadEvent=BadEvent, as_event=as_event)
    src.ns.update(INF=math.inf, NOKEY=object())
    src.add(0, "def feed_many(events):")
    src.add(1, "out = []")
    # Event time, the sequence number and whether the clock guard counts anything, in
    # locals; written back before (and read again after) each fallback to feed(). An
    # event time outside [low, high] needs a clock decision (None: every one does).
    src.add(1, f"max_ts, seq = {e}._max_ts, {e}._seq")
    src.add(1, f"guard = bool({e}._ahead or {e}._behind)")
    # Events taken by the fast path, counted as seq moved by it: seq moves on once per
    # event taken, and by what feed() moved it in each fallback (``other``).
    src.add(1, "first, other = seq, 0")
    src.add(1, "last_key, last_slot = NOKEY, None")
    src.add(1, "try:")
    src.add(2, "if max_ts is None:")
    src.add(3, "high, low = -INF, INF")
    src.add(2, "else:")
    src.add(3, f"high, low = max_ts + {jump}, max_ts - {max_lateness}")
    src.add(2, "for ev in events:")
    src.add(3, "if type(ev) is not Event:")
    src.add(4, "try:")
    src.add(5, "ev = as_event(ev)")
    src.add(4, "except BadEvent:")
    src.add(5, f"{stats}.invalid += 1")
    src.add(5, "continue")
    src.add(3, "ts = ev.ts")
    # A new id grows the set of seen ids: one hash probe both tests and remembers it.
    # A seen id (the set unchanged) and a clock decision (tested before, nothing
    # remembered yet) go to feed().
    src.add(3, "if ts <= high and ts >= low:")
    src.add(4, f"n = len({seen})")
    src.add(4, f"{seen}.add(ev.id)")
    src.add(4, f"fast = len({seen}) != n")
    src.add(3, "else:")
    src.add(4, "fast = False")
    src.add(3, "if not fast:")
    src.add(4, f"{e}._max_ts, {e}._seq = max_ts, seq")
    src.add(4, f"out += {feed}(ev)")
    src.add(4, "other -= seq")
    src.add(4, f"max_ts, seq, guard = {e}._max_ts, {e}._seq, True")
    src.add(4, "other += seq")
    src.add(4, f"high, low = max_ts + {jump}, max_ts - {max_lateness}")
    src.add(4, "last_key = NOKEY")
    src.add(4, "continue")
    src.add(3, "seq += 1")
    src.add(3, f"{order}.append(ev.id)")
    src.add(3, f"if n >= {max_seen}:")
    src.add(4, f"{seen}.discard({order}.popleft())")
    src.add(3, "if ts > max_ts:")
    src.add(4, "max_ts = ts")
    src.add(4, f"high, low = ts + {jump}, ts - {max_lateness}")
    src.add(4, f"for lateness, patterns in {timers}:")
    src.add(5, "deadlines = patterns.deadlines")
    src.add(5, "if deadlines and deadlines[0][0] < ts - lateness:")
    src.add(6, "patterns.expire(ts - lateness, out)")
    src.add(3, "if guard:")
    src.add(4, f"{e}._ahead = {e}._behind = 0")
    src.add(4, "guard = False")
    # ts >= max_ts - max_lateness: the walk of the largest lateness takes the event.
    if fused is not None:
        group, filters = fused
        src.offset = 2
        feed_lines(src, group, filters, "continue", runs=True)
        src.offset = 0
    else:
        src.add(3, f"for lateness, walk in {src.const(engine._walks)}:")
        src.add(4, "if ts >= max_ts - lateness:")
        src.add(5, "walk(ev, seq, out)")
    src.add(1, "finally:")
    src.add(2, f"{e}._max_ts, {e}._seq = max_ts, seq")
    src.add(2, f"{stats}.events += seq - first - other")
    src.add(1, "return out")
    batch: Batch = src.build("feed_many", "batch", hoist=True)
    return batch
