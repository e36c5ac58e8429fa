"""AUC and log-loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.metrics import auc, logloss


def test_auc_is_one_for_a_perfect_ranking_and_zero_for_a_reversed_one() -> None:
    """Clicks all above non-clicks give 1; all below give 0."""
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0


def test_auc_equals_the_share_of_correctly_ordered_pairs_ties_half() -> None:
    """On random scores with ties, AUC equals the brute-force pair count."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = rng.integers(0, 8, 60).astype(float)  # many ties
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(scores[labels == 1], scores[labels == 0])
    ]
    assert auc(labels, scores) == pytest.approx(np.mean(pairs))


def test_auc_needs_both_classes() -> None:
    """With only clicks there is no pair to rank, and AUC refuses."""
    with pytest.raises(ValueError, match="both"):
        auc(np.ones(4), np.arange(4.0))


def test_logloss_of_a_coin_flip_is_log_two() -> None:
    """Predicting 0.5 everywhere costs ln 2 per example."""
    assert logloss(np.array([0, 1, 1]), np.full(3, 0.5)) == pytest.approx(np.log(2))
