"""Events as the engine sees them: ``{id, type, ts, attrs}``.

The engine takes any object with those four attributes (the device SDK's ``Event`` is
one) or a JSON object with those four keys (an uploaded batch). :func:`as_event` checks
the shape once at the door, so the operators behind it never meet a malformed event: a
string ``id`` and ``type`` of 1 to 128 characters, a finite number ``ts`` (seconds since
the epoch, event time) and an ``attrs`` object with string keys. Anything else is
:class:`BadEvent`, which the engine counts and skips rather than raising.

``Event`` is a slotted class rather than a frozen dataclass: the engine makes one per
mapped event on the hot path, and a frozen dataclass pays for ``object.__setattr__`` on
every field. Treat it as immutable; nothing in the library changes one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_NAME_CHARS = 128


class BadEvent(ValueError):
    """An event the engine cannot read; it is counted as ``invalid`` and skipped."""


class Event:
    """One event: unique ``id``, ``type``, event time ``ts`` (seconds since the epoch),
    ``attrs`` (str keys; scalars or lists of scalars)."""

    __slots__ = ("attrs", "id", "ts", "type")

    def __init__(self, id: str, type: str, ts: float, attrs: dict[str, Any]) -> None:
        self.id = id
        self.type = type
        self.ts = ts
        self.attrs = attrs

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object (what a task receives when its trigger fires)."""
        return {"id": self.id, "type": self.type, "ts": self.ts, "attrs": dict(self.attrs)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.id, self.type, self.ts, self.attrs) == (
            other.id,
            other.type,
            other.ts,
            other.attrs,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable attrs: not hashable

    def __repr__(self) -> str:
        return f"Event(id={self.id!r}, type={self.type!r}, ts={self.ts!r}, attrs={self.attrs!r})"


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS:
        raise BadEvent(f"an event's {what} must be a string of 1 to {MAX_NAME_CHARS} characters")
    return value


def as_event(value: object) -> Event:
    """``value`` (an :class:`Event`, an object with ``id``/``type``/``ts``/``attrs``, or
    a JSON object with those keys) as a checked :class:`Event`. Raises :class:`BadEvent`."""
    if type(value) is Event:
        return value
    if isinstance(value, Mapping):
        id_, type_, ts, attrs = (value.get(k) for k in ("id", "type", "ts", "attrs"))
    else:
        try:
            id_, type_, ts, attrs = value.id, value.type, value.ts, value.attrs  # type: ignore[attr-defined]
        except AttributeError as exc:
            raise BadEvent("an event needs id, type, ts and attrs") from exc
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise BadEvent("an event's ts must be a finite number of seconds since the epoch")
    if attrs is None:
        attrs = {}
    if not isinstance(attrs, Mapping) or not all(isinstance(k, str) for k in attrs):
        raise BadEvent("an event's attrs must be an object with string keys")
    return Event(_name(id_, "id"), _name(type_, "type"), float(ts), dict(attrs))
