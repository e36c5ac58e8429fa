"""The literal baseline of issue 9: a static per-user *id* embedding, for
``bench/federated_eval.py``.

Each device user gets a learned vector of its own in the model's ``user`` input (rank 1: one
number in [-0.5, 0.5]), fitted on that user's local data only, with the base model (trained
with static embeddings) held fixed: the maximum a posteriori value under an L2 pull toward
the population centre, ``sum(log loss) + strength * e ** 2``, found exactly on a grid of
101 values. ``strength`` is picked on a validation split of the local data (its newest
30 %, the rest fitting), by pooled AUC over users; the embedding is then refitted on all of
the local data and scored on the held-out ratings. No held-out rating is seen before that.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from models import federated as fm
from models import federated_data as fd
from models import metrics

GRID = np.linspace(-0.5, 0.5, 101, dtype=np.float32)
STRENGTHS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0)
VALIDATION_SHARE = 0.3


def id_embedding_auc(
    ratings: fd.Ratings, users: list[NDArray[np.int64]], base: fm.BaseModel, local_share: float
) -> tuple[float, float]:
    """Held-out AUC of per-user id embeddings and the L2 strength validation picked.
    ``users``: each user's rows of ``ratings`` in time order; the first ``local_share`` of
    them are the device's local data, the rest held out."""
    if base.model.config.rank != 1:
        raise ValueError("the id embedding baseline fits rank-1 models only")
    splits = []
    for rows in users:
        mine = ratings.take(rows)
        cut = round(len(rows) * local_share)
        fit = cut - max(1, round(cut * VALIDATION_SHARE))
        splits.append((mine, fit, cut))
    # Pick the strength on the local validation split.
    best, chosen = -1.0, STRENGTHS[0]
    for strength in STRENGTHS:
        scores, labels = [], []
        for mine, fit, cut in splits:
            value = _fit(base, mine.take(np.arange(fit)), strength)
            scores.append(_score(base, mine.take(np.arange(fit, cut)), value))
            labels.append(mine.click[fit:cut])
        auc = metrics.auc(np.concatenate(labels), np.concatenate(scores))
        if auc > best:
            best, chosen = auc, strength
    scores, labels = [], []
    for mine, _, cut in splits:
        value = _fit(base, mine.take(np.arange(cut)), chosen)
        scores.append(_score(base, mine.take(np.arange(cut, len(mine))), value))
        labels.append(mine.click[cut:])
    return metrics.auc(np.concatenate(labels), np.concatenate(scores)), chosen


def _fit(base: fm.BaseModel, local: fd.Ratings, strength: float) -> float:
    n = len(local)
    inputs: dict[str, NDArray[Any]] = {
        "item": np.tile(local.item, len(GRID)),
        "genres": np.tile(local.genres, (len(GRID), 1)),
        "user": np.repeat(GRID, n)[:, None],
    }
    p = np.clip(base.model.predict(base.params, inputs).reshape(len(GRID), n), 1e-6, 1 - 1e-6)
    y = local.click[None, :]
    loss = -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)).sum(axis=1) + strength * GRID**2
    return float(GRID[int(np.argmin(loss))])


def _score(base: fm.BaseModel, ratings: fd.Ratings, value: float) -> NDArray[np.float32]:
    inputs: dict[str, NDArray[Any]] = {
        "item": ratings.item,
        "genres": ratings.genres,
        "user": np.full((len(ratings), 1), value, np.float32),
    }
    out: NDArray[np.float32] = base.model.predict(base.params, inputs).astype(np.float32)
    return out
