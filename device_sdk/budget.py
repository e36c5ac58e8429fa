"""The cloud-call budget: which requests may go to the cloud so that a share stays held.

A router scores each request with its Pareto relative superiority (PRS): the lower, the
more the cloud's model is expected to beat the edge's. With a budget ``rho`` (the share
of requests allowed to the cloud) the requests below a threshold ``alpha`` go to the
cloud. :class:`BudgetController` keeps that promise online, on the device and in the
cloud alike, with two mechanisms:

- **threshold tracking**: after each request, ``alpha`` moves up by ``step * target`` when
  the request stayed on the edge and down by ``step * (1 - target)`` when it wanted the
  cloud; ``alpha`` so settles on the ``target`` quantile of the PRS the traffic brings,
  wherever the traffic drifts (stochastic quantile tracking). ``target`` sits a little
  under ``rho`` so the cap below rarely has to act.
- **a hard window cap**: a request goes to the cloud only if the last ``window - 1``
  decisions hold fewer than ``floor(rho * window)`` cloud calls. Every run of ``window``
  consecutive decisions thus holds at most ``rho * window`` cloud calls: a guarantee, not
  an average. A request refused by the cap runs on the edge and says so (``capped``).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """Where one request goes: ``cloud`` or not, and whether the window cap forced it to
    stay on the edge although its PRS was under ``alpha`` (``capped``)."""

    cloud: bool
    prs: float
    alpha: float
    capped: bool


class BudgetController:
    """Holds the cloud share of one stream of requests at or under ``budget``.

    ``alpha`` is the starting threshold (calibrated on recent traffic); ``window`` is the
    number of consecutive decisions over which the cap holds; ``step`` is how far
    ``alpha`` may move per request (default: a tenth of a PRS unit over one window);
    ``margin`` is how far under ``budget`` the threshold aims. Thread-safe.
    """

    def __init__(
        self,
        *,
        budget: float,
        alpha: float,
        window: int = 1000,
        step: float | None = None,
        margin: float = 0.02,
    ) -> None:
        if not 0.0 <= budget <= 1.0 or not math.isfinite(budget):
            raise ValueError(f"budget must be a share in [0, 1], got {budget!r}.")
        if window < 1:
            raise ValueError(f"window must hold at least one decision, got {window!r}.")
        if not math.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number, got {alpha!r}.")
        self.budget = budget
        self.window = window
        self.cap = math.floor(budget * window + 1e-9)
        self.target = max(0.0, budget - margin)
        self.step = step if step is not None else 0.1 / window
        self._alpha = alpha
        self._recent: deque[bool] = deque(maxlen=max(window - 1, 0))
        self._cloud_in_recent = 0
        self._lock = threading.Lock()

    @property
    def alpha(self) -> float:
        """The current threshold: requests whose PRS is below it want the cloud."""
        return self._alpha

    def decide(self, prs: float) -> Decision:
        """Decide for one request of PRS ``prs`` and record the decision."""
        with self._lock:
            return self._decide(prs)

    def decide_many(self, scores: list[float]) -> list[Decision]:
        """Decide for each PRS of ``scores`` in order, as one uninterrupted run."""
        with self._lock:
            return [self._decide(prs) for prs in scores]

    def observe(self, cloud: bool, prs: float) -> None:
        """Count a decision taken elsewhere (a device routing locally): it fills the window
        and moves the threshold as if taken here."""
        with self._lock:
            self._track(prs)
            self._remember(cloud)

    def reset_alpha(self, alpha: float) -> None:
        """Move the threshold to ``alpha`` (one published by the cloud); the window of
        recent decisions, and with it the cap, is kept."""
        if not math.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number, got {alpha!r}.")
        with self._lock:
            self._alpha = alpha

    def share(self) -> float:
        """The cloud share over the last ``window - 1`` decisions (0 before any)."""
        with self._lock:
            return self._cloud_in_recent / len(self._recent) if self._recent else 0.0

    def _decide(self, prs: float) -> Decision:
        alpha = self._alpha
        wants = prs < alpha
        allowed = self._cloud_in_recent + 1 <= self.cap
        cloud = wants and allowed
        self._track(prs)
        self._remember(cloud)
        return Decision(cloud=cloud, prs=prs, alpha=alpha, capped=wants and not allowed)

    def _track(self, prs: float) -> None:
        wants = prs < self._alpha
        self._alpha += self.step * (self.target - (1.0 if wants else 0.0))

    def _remember(self, cloud: bool) -> None:
        if self._recent.maxlen == 0:
            return
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._cloud_in_recent -= 1
        self._recent.append(cloud)
        self._cloud_in_recent += cloud
