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
