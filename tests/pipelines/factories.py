"""Small builders for pipeline tests: events and one-stage specs."""

from __future__ import annotations

import itertools
from typing import Any

from pipelines import Event

_ids = itertools.count()


def ev(type: str, ts: float, **attrs: Any) -> Event:
    """An event with a fresh id."""
    return Event(f"e{next(_ids)}", type, float(ts), attrs)


def spec(*stages: dict[str, Any], lateness: Any = 0, name: str = "t") -> dict[str, Any]:
    """A spec of ``stages``."""
    return {"version": 1, "name": name, "lateness": lateness, "stages": list(stages)}


def trigger(name: str, **pattern: Any) -> dict[str, Any]:
    """A trigger stage of ``pattern``."""
    return {"op": "trigger", "name": name, "pattern": pattern}


def step(type: str | None = None, **where: Any) -> dict[str, Any]:
    """A pattern step of ``type`` whose attrs hold ``where``."""
    out: dict[str, Any] = {}
    if type is not None:
        out["type"] = type
    if where:
        out["where"] = where
    return out
