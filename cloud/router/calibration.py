"""Calibrating the cloud threshold: alpha is the budget quantile of PRS on recent traffic.

With a budget rho, the requests whose PRS is below the rho quantile of the PRS of recent
traffic are the share rho with the lowest expected edge standing: they go to the cloud.
The online controller (:class:`device_sdk.budget.BudgetController`) starts from this
alpha and follows the traffic as it drifts.
"""

from __future__ import annotations

import numpy as np

from cloud.router.featurize import FloatArray

HISTOGRAM_BINS = 20


def calibrate(prs: FloatArray, budget: float) -> float:
    """The ``budget`` quantile of ``prs``: below it lie (about) ``budget`` of them.

    A budget of 0 gives a threshold no PRS is under; a budget of 1, one every PRS is
    under; no traffic gives 0.5 (the point where the edge is as good as the cloud).
    """
    if budget <= 0.0:
        return 0.0
    if budget >= 1.0:
        return 1.0 + 1e-9
    if prs.size == 0:
        return 0.5
    # "higher": the threshold is a PRS seen, and strictly below it lie about budget * n.
    return float(np.quantile(prs, budget, method="higher"))


def histogram(prs: FloatArray) -> list[int]:
    """Counts of PRS values in ``HISTOGRAM_BINS`` equal bins over [0, 1]."""
    counts, _ = np.histogram(np.clip(prs, 0.0, 1.0), bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return [int(c) for c in counts]
