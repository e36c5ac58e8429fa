"""Ranking quality of click scores."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def auc(labels: NDArray[np.floating], scores: NDArray[np.floating]) -> float:
    """Area under the ROC curve: the chance that a random click outscores a random
    non-click, ties counting half (the Mann-Whitney statistic, with average ranks)."""
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = float((labels == 1).sum())
    negatives = float(labels.size - positives)
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both clicks and non-clicks among the labels")
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    ranks = np.empty(scores.size, np.float64)
    # Average rank of each run of equal scores.
    boundaries = np.flatnonzero(np.diff(ranked)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [scores.size]])
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    rank_sum = ranks[labels == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def logloss(labels: NDArray[np.floating], scores: NDArray[np.floating]) -> float:
    """Mean binary cross-entropy of probabilities ``scores`` against 0/1 ``labels``."""
    p = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, dtype=np.float64).ravel()
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())
