"""Stable percentage buckets and rollout stages."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import uuid
from collections.abc import Sequence

import pytest

from cloud.core.errors import InvalidInput
from cloud.deploy.buckets import MAX_STAGES, Stages, bucket, stage_of, validate_stages


def fleet(size: int = 10_000, seed: int = 7) -> list[str]:
    """``size`` device ids drawn like uuid4s from a seeded generator, so tests repeat."""
    # A seeded generator on purpose: reproducible ids, not secrets.
    rng = random.Random(seed)  # noqa: S311
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(size)]


def correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson's correlation coefficient of two equally long samples."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    spread_x = math.sqrt(sum((x - mean_x) ** 2 for x in xs))
    spread_y = math.sqrt(sum((y - mean_y) ** 2 for y in ys))
    return covariance / (spread_x * spread_y)


def test_bucket_is_in_range() -> None:
    """Every bucket lies in [0, 100)."""
    assert all(0 <= bucket(1, device_id) < 100 for device_id in fleet(1_000))


def test_bucket_is_deterministic() -> None:
    """The same deployment and device always give the same bucket."""
    device_id = fleet(1)[0]
    assert bucket(42, device_id) == bucket(42, device_id)


def test_bucket_follows_the_documented_hash() -> None:
    """The bucket is the first 8 bytes of sha256("deployment:device") scaled to 100."""
    digest = hashlib.sha256(b"42:device-a").digest()
    assert bucket(42, "device-a") == int.from_bytes(digest[:8], "big") / 2**64 * 100


def test_buckets_are_roughly_uniform() -> None:
    """Over 10,000 devices each tenth of the range holds between 8% and 12% of them."""
    devices = fleet()
    deciles = [0] * 10
    for device_id in devices:
        deciles[int(bucket(3, device_id) // 10)] += 1
    assert all(0.08 * len(devices) <= count <= 0.12 * len(devices) for count in deciles), deciles


def test_raising_a_stage_keeps_every_device_that_was_in() -> None:
    """Going from 10% to 50% only adds devices: everyone in the 10% stays in."""
    devices = fleet()
    before = {d for d in devices if stage_of(bucket(9, d), [10, 100]) == 0}
    after = {d for d in devices if stage_of(bucket(9, d), [50, 100]) == 0}
    assert before <= after
    assert len(before) < len(after)


def test_stage_assignment_is_monotonic_in_percentage() -> None:
    """For any pair of percentages, the devices under the lower one are under the higher."""
    buckets = [bucket(11, d) for d in fleet(2_000)]
    percentages = [0.5, 1, 5, 10, 25, 33.3, 50, 75, 99.9, 100]
    covered = [{i for i, b in enumerate(buckets) if stage_of(b, [p]) == 0} for p in percentages]
    assert all(low <= high for low, high in itertools.pairwise(covered))


def test_different_deployments_order_devices_differently() -> None:
    """Buckets of one deployment are uncorrelated with another's."""
    devices = fleet()
    first = [bucket(1, d) for d in devices]
    second = [bucket(2, d) for d in devices]
    assert abs(correlation(first, second)) < 0.05


def test_first_devices_differ_between_deployments() -> None:
    """The first 1% of one deployment is mostly not the first 1% of another."""
    devices = fleet()
    first = {d for d in devices if bucket(1, d) < 1}
    second = {d for d in devices if bucket(2, d) < 1}
    assert len(first & second) < len(first) // 4


@pytest.mark.parametrize(
    ("value", "stages", "expected"),
    [
        pytest.param(0.0, [10, 50, 100], 0, id="bottom"),
        pytest.param(9.999, [10, 50, 100], 0, id="just-under-first"),
        pytest.param(10.0, [10, 50, 100], 1, id="boundary-goes-up"),
        pytest.param(49.5, [10, 50, 100], 1, id="second"),
        pytest.param(99.99, [10, 50, 100], 2, id="last"),
        pytest.param(60.0, [10, 50], None, id="held-back"),
        pytest.param(50.0, [50], None, id="boundary-excluded"),
    ],
)
def test_stage_of(value: float, stages: list[float], expected: int | None) -> None:
    """A device is in the first stage whose percentage is above its bucket, else in none."""
    assert stage_of(value, stages) == expected


def test_stages_object_delegates() -> None:
    """Stages validates once and places buckets like stage_of."""
    stages = Stages((10, 50, 100))
    assert stages.percentages == (10.0, 50.0, 100.0)
    assert [stages.stage_of(v) for v in (5, 20, 70)] == [0, 1, 2]
    assert len(stages) == 3


@pytest.mark.parametrize(
    ("stages", "phrase"),
    [
        pytest.param([], "empty", id="empty"),
        pytest.param([0, 50], "above 0", id="zero"),
        pytest.param([-5, 50], "above 0", id="negative"),
        pytest.param([10, 150], "at most 100", id="over-100"),
        pytest.param([10, float("nan")], "above 0", id="nan"),
        pytest.param([10, float("inf")], "at most 100", id="infinite"),
        pytest.param([50, 10], "strictly increase", id="decreasing"),
        pytest.param([10, 10, 100], "strictly increase", id="repeated"),
        pytest.param(list(range(1, MAX_STAGES + 2)), f"at most {MAX_STAGES}", id="too-many"),
        pytest.param([10, "50"], "not a number", id="string-entry"),
        pytest.param([True], "not a number", id="bool-entry"),
        pytest.param("10", "list of percentages", id="string"),
    ],
)
def test_invalid_stages_are_refused(stages: Sequence[float], phrase: str) -> None:
    """Bad stages raise InvalidInput with a message naming the problem."""
    with pytest.raises(InvalidInput) as caught:
        validate_stages(stages)
    assert phrase in caught.value.message


def test_stages_object_refuses_bad_stages() -> None:
    """Building a Stages from bad percentages raises InvalidInput too."""
    with pytest.raises(InvalidInput, match="strictly increase"):
        Stages((50, 10))


def test_valid_stages_allow_a_partial_last_stage() -> None:
    """Up to MAX_STAGES increasing percentages are fine, and the last may be under 100."""
    assert validate_stages([1, 5, 10]) == (1.0, 5.0, 10.0)
    assert len(validate_stages([5 * i for i in range(1, MAX_STAGES + 1)])) == MAX_STAGES
