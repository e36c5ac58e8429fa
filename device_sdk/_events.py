"""Events and features in the device's local store.

**Events** are what the app tracks (``Device.track``): ``{id, type, ts, attrs}``. They stay
on the device; the pipelines read them where they happen. Uploading raw events is an
explicit opt-in of the app: ``device.queue("events", {"events": [e.to_json() for e in
batch]})``. Recording an id that is already kept does nothing (idempotent by id).

Cap and eviction order: the log keeps at most ``max_events`` events (10,000 unless
configured). Past the cap, events are evicted in the order they were recorded, oldest
first, whatever their ``ts`` (so a device clock that jumps back cannot evict fresh
events). An evicted id is forgotten: recorded again, it counts as new.

**Features** are named JSON values with a type tag and an optional TTL, written by the
pipelines and read by tasks as ``ctx.features``. An expired feature is never returned;
reads sweep it from the store.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from device_sdk._errors import InvalidEvent, InvalidFeature
from device_sdk._store import DeviceStore

DEFAULT_MAX_EVENTS = 10_000
MAX_EVENT_ATTRS_BYTES = 4096
"""The largest ``attrs`` of one event, as compact UTF-8 JSON."""
MAX_FEATURE_BYTES = 64 * 1024
"""The largest feature value, as compact UTF-8 JSON."""

_ONE_LINE = re.compile(r"^[^\x00-\x1f\x7f]+$")
_SCALARS = (str, int, float, type(None))  # bool is an int


@dataclass(frozen=True, slots=True)
class Event:
    """One tracked event: a unique ``id``, its ``type``, when it happened (``ts``, seconds
    since the epoch) and its ``attrs`` (str keys; scalars or lists of scalars)."""

    id: str
    type: str
    ts: float
    attrs: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object, e.g. for an opt-in upload on the events channel."""
        return {"id": self.id, "type": self.type, "ts": self.ts, "attrs": dict(self.attrs)}


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _name(kind: str, value: object, max_chars: int, error: type[ValueError]) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= max_chars or not _ONE_LINE.match(value):
        raise error(
            f"An {kind} must be a string of 1 to {max_chars} characters without control "
            f"characters, got {value!r:.80}."
        )
    return value


def _scalar_ok(value: object) -> bool:
    return isinstance(value, _SCALARS) and not (
        isinstance(value, float) and not math.isfinite(value)
    )


def _check_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in attrs.items():
        _name("event attribute name", key, 64, InvalidEvent)
        if isinstance(value, list | tuple):
            if not all(_scalar_ok(v) for v in value):
                raise InvalidEvent(
                    f"Event attribute {key!r} is a list holding something other than str, "
                    "int, finite float, bool or None; flatten it or encode it as a string."
                )
            value = list(value)
        elif not _scalar_ok(value):
            raise InvalidEvent(
                f"Event attribute {key!r} is a {type(value).__name__}; attributes are str, "
                "int, finite float, bool, None, or lists of those."
            )
        checked[key] = value
    size = len(_encode(checked).encode())
    if size > MAX_EVENT_ATTRS_BYTES:
        raise InvalidEvent(
            f"The event's attributes are {size} bytes as JSON; at most {MAX_EVENT_ATTRS_BYTES} "
            "are kept. Track fewer or shorter attributes."
        )
    return checked


class EventLog:
    """The events kept in ``store``, at most ``max_events`` (see the module's eviction
    order). A light handle: make one whenever needed; it holds no state of its own."""

    def __init__(self, store: DeviceStore, *, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}.")
        self.store = store
        self.max_events = max_events

    def record(
        self, type: str, attrs: Mapping[str, Any], *, ts: float | None = None, id: str | None = None
    ) -> Event:
        """Keep an event and return it; an ``id`` kept already returns the kept event and
        changes nothing. Raises :class:`InvalidEvent` for a bad type, attribute, ts or id."""
        return self.append(type, attrs, ts=ts, id=id)[0]

    def append(
        self, type: str, attrs: Mapping[str, Any], *, ts: float | None = None, id: str | None = None
    ) -> tuple[Event, bool]:
        """Like :meth:`record`, and says whether the event was new (False: a duplicate id)."""
        event = self.make(type, attrs, ts=ts, id=id)
        with self.store.transaction() as db:
            added = db.execute(
                "INSERT OR IGNORE INTO event_log (id, type, ts, attrs) VALUES (?, ?, ?, ?)",
                (event.id, event.type, event.ts, _encode(event.attrs)),
            ).rowcount
            if not added:
                row = db.execute("SELECT * FROM event_log WHERE id = ?", (event.id,)).fetchone()
                return _event(row), False
            (count,) = db.execute("SELECT events FROM event_log_count").fetchone()
            if count > self.max_events:
                db.execute(
                    "DELETE FROM event_log WHERE rowid IN "
                    "(SELECT rowid FROM event_log ORDER BY rowid LIMIT ?)",
                    (count - self.max_events,),
                )
        return event, True

    @staticmethod
    def make(
        type: str, attrs: Mapping[str, Any], *, ts: float | None = None, id: str | None = None
    ) -> Event:
        """A checked :class:`Event` (a fresh uuid4 id, ``ts`` now, unless given), not
        stored. Raises :class:`InvalidEvent` as :meth:`record` does."""
        return Event(
            _name("event id", str(uuid.uuid4()) if id is None else id, 64, InvalidEvent),
            _name("event type", type, 64, InvalidEvent),
            _timestamp(ts),
            _check_attrs(attrs),
        )

    def recent(self, limit: int = 100) -> list[Event]:
        """The ``limit`` events recorded last, in the order they were recorded."""
        rows = self.store.query(
            "SELECT * FROM (SELECT rowid AS seq, * FROM event_log ORDER BY rowid DESC LIMIT ?) "
            "ORDER BY seq",
            (max(0, limit),),
        )
        return [_event(tuple(row)[1:]) for row in rows]

    def count(self) -> int:
        """How many events are kept."""
        count: int = self.store.query("SELECT events FROM event_log_count")[0][0]
        return count


def _timestamp(ts: float | None) -> float:
    if ts is None:
        return time.time()
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise InvalidEvent(
            f"An event's ts is seconds since the epoch (a finite number), not {ts!r}."
        )
    return float(ts)


def _event(row: Any) -> Event:
    id_, type_, ts, attrs = row
    return Event(id_, type_, ts, json.loads(attrs))


@dataclass(frozen=True, slots=True)
class Feature:
    """One stored feature: its JSON ``value``, its ``type`` tag (``null``, ``bool``,
    ``int``, ``float``, ``str``, ``list`` or ``dict``), when it was written and when it
    expires (seconds since the epoch; None: never)."""

    name: str
    value: Any
    type: str
    written_at: float
    expires_at: float | None


class FeatureStore:
    """The features kept in ``store``. ``clock`` (seconds since the epoch) decides expiry.
    A light handle like :class:`EventLog`."""

    def __init__(self, store: DeviceStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    def set(self, name: str, value: Any, ttl_s: float | None = None) -> Feature:
        """Write ``value`` (JSON: None, bool, int, finite float, str, list, dict) under
        ``name``, expiring ``ttl_s`` seconds from now (never if None). Raises
        :class:`InvalidFeature` for a bad name, value or TTL."""
        _name("feature name", name, 128, InvalidFeature)
        if ttl_s is not None and not (isinstance(ttl_s, int | float) and 0 < ttl_s < math.inf):
            raise InvalidFeature(
                f"ttl_s must be a positive number of seconds or None, not {ttl_s!r}."
            )
        try:
            encoded = _encode(value)
        except (TypeError, ValueError) as exc:
            raise InvalidFeature(
                f"Feature {name!r} cannot be stored as JSON ({exc}); use None, bool, int, finite "
                "float, str, and lists and dicts of those."
            ) from exc
        if len(encoded.encode()) > MAX_FEATURE_BYTES:
            raise InvalidFeature(
                f"Feature {name!r} is over {MAX_FEATURE_BYTES} bytes as JSON; store less."
            )
        tag = (
            "null"
            if value is None
            else "list"
            if isinstance(value, tuple)
            else type(value).__name__
        )
        now = self._clock()
        feature = Feature(
            name, json.loads(encoded), tag, now, None if ttl_s is None else now + ttl_s
        )
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)",
                (name, encoded, tag, now, feature.expires_at),
            )
        return feature

    def feature(self, name: str) -> Feature | None:
        """The stored :class:`Feature` ``name``, or None if there is none or it expired."""
        rows = self.store.query("SELECT * FROM features WHERE name = ?", (name,))
        if not rows:
            return None
        feature = Feature(rows[0][0], json.loads(rows[0][1]), *tuple(rows[0])[2:])
        if feature.expires_at is not None and feature.expires_at <= self._clock():
            self.sweep()
            return None
        return feature

    def get(self, name: str, default: Any = None) -> Any:
        """The value of feature ``name``, or ``default`` if there is none or it expired."""
        feature = self.feature(name)
        return default if feature is None else feature.value

    def items(self) -> list[tuple[str, Any]]:
        """Every live feature as ``(name, value)``, by name; sweeps the expired ones first."""
        self.sweep()
        rows = self.store.query("SELECT name, value FROM features ORDER BY name")
        return [(name, json.loads(value)) for name, value in rows]

    def delete(self, name: str) -> bool:
        """Remove feature ``name``; returns whether it was there."""
        with self.store.transaction() as db:
            return db.execute("DELETE FROM features WHERE name = ?", (name,)).rowcount > 0

    def sweep(self) -> int:
        """Delete every expired feature; returns how many."""
        with self.store.transaction() as db:
            return db.execute(
                "DELETE FROM features WHERE expires_at <= ?", (self._clock(),)
            ).rowcount


class FeaturesView(Mapping[str, Any]):
    """A read-only mapping of the live features, read afresh on every access
    (``Device.features``, and ``ctx.features`` in tasks). ``open`` yields the
    :class:`FeatureStore` to read."""

    def __init__(self, open: Callable[[], AbstractContextManager[FeatureStore]]) -> None:
        self._open = open

    def __getitem__(self, name: str) -> Any:
        with self._open() as features:
            feature = features.feature(name)
        if feature is None:
            raise KeyError(name)
        return feature.value

    def __iter__(self) -> Iterator[str]:
        with self._open() as features:
            return iter([name for name, _ in features.items()])

    def __len__(self) -> int:
        with self._open() as features:
            return len(features.items())

    def __repr__(self) -> str:
        with self._open() as features:
            return f"FeaturesView({dict(features.items())!r})"
