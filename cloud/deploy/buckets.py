"""Stable percentage buckets: which rollout stage a device joins a deployment in.

Each device gets a number in [0, 100) from a hash of the deployment id and its own id. A
rollout's stages are cumulative percentages (10, 50, 100): a device is in the first stage
whose percentage is above its bucket. Because the bucket never changes, raising a stage
(10 to 50) only ever adds devices, and because the deployment id is hashed too, the devices
that go first differ from one deployment to the next.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from cloud.core.errors import InvalidInput

__all__ = ["MAX_STAGES", "Stages", "bucket", "stage_of", "validate_stages"]

MAX_STAGES = 20
"""The most stages a rollout may have."""

_SPAN = 2**64


def bucket(deployment_id: int, device_id: str) -> float:
    """The device's place in ``deployment_id``'s rollout: a number in [0, 100).

    The first 8 bytes of sha256(f"{deployment_id}:{device_id}"), read as an unsigned
    big-endian integer, scaled to [0, 100).
    """
    digest = hashlib.sha256(f"{deployment_id}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SPAN * 100


def stage_of(bucket_value: float, stages: Sequence[float]) -> int | None:
    """The index of the first stage whose percentage is above ``bucket_value``, or None.

    ``stages`` must be valid (see :func:`validate_stages`); None means the device is in no
    stage yet, which happens when the last stage is below 100.
    """
    # The first index whose percentage exceeds the bucket; stages are strictly increasing.
    index = bisect_right(stages, bucket_value)
    return index if index < len(stages) else None


def validate_stages(stages: Sequence[float]) -> tuple[float, ...]:
    """Check rollout stages and return them as a tuple; raise InvalidInput saying what is wrong.

    Stages are cumulative percentages: 1 to 20 of them, each in (0, 100], strictly
    increasing. The last may be below 100 to hold part of the fleet back.
    """
    if isinstance(stages, str | bytes):
        raise InvalidInput("Rollout stages must be a list of percentages, e.g. [10, 50, 100].")
    if not stages:
        raise InvalidInput("Rollout stages are empty; give at least one, e.g. [10, 50, 100].")
    if len(stages) > MAX_STAGES:
        raise InvalidInput(f"Rollout has {len(stages)} stages; at most {MAX_STAGES} are allowed.")
    previous = 0.0
    for index, percentage in enumerate(stages):
        # bool is an int, but True is surely a mistake for a percentage.
        if isinstance(percentage, bool) or not isinstance(percentage, int | float):
            raise InvalidInput(f"Rollout stage {index} is {percentage!r}, not a number.")
        # Written so that NaN, which fails every comparison, is refused too.
        if not 0 < percentage <= 100:
            raise InvalidInput(
                f"Rollout stage {index} is {percentage}%; each stage must be above 0 and at "
                "most 100."
            )
        if percentage <= previous:
            raise InvalidInput(
                f"Rollout stage {index} is {percentage}%, not above stage {index - 1} "
                f"({previous}%); stages are cumulative and must strictly increase."
            )
        previous = percentage
    return tuple(float(percentage) for percentage in stages)


@dataclass(frozen=True)
class Stages:
    """Validated rollout stages: ``Stages((10, 50, 100)).stage_of(bucket(7, device_id))``."""

    percentages: tuple[float, ...]

    def __post_init__(self) -> None:
        # Frozen: the validated, normalised tuple replaces whatever sequence was given.
        object.__setattr__(self, "percentages", validate_stages(self.percentages))

    def stage_of(self, bucket_value: float) -> int | None:
        """The index of the stage a device with ``bucket_value`` is in, or None."""
        return stage_of(bucket_value, self.percentages)

    def __len__(self) -> int:
        return len(self.percentages)
