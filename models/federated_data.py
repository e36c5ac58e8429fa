"""MovieLens for the federated model: the split, the catalogue vocabulary, and the user
statistics the anonymous user embedding is drawn around.

- **Split**: one global cut at the median timestamp. Ratings before it train the base
  model centrally; the users who rate after it are the devices (almost none of them rated
  before it), each with its own post-cut ratings split by time into local training data
  and held-out test data.
- **Vocabulary**: every movie in ``movies.csv`` (the public catalogue), so rows exist for
  movies first rated after the cut; they start at zero and only federated rounds train them.
- **User statistics** (``STATS`` numbers per user, from their earlier ratings only): the
  click rate shrunk toward 0.5, then the mean of ``basis`` rows of the movies they rated,
  signed by click / no click. With a ``half_life`` (in ratings) every mean is weighted by
  ``2 ** (-age / half_life)``, ``age`` counting the user's later ratings: *recent*
  behaviour, the statistic as the device has it when a request is made. ``basis`` is a
  shared low-rank item basis (the top right singular vectors of the pre-cut user x movie
  like/dislike matrix) shipped with the model. ``device_sdk/_anon_embedding.py`` computes
  the very same numbers on the device (``tests/models/test_federated.py`` holds the two
  equal).
- **Quantiles**: each statistic's population quantiles over pre-cut users (with a
  ``half_life``: over every pre-cut rating's request-time statistics), shipped too; the
  device maps its statistics through them onto [-0.5, 0.5] (population ranks, centred).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models import movielens
from models.features import Vocabulary
from models.movielens import Dataset

HOLDOUT = 0.5  # ratings from the median timestamp on belong to the devices
STATS = 4  # click rate + 3 basis directions
QUANTILES = 101
PRIOR_CLICK = 0.5
PRIOR_WEIGHT = 5.0


@dataclass(frozen=True)
class Ratings:
    """Ratings in time order as model inputs: item index, genres, click, user, time."""

    user: NDArray[np.int64]
    item: NDArray[np.int64]
    genres: NDArray[np.float32]
    click: NDArray[np.float32]
    timestamp: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, rows: NDArray[np.int64] | NDArray[np.bool_]) -> Ratings:
        return Ratings(
            self.user[rows], self.item[rows], self.genres[rows], self.click[rows],
            self.timestamp[rows],
        )  # fmt: skip


@dataclass(frozen=True)
class FederatedData:
    vocab: Vocabulary
    genre_names: tuple[str, ...]
    cut: int
    central: Ratings  # before the cut
    devices: Ratings  # from the cut on

    @property
    def vocab_size(self) -> int:
        return self.vocab.size


def load(data_dir: Path) -> FederatedData:
    """Read MovieLens from ``data_dir`` and split it at the median timestamp."""
    dataset = movielens.load(data_dir)
    return split(dataset)


def split(dataset: Dataset) -> FederatedData:
    ratings = dataset.ratings
    cut = movielens.time_cut(ratings, HOLDOUT)
    vocab = Vocabulary(np.unique(dataset.movies.ids).astype(np.int64))
    every = Ratings(
        user=ratings.user,
        item=vocab.index(ratings.movie),
        genres=dataset.movies.genres_of(ratings.movie),
        click=ratings.click,
        timestamp=ratings.timestamp,
    )
    before = ratings.timestamp < cut
    return FederatedData(
        vocab=vocab,
        genre_names=dataset.movies.genre_names,
        cut=cut,
        central=every.take(before),
        devices=every.take(~before),
    )


def fit_basis(ratings: Ratings, vocab_size: int, rank: int = STATS - 1) -> NDArray[np.float32]:
    """Item basis [vocab, rank]: the top right singular vectors of the user x movie matrix
    of +1 (click) / -1, rows scaled by 1/sqrt(ratings of the user); unrated movies get 0."""
    users, row = np.unique(ratings.user, return_inverse=True)
    matrix = np.zeros((len(users), vocab_size), np.float32)
    matrix[row, ratings.item] = 2.0 * ratings.click - 1.0
    counts = np.bincount(row, minlength=len(users)).astype(np.float32)
    matrix /= np.sqrt(np.maximum(counts, 1.0))[:, None]
    _, _, vt = np.linalg.svd(matrix, full_matrices=False)
    basis = vt[:rank].T * np.sqrt(vocab_size)  # entries of order one
    # A singular vector's sign is arbitrary; fix it so the build is deterministic.
    signs = np.sign(basis.sum(axis=0))
    signs[signs == 0] = 1.0
    out: NDArray[np.float32] = (basis * signs).astype(np.float32)
    return out


def statistics(
    clicks: NDArray[np.float64], signed_basis_sum: NDArray[np.float64], count: NDArray[np.float64]
) -> NDArray[np.float32]:
    """``STATS`` numbers from a user's click count, sum of signed basis rows and count."""
    shrunk = count + PRIOR_WEIGHT
    rate = (clicks + PRIOR_CLICK * PRIOR_WEIGHT) / shrunk
    taste = signed_basis_sum / shrunk[:, None]
    return np.concatenate([rate[:, None], taste], axis=1).astype(np.float32)


def earlier_statistics(
    ratings: Ratings, basis: NDArray[np.float32], half_life: float | None = None
) -> NDArray[np.float32]:
    """For every rating, the user's statistics over their ratings strictly before it in
    time order (ratings of the same second count as earlier: the history as the device
    would have it), decayed by ``half_life`` ratings if given."""
    if half_life is not None:
        return _decayed_earlier_statistics(ratings, basis, half_life)
    order = np.argsort(ratings.user, kind="stable")  # time order within each user
    user = ratings.user[order]
    click = ratings.click[order].astype(np.float64)
    signed = (2.0 * click - 1.0)[:, None] * basis[ratings.item[order]].astype(np.float64)
    new = np.ones(len(user), bool)
    new[1:] = user[1:] != user[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(len(user)), 0))
    click_sum = np.concatenate([[0.0], np.cumsum(click)])
    signed_sum = np.concatenate([np.zeros((1, basis.shape[1])), np.cumsum(signed, axis=0)])
    position = np.arange(len(user))
    stats = statistics(
        click_sum[position] - click_sum[start],
        signed_sum[position] - signed_sum[start],
        (position - start).astype(np.float64),
    )
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return stats[back]


def _decayed_earlier_statistics(
    ratings: Ratings, basis: NDArray[np.float32], half_life: float
) -> NDArray[np.float32]:
    # The running sums the device keeps (``AnonymousEmbedding.observe``), one rating at a
    # time: a rating's statistics are read before the rating joins them.
    keep = 0.5 ** (1.0 / half_life)
    signed = (2.0 * ratings.click.astype(np.float64) - 1.0)[:, None] * basis[ratings.item]
    click = ratings.click.astype(np.float64)
    sums: dict[int, tuple[float, float, NDArray[np.float64]]] = {}
    count = np.empty(len(ratings))
    clicks = np.empty(len(ratings))
    signed_sum = np.empty((len(ratings), basis.shape[1]))
    for row, user in enumerate(ratings.user.tolist()):
        n, c, b = sums.get(user, (0.0, 0.0, np.zeros(basis.shape[1])))
        count[row], clicks[row], signed_sum[row] = n, c, b
        sums[user] = (keep * n + 1.0, keep * c + click[row], keep * b + signed[row])
    return statistics(clicks, signed_sum, count)


def user_statistics(ratings: Ratings, basis: NDArray[np.float32]) -> NDArray[np.float32]:
    """Each distinct user's statistics over all of their ``ratings`` (sorted by user id)."""
    _, row = np.unique(ratings.user, return_inverse=True)
    users = int(row.max()) + 1 if len(row) else 0
    click = np.bincount(row, weights=ratings.click, minlength=users).astype(np.float64)
    signed = (2.0 * ratings.click - 1.0)[:, None] * basis[ratings.item]
    sums: NDArray[np.float64] = np.stack(
        [np.bincount(row, weights=signed[:, j], minlength=users) for j in range(basis.shape[1])],
        axis=1,
    )
    count = np.bincount(row, minlength=users).astype(np.float64)
    return statistics(click, sums, count)


def population_quantiles(stats: NDArray[np.float32]) -> NDArray[np.float32]:
    """[STATS, QUANTILES]: the quantiles of each statistic over users, strictly increasing."""
    grid = np.linspace(0.0, 1.0, QUANTILES)
    table = np.quantile(stats.astype(np.float64), grid, axis=0).T
    # Ties (many users at the prior) would make the map a step; spread them by a hair.
    table += np.arange(QUANTILES)[None, :] * 1e-7
    out: NDArray[np.float32] = table.astype(np.float32)
    return out


def ranks(stats: NDArray[np.float32], quantiles: NDArray[np.float32]) -> NDArray[np.float32]:
    """Statistics mapped onto their population rank, centred: values in [-0.5, 0.5]."""
    grid = np.linspace(0.0, 1.0, quantiles.shape[1])
    columns = [np.interp(stats[:, j], quantiles[j], grid) for j in range(stats.shape[1])]
    out: NDArray[np.float32] = (np.stack(columns, axis=1) - 0.5).astype(np.float32)
    return out
