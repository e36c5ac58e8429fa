"""Platform events: small hints published on the broker after a change is committed.

An event is a hint, never the truth: if the broker is down the change is still committed
and readers catch up from the database. So publishing never fails the request.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio.from_thread

from cloud.core.broker import Broker, BrokerUnavailable
from cloud.core.db import utcnow

EVENTS_CHANNEL = "tandem:events"
log = logging.getLogger("tandem.events")


def encode_event(kind: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "ts": utcnow().isoformat(), **data}, default=str).encode()


async def publish_event(broker: Broker, kind: str, data: dict[str, Any]) -> None:
    try:
        await broker.publish(EVENTS_CHANNEL, encode_event(kind, data))
    except BrokerUnavailable as exc:
        log.warning("event not published", extra={"event_type": kind, "reason": exc.message})


def publish_event_from_thread(broker: Broker, kind: str, data: dict[str, Any]) -> None:
    """For sync route handlers, which FastAPI runs in a worker thread."""
    anyio.from_thread.run(publish_event, broker, kind, data)
