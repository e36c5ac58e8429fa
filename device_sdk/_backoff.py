"""Exponential backoff with full jitter, for reconnecting and retrying against the cloud.

Full jitter (a delay drawn uniformly from zero to the exponential ceiling) spreads a fleet
that lost the cloud at the same moment, so its return is not met by every device at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays for successive failed attempts: uniform in ``[0, min(max_s, initial_s * 2**n)]``.

    ``reset()`` after a healthy connection starts the schedule over. ``uniform`` is the
    source of randomness (``random.uniform`` unless a test passes its own).
    """

    def __init__(
        self,
        *,
        initial_s: float = 0.5,
        max_s: float = 60.0,
        uniform: Callable[[float, float], float] | None = None,
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s} and {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        # Jitter needs no cryptographic randomness: it only spreads reconnection times.
        self._uniform = uniform or random.uniform
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._attempts

    def ceiling(self, attempt: int) -> float:
        """The largest delay the ``attempt``-th retry (from 0) can draw."""
        # Capping the exponent keeps 2**n from growing without bound on a long outage.
        return min(self.max_s, self.initial_s * 2.0 ** min(attempt, 62))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call moves one step up the schedule."""
        delay = self._uniform(0.0, self.ceiling(self._attempts))
        self._attempts += 1
        return delay

    def reset(self) -> None:
        """Start over from ``initial_s``, e.g. after a connection stayed up long enough."""
        self._attempts = 0
