"""Examples: each rating with only what was known before it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from models import features, movielens
from tests.models.factories import write_movielens

# User 1 rates 10 at t=1, 20 and 30 in the same second t=5, then 40 at t=9 (after the cut, 6).
RATINGS = [(1, 10, 5.0, 1), (1, 20, 2.0, 5), (1, 30, 4.0, 5), (1, 40, 3.0, 9), (2, 10, 1.0, 3)]


@pytest.fixture
def small(tmp_path: Path) -> tuple[movielens.Dataset, features.Vocabulary, features.Examples]:
    dataset = movielens.load(write_movielens(tmp_path, RATINGS))
    vocab = features.build_vocabulary(dataset.ratings, before=6)
    return dataset, vocab, features.build_examples(dataset, vocab, history_length=3)


def _row(dataset: movielens.Dataset, user: int, movie: int) -> int:
    ratings = dataset.ratings
    return int(np.flatnonzero((ratings.user == user) & (ratings.movie == movie))[0])


def test_vocabulary_indexes_training_movies_and_maps_the_rest_to_zero(
    small: tuple[movielens.Dataset, features.Vocabulary, features.Examples],
) -> None:
    """Movies first rated after the cut (40) and unseen movies get index 0, the padding."""
    _, vocab, _ = small
    assert vocab.to_json() == {"10": 1, "20": 2, "30": 3}
    assert vocab.index(np.array([10, 30, 40, 77])).tolist() == [1, 3, 0, 0]


def test_history_holds_only_strictly_earlier_ratings(
    small: tuple[movielens.Dataset, features.Vocabulary, features.Examples],
) -> None:
    """A rating's history excludes the ratings the user gave in the same second or later."""
    dataset, _, examples = small
    at_five = _row(dataset, 1, 30)
    assert examples.history[at_five].tolist() == [0, 0, 1]  # only movie 10, from t=1
    assert examples.history_ratings[at_five].tolist() == [0.0, 0.0, 5.0]
    last = _row(dataset, 1, 40)
    assert examples.history[last].tolist() == [1, 2, 3]
    assert examples.history[_row(dataset, 1, 10)].tolist() == [0, 0, 0]


def test_user_statistics_count_only_earlier_ratings(
    small: tuple[movielens.Dataset, features.Vocabulary, features.Examples],
) -> None:
    """The user's count, mean stars and genre profile at t=5 reflect the t=1 rating alone."""
    dataset, _, examples = small
    row = _row(dataset, 1, 20)
    assert examples.user_stats[row, 0] == pytest.approx(np.log1p(1))
    assert examples.user_stats[row, 1] == pytest.approx((5.0 + 3.5 * 5) / 6 - 3.5)
    assert examples.user_genres[row].tolist() == [1.0, 1.0, 0.0]  # movie 10: Action|Comedy


def test_item_statistics_count_only_earlier_ratings_of_the_movie(
    small: tuple[movielens.Dataset, features.Vocabulary, features.Examples],
) -> None:
    """Movie 10 is unrated before t=1 and has one rating (5 stars) before user 2's at t=3."""
    dataset, _, examples = small
    assert examples.item_stats[_row(dataset, 1, 10)].tolist() == [0.0, 0.0, 0.0]
    second = examples.item_stats[_row(dataset, 2, 10)]
    assert second[0] == pytest.approx(np.log1p(1))
    assert second[2] == pytest.approx((1.0 + 0.5 * 5) / 6 - 0.5)


def test_no_movielens_example_sees_its_own_or_later_ratings(movielens_dir: Path) -> None:
    """On the real data every history item was rated by that user before the example."""
    dataset = movielens.load(movielens_dir)
    cut = movielens.time_cut(dataset.ratings, 0.2)
    vocab = features.build_vocabulary(dataset.ratings, cut)
    examples = features.build_examples(dataset, vocab, history_length=100)
    ratings = dataset.ratings
    first_rated: dict[tuple[int, int], int] = defaultdict(lambda: 2**62)
    for user, item, ts in zip(
        ratings.user.tolist(),
        vocab.index(ratings.movie).tolist(),
        ratings.timestamp.tolist(),
        strict=True,
    ):
        first_rated[user, item] = min(first_rated[user, item], ts)
    rows = np.random.default_rng(0).choice(len(examples), 2000, replace=False)
    for row in rows.tolist():
        ts, user = int(ratings.timestamp[row]), int(ratings.user[row])
        for item in examples.history[row][examples.history[row] > 0].tolist():
            assert first_rated[user, item] < ts
        assert (examples.history_ratings[row] > 0).sum() >= (examples.history[row] > 0).sum()
