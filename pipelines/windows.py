"""Windowed aggregates: the ``aggregate`` sink, per key, over event time.

Each key of a sink keeps the state of its *current* window: the one holding the latest
event time seen for that key. The feature the sink writes is that window's aggregate, and
it is rewritten after every event that changes it, so a device always reads a fresh
value (an "update" emission policy). An event in an older window of its key (admitted
within the allowed lateness, but behind the key's current window) does not change the
feature, and is not counted by this sink.

``tumbling`` (``size``)
    Windows ``[n*size, (n+1)*size)``. A new window of a key starts from an empty state.
``sliding`` (``size``, ``slide``)
    Windows of ``size`` ending at each ``slide`` boundary, kept as panes of ``slide``:
    the current window is the ``size / slide`` panes up to the key's latest pane. A
    running total of them takes every event, and is merged afresh from the panes left
    when some fall out of the window; ``last_n`` is then in pane order.
``session`` (``gap``)
    Events closer than ``gap`` to the key's current session join it (and can extend it
    backwards); an event more than ``gap`` after its end starts a new session.
no window
    The aggregate runs over every event of the key (e.g. ``last_n`` as a sequence).

Features are named after the sink: ``<feature>`` for an unkeyed sink, ``<feature>:<key>``
for a keyed one. An event without the key attribute (or with a list there) is not counted
by a keyed sink. Keys live in the :class:`~pipelines.groups.KeyedGroup` of the key_by.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from pipelines.aggregates import function
from pipelines.limits import Limits
from pipelines.spec import AggregateStage


class FeatureValue(NamedTuple):
    """A feature to write: its ``name``, JSON ``value``, ``type`` tag and ``ttl_s``
    (None: no expiry)."""

    name: str
    value: Any
    type: str
    ttl_s: float | None


def key_name(feature: str, key: Any) -> str:
    """The name of the feature ``feature`` of ``key`` (None: an unkeyed sink)."""
    if key is None:
        return feature
    if type(key) is float and key.is_integer():
        key = int(key)  # 3.0 and 3 are one key, so one feature name
    return f"{feature}:{key}"


class Aggregate:
    """One ``aggregate`` stage: how a key's window state starts (``init``) and becomes the
    feature value (``value``: ``result`` of the slot's item ``part``). Taking an event
    is compiled into the ``feed`` of the :class:`~pipelines.groups.KeyedGroup` of the
    stage's key_by (see :mod:`pipelines.codegen`), which also holds the key table."""

    def __init__(self, stage: AggregateStage, limits: Limits) -> None:
        self.stage = stage
        self.feature = stage.feature
        self.ttl = stage.ttl
        fn = self.fn = function(
            stage.fn, attr=stage.attr, n=stage.n, k=stage.k, max_distinct=limits.max_distinct
        )
        self.type = fn.type
        window = stage.window
        kind = "none" if window is None else window.kind
        new, merge, result = fn.new, fn.merge, fn.result
        self.init: Callable[[float], list[Any]]
        # The feature value is result(slot[part]): the window's state within its slot.
        self.result = result
        self.part = {"none": 0, "tumbling": 1}.get(kind, 2)

        if kind == "none":
            self.init = lambda ts: [new()]
        elif kind == "tumbling":
            assert window is not None
            size = window.size
            self.init = lambda ts: [ts - ts % size, new()]
        elif kind == "sliding":
            assert window is not None
            slide = window.slide
            self.init = lambda ts: [ts - ts % slide, {}, new(), None]

            def merged(panes: dict[float, Any]) -> Any:
                total = new()
                for start in sorted(panes):
                    merge(total, panes[start])
                return total

            self.merged = merged
        else:
            self.init = lambda ts: [ts, ts, new()]

    def value(self, slot: list[Any]) -> Any:
        """The feature value of the window state ``slot``."""
        return self.result(slot[self.part])
