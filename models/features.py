"""Turn each rating into one example: the target movie, and what was known just before it.

An example's features come only from ratings with an earlier timestamp: the user's earlier
ratings (their history, genre profile and statistics) and everyone's earlier ratings of the
movie (its popularity and statistics). Ratings a user gave in the same second as the target
are not in its history, so nothing a user did at or after the target can leak into it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.movielens import Dataset, Ratings

PADDING = 0  # item index of padding and of movies outside the vocabulary
# Statistics are shrunk toward these priors with this many pseudo-ratings, so that a movie
# or user with one rating does not look certain.
PRIOR_RATING = 3.5
PRIOR_CLICK = 0.5
PRIOR_WEIGHT = 5.0


@dataclass(frozen=True)
class Vocabulary:
    """Dense item indices: movie ``movie_ids[i]`` is index ``i + 1``; 0 is padding/unknown."""

    movie_ids: NDArray[np.int64]  # sorted

    @property
    def size(self) -> int:
        return int(self.movie_ids.shape[0]) + 1

    def index(self, movie: NDArray[np.int64]) -> NDArray[np.int64]:
        pos = np.searchsorted(self.movie_ids, movie)
        inside = pos < len(self.movie_ids)
        found = np.zeros(movie.shape, bool)
        found[inside] = self.movie_ids[pos[inside]] == movie[inside]
        return np.where(found, pos + 1, PADDING).astype(np.int64)

    def to_json(self) -> dict[str, int]:
        return {str(int(m)): i + 1 for i, m in enumerate(self.movie_ids)}


def build_vocabulary(ratings: Ratings, before: int) -> Vocabulary:
    """Every movie rated before the time cut: the held-out period adds no index."""
    return Vocabulary(np.unique(ratings.movie[ratings.timestamp < before]).astype(np.int64))


@dataclass(frozen=True)
class Examples:
    """One row per rating, in time order. History is oldest first, left-padded with 0."""

    item: NDArray[np.int64]  # [n]
    history: NDArray[np.int64]  # [n, L]
    history_ratings: NDArray[np.float32]  # [n, L] stars, 0 at padding
    genres: NDArray[np.float32]  # [n, G] the target movie's genres
    user_genres: NDArray[np.float32]  # [n, G] share of each genre in the user's history
    item_stats: NDArray[np.float32]  # [n, 3]
    user_stats: NDArray[np.float32]  # [n, 3]
    label: NDArray[np.float32]  # [n] 1 = click (rating >= 4)
    timestamp: NDArray[np.int64]  # [n]

    def __len__(self) -> int:
        return int(self.item.shape[0])

    def take(self, rows: NDArray[Any]) -> Examples:
        """The examples at ``rows`` (indices or a boolean mask)."""
        return Examples(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def recent(self, length: int) -> Examples:
        """The same examples with only the ``length`` most recent history items."""
        return replace(
            self,
            history=np.ascontiguousarray(self.history[:, -length:]),
            history_ratings=np.ascontiguousarray(self.history_ratings[:, -length:]),
        )


def build_examples(dataset: Dataset, vocab: Vocabulary, history_length: int) -> Examples:
    """Features for every rating in ``dataset`` (see the module docstring for what is known)."""
    ratings = dataset.ratings
    movie_genres = dataset.movies.genres_of(ratings.movie)
    items = vocab.index(ratings.movie)
    history, history_ratings, user_genres, user_stats = _user_side(
        ratings, items, movie_genres, history_length
    )
    return Examples(
        item=items,
        history=history,
        history_ratings=history_ratings,
        genres=movie_genres,
        user_genres=user_genres,
        item_stats=_item_stats(ratings),
        user_stats=user_stats,
        label=ratings.click,
        timestamp=ratings.timestamp,
    )


def _earlier(keys: NDArray[np.int64], timestamp: NDArray[np.int64]) -> tuple[Any, Any]:
    """For rows sorted by (key, time): where each key's rows begin, and where the rows of
    the same key and second begin (so rows [group_start, same_second_start) are earlier)."""
    n = keys.shape[0]
    position = np.arange(n)
    new_key = np.ones(n, bool)
    new_key[1:] = keys[1:] != keys[:-1]
    new_second = new_key.copy()
    new_second[1:] |= timestamp[1:] != timestamp[:-1]
    key_start = np.maximum.accumulate(np.where(new_key, position, 0))
    second_start = np.maximum.accumulate(np.where(new_second, position, 0))
    return key_start, second_start


def _prefix(values: NDArray[Any]) -> NDArray[np.float64]:
    """Exclusive prefix sums: row k is the sum of the first k values."""
    out = np.zeros((values.shape[0] + 1, *values.shape[1:]), np.float64)
    np.cumsum(values, axis=0, out=out[1:])
    return out


def _stats(
    count: NDArray[Any], rating_sum: NDArray[np.float64], click_sum: NDArray[np.float64]
) -> NDArray[np.float32]:
    """log(1 + count), then mean rating and click rate shrunk toward the priors, centred."""
    shrunk = count + PRIOR_WEIGHT
    return np.stack(
        [
            np.log1p(count),
            (rating_sum + PRIOR_RATING * PRIOR_WEIGHT) / shrunk - PRIOR_RATING,
            (click_sum + PRIOR_CLICK * PRIOR_WEIGHT) / shrunk - PRIOR_CLICK,
        ],
        axis=1,
    ).astype(np.float32)


def _user_side(
    ratings: Ratings,
    items: NDArray[np.int64],
    movie_genres: NDArray[np.float32],
    length: int,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    order = np.argsort(ratings.user, kind="stable")  # ratings are in time order already
    start, end = _earlier(ratings.user[order], ratings.timestamp[order])
    slots = end[:, None] - length + np.arange(length)[None, :]
    valid = slots >= start[:, None]
    slots = slots.clip(0)
    history = np.where(valid, items[order][slots], PADDING)
    stars = np.where(valid, ratings.rating[order][slots], 0.0).astype(np.float32)
    count = (end - start).astype(np.float64)
    genre_sum = _prefix(movie_genres[order])
    profile = (genre_sum[end] - genre_sum[start]) / np.maximum(count, 1.0)[:, None]
    rating_sum = _prefix(ratings.rating[order])
    click_sum = _prefix(ratings.click[order])
    stats = _stats(count, rating_sum[end] - rating_sum[start], click_sum[end] - click_sum[start])
    back = np.empty_like(order)
    back[order] = np.arange(order.shape[0])
    return (
        np.ascontiguousarray(history[back]).astype(np.int64),
        np.ascontiguousarray(stars[back]),
        profile[back].astype(np.float32),
        stats[back],
    )


def _item_stats(ratings: Ratings) -> NDArray[np.float32]:
    order = np.argsort(ratings.movie, kind="stable")
    start, end = _earlier(ratings.movie[order], ratings.timestamp[order])
    rating_sum = _prefix(ratings.rating[order])
    click_sum = _prefix(ratings.click[order])
    stats = _stats(
        (end - start).astype(np.float64),
        rating_sum[end] - rating_sum[start],
        click_sum[end] - click_sum[start],
    )
    back = np.empty_like(order)
    back[order] = np.arange(order.shape[0])
    return stats[back]
