"""Exponential backoff with full jitter."""

from __future__ import annotations

import pytest

from device_sdk import Backoff


def highest(low: float, high: float) -> float:
    return high


def test_ceilings_double_from_initial_up_to_max() -> None:
    """The largest possible delay doubles each attempt from 0.5 s and stops at 60 s."""
    backoff = Backoff(initial_s=0.5, max_s=60.0, uniform=highest)
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_delays_are_drawn_between_zero_and_the_ceiling() -> None:
    """Every delay lies in [0, ceiling] of its attempt, and they are not all equal."""
    backoff = Backoff(initial_s=0.5, max_s=60.0)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.0 <= d <= backoff.ceiling(i) for i, d in enumerate(delays))
    assert len(set(delays)) == len(delays)


def test_reset_starts_the_schedule_over() -> None:
    """After reset() the next delay is again bounded by the initial delay."""
    backoff = Backoff(initial_s=0.5, max_s=60.0, uniform=highest)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert (backoff.attempts, backoff.next_delay()) == (0, 0.5)


def test_a_long_outage_does_not_overflow() -> None:
    """Thousands of attempts keep the ceiling at max_s."""
    backoff = Backoff(initial_s=0.5, max_s=60.0, uniform=highest)
    assert backoff.ceiling(10_000) == 60.0


def test_initial_above_max_is_refused() -> None:
    """An initial delay larger than the maximum is a configuration error."""
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=10.0, max_s=1.0)
