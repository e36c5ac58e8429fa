"""Caps on the engine's state, and the counters that say what the caps and checks did.

Everything the engine keeps is bounded, so a device can run a pipeline for months:

``max_keys`` (10,000)
    Keys remembered per key_by at one point of the stream (a group of aggregates and
    triggers). Past the cap a key not seen for a while is evicted (the "second chance"
    policy of :mod:`pipelines.groups`, close to least recently used) with all its state
    (windows, partial matches, pending negations); if it comes back it starts afresh.
    Counted as ``evicted_keys``.
``max_seen_ids`` (100,000)
    Event ids remembered to drop duplicates (idempotency by id). The oldest id is
    forgotten first; a duplicate arriving after that many newer events is processed again.
``max_distinct`` (10,000)
    Values per ``distinct`` set and per ``top_k`` counter (see :mod:`pipelines.aggregates`).
``max_pending`` (100,000)
    Deadlines waiting in the negation timer heap; past it, the heap drops the deadlines
    no longer live, then the earliest ones (counted as ``dropped_deadlines``).
``max_clock_jump_s`` (1 day) and ``clock_confirm`` (3)
    Clock skew. An event more than ``max_clock_jump_s`` ahead of the latest event time
    seen is processed, counted as ``skewed``, but does not move event time (so one bad
    clock reading cannot make every later event "late"), unless ``clock_confirm`` such
    events arrive in a row: then the device clock really moved (or the device was off for
    a while) and event time jumps with them. Likewise
    ``clock_confirm`` events in a row that are too late to admit mean the clock was set
    back: event time restarts from them instead of dropping everything for hours.

Partial matches need no cap of their own: each pattern node keeps at most one partial
match per key (see :mod:`pipelines.patterns`), so a device holds at most
``nodes x max_keys`` of them. Window state per key is one window (tumbling, session) or
the panes of one window (sliding, at most 1000 panes by validation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """The engine's caps (see the module docstring for what happens at each)."""

    max_keys: int = 10_000
    max_seen_ids: int = 100_000
    max_distinct: int = 10_000
    max_pending: int = 100_000
    max_clock_jump_s: float = 86_400.0
    clock_confirm: int = 3

    def __post_init__(self) -> None:
        for name in ("max_keys", "max_seen_ids", "max_distinct", "max_pending", "clock_confirm"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be at least 1, got {getattr(self, name)}.")
        if not self.max_clock_jump_s > 0:
            raise ValueError(
                f"Limits.max_clock_jump_s must be positive, got {self.max_clock_jump_s}."
            )


@dataclass(slots=True)
class Stats:
    """What the engine did with the events it was given, counted since it was built."""

    events: int = 0
    """Events accepted and processed."""
    duplicates: int = 0
    """Events dropped because their id was seen (within ``max_seen_ids``)."""
    late: int = 0
    """Events dropped because they were older than the watermark (beyond lateness)."""
    skewed: int = 0
    """Events too far in the future (``max_clock_jump_s``): processed, event time held."""
    invalid: int = 0
    """Events that were not events (no id, a non-numeric ts, ...)."""
    clock_resets: int = 0
    """Times event time jumped (forward or back) after ``clock_confirm`` events agreed."""
    firings: int = 0
    evicted_keys: int = 0
    dropped_deadlines: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
