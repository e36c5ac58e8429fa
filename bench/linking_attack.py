"""Linking attacks on anonymous user embeddings, for ``bench/federated_eval.py``.

The attacker sees every uploaded embedding and knows how many users there are; it tries to
name the user of each. Three attackers, the best counts:

- **nearest centroid**: given some labelled uploads per user, the mean of each user's
  labelled embeddings; an upload goes to the nearest mean;
- **classifier**: a softmax regression on (x, x^2) features, trained on the labelled
  uploads (quadratic features let it model each user's spread, not just its centre);
- **clustering**: k-means with as many clusters as users over every upload, each cluster
  then matched to one user by the Hungarian algorithm so as to maximise the labelled
  uploads it gets right; an unlabelled upload goes to its cluster's user. (Matching on the
  very uploads that are scored would credit the attacker with chance agreement: about 10 %
  even on pure noise, as a first version of this benchmark found.)

Accuracy is measured on the uploads that were not labelled. Beside them, ``oracle``: the
expected accuracy of the best attacker *judging each upload on its own*, who knows every
user's distribution exactly. It is not the best possible attacker: one who groups uploads
(a user's draws clump around their positions) can do better, and the per-embedding bound
(``AnonymousEmbedding.attribution_bound``) does not cover that. At the default setting the
measured attackers stay under the bound on average (1.92x random, standard error 0.04x,
over 12 sets of uploads); a single set of uploads can exceed it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class AttackResult:
    nearest_centroid: float
    classifier: float
    clustering: float

    @property
    def best(self) -> float:
        return max(self.nearest_centroid, self.classifier, self.clustering)


def attack(
    embeddings: NDArray[np.float32],
    users: NDArray[np.int64],
    labelled: NDArray[np.bool_],
    rng: np.random.Generator,
) -> AttackResult:
    """Each attacker's accuracy on the unlabelled uploads. ``users`` are 0..N-1."""
    count = int(users.max()) + 1
    x_train, y_train = embeddings[labelled], users[labelled]
    x_test, y_test = embeddings[~labelled], users[~labelled]
    return AttackResult(
        nearest_centroid=_nearest_centroid(x_train, y_train, x_test, y_test, count),
        classifier=_classifier(x_train, y_train, x_test, y_test, count),
        clustering=_clustering(embeddings, users, labelled, count, rng),
    )


def oracle(
    x: NDArray[np.float32], users: NDArray[np.int64], centres: list[NDArray[np.float32]],
    anonymity: float,
) -> float:  # fmt: skip
    """The expected accuracy of the Bayes-optimal attacker judging each upload on its own
    (not grouping uploads) on uploads ``x`` of ``users``, when user ``u``'s uploads are
    drawn around one of ``centres[u]`` [n_u, rank] (its request-time positions, each
    equally likely) in a box of side ``anonymity``: for each upload, the largest user
    density over the sum of them."""
    density = np.zeros((len(x), len(centres)))
    for user, mine in enumerate(centres):
        near = np.abs(x[:, None, :] - (1.0 - anonymity) * mine[None, :, :]) <= anonymity / 2 + 1e-6
        density[:, user] = near.all(axis=2).mean(axis=1)
    total = density.sum(axis=1)
    assert np.all(density[np.arange(len(users)), users] > 0), "an upload outside its user's boxes"
    return float(np.mean(density.max(axis=1) / total))


def _nearest_centroid(
    x: NDArray[np.float32], y: NDArray[np.int64], xt: NDArray[np.float32], yt: NDArray[np.int64],
    count: int,
) -> float:  # fmt: skip
    centroids = np.zeros((count, x.shape[1]))
    np.add.at(centroids, y, x)
    centroids /= np.maximum(np.bincount(y, minlength=count), 1)[:, None]
    guess = _squared_distances(xt, centroids).argmin(axis=1)
    return float((guess == yt).mean())


def _features(x: NDArray[np.float32]) -> NDArray[np.float64]:
    scaled = (x - 0.0) / 0.5
    return np.concatenate([scaled, scaled**2, np.ones((len(x), 1))], axis=1).astype(np.float64)


def _classifier(
    x: NDArray[np.float32], y: NDArray[np.int64], xt: NDArray[np.float32], yt: NDArray[np.int64],
    count: int, steps: int = 400, lr: float = 2.0,
) -> float:  # fmt: skip
    f, ft = _features(x), _features(xt)
    weights = np.zeros((f.shape[1], count))
    onehot = np.eye(count)[y]
    # Adam-free full-batch gradient descent with a fixed step: convex, and enough steps to
    # converge on a few features.
    for _ in range(steps):
        logits = f @ weights
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        weights -= lr * (f.T @ (p - onehot)) / len(f)
    return float(((ft @ weights).argmax(axis=1) == yt).mean())


def _clustering(
    x: NDArray[np.float32], y: NDArray[np.int64], labelled: NDArray[np.bool_], count: int,
    rng: np.random.Generator, iterations: int = 30,
) -> float:  # fmt: skip
    centres = x[rng.choice(len(x), count, replace=False)].astype(np.float64)
    for _ in range(iterations):
        assign = _squared_distances(x, centres).argmin(axis=1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        sizes = np.bincount(assign, minlength=count)
        filled = sizes > 0
        centres[filled] = sums[filled] / sizes[filled, None]
    overlap = np.zeros((count, count))
    np.add.at(overlap, (assign[labelled], y[labelled]), 1.0)
    user_of_cluster = hungarian(-overlap)
    return float((user_of_cluster[assign[~labelled]] == y[~labelled]).mean())


def _squared_distances(x: NDArray[np.floating], c: NDArray[np.floating]) -> NDArray[np.float64]:
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    out: NDArray[np.float64] = (
        (x64**2).sum(1)[:, None] - 2.0 * x64 @ c64.T + (c64**2).sum(1)[None, :]
    )
    return out


def hungarian(cost: NDArray[np.float64]) -> NDArray[np.int64]:
    """The column assigned to each row of the square ``cost`` matrix, minimising the total
    (the shortest-augmenting-path Hungarian algorithm, O(n^3), inner loop in numpy)."""
    n = cost.shape[0]
    u, v = np.zeros(n + 1), np.zeros(n + 1)
    match = np.zeros(n + 1, np.int64)  # match[column] = row (1-based; 0: free)
    way = np.zeros(n + 1, np.int64)
    for row in range(1, n + 1):
        match[0] = row
        column = 0
        slack = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, bool)
        while True:
            used[column] = True
            current = match[column]
            reduced = cost[current - 1] - u[current] - v[1:]
            free = ~used[1:]
            better = free & (reduced < slack[1:])
            slack[1:][better] = reduced[better]
            way[1:][better] = column
            candidates = np.where(free, slack[1:], np.inf)
            nxt = int(np.argmin(candidates)) + 1
            delta = candidates[nxt - 1]
            u[match[used]] += delta
            v[used] -= delta
            slack[1:][free] -= delta
            column = nxt
            if match[column] == 0:
                break
        while column:
            previous = way[column]
            match[column] = match[previous]
            column = previous
    assigned = np.zeros(n, np.int64)
    assigned[match[1:] - 1] = np.arange(n)
    return assigned
