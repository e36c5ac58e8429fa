"""Nudges: the push half of push-then-pull, one small message per device whose desired
state changed. They are hints; a device that misses one converges on its next sync."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cloud.core.broker import Broker, BrokerUnavailable
from cloud.deploy.materialize import Changed
from device_sdk.wire import Nudge

log = logging.getLogger("tandem.deploy")


def device_channel(device_id: str) -> str:
    return f"tandem:device:{device_id}"


async def send_nudges(broker: Broker, changed: Iterable[Changed]) -> int:
    sent = 0
    try:
        for change in changed:
            payload = Nudge(desired_rev=change.desired_rev).model_dump_json()
            await broker.publish(device_channel(change.device_id), payload)
            sent += 1
    except BrokerUnavailable as exc:
        # Devices still converge through their fallback sync; the database holds the truth.
        log.warning("nudges not sent", extra={"sent": sent, "reason": exc.message})
    return sent


CLOSE = b"close"


async def close_device_stream(broker: Broker, device_id: str) -> None:
    """End the device's open event streams on every replica (it was removed): its next
    reconnect then meets a 401 instead of heartbeats for hours."""
    try:
        await broker.publish(device_channel(device_id), CLOSE)
    except BrokerUnavailable as exc:
        log.warning("stream close not sent", extra={"reason": exc.message})
