"""Reading MovieLens and cutting it by time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import movielens
from models.errors import DatasetError
from tests.models.factories import write_movielens


def test_ratings_come_back_in_time_order_with_click_labels(tmp_path: Path) -> None:
    """Rows are sorted by timestamp, and a click is a rating of 4 stars or more."""
    data = write_movielens(tmp_path, [(1, 10, 3.5, 300), (2, 20, 4.0, 100), (1, 30, 5, 200)])
    ratings = movielens.load(data).ratings
    assert ratings.timestamp.tolist() == [100, 200, 300]
    assert ratings.movie.tolist() == [20, 30, 10]
    assert ratings.click.tolist() == [1.0, 1.0, 0.0]


def test_genres_are_multi_hot_and_ignore_the_no_genre_marker(tmp_path: Path) -> None:
    """Genres are sorted names; '(no genres listed)' and unknown movies give no genre."""
    movies = movielens.load(write_movielens(tmp_path, [(1, 10, 4, 1)])).movies
    assert movies.genre_names == ("Action", "Comedy", "Drama")
    hot = movies.genres_of(np.array([10, 40, 999]))
    assert hot.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]


def test_a_missing_ratings_file_names_the_file(tmp_path: Path) -> None:
    """Loading a directory without ratings.csv raises DatasetError naming that file."""
    with pytest.raises(DatasetError, match=r"ratings\.csv does not exist"):
        movielens.load(tmp_path)


def test_a_wrong_header_is_refused(tmp_path: Path) -> None:
    """A ratings file with other columns is refused with the header it should have."""
    write_movielens(tmp_path, [(1, 10, 4, 1)])
    (tmp_path / "ratings.csv").write_text("a,b,c,d\n1,2,3,4\n")
    with pytest.raises(DatasetError, match="userId,movieId,rating,timestamp"):
        movielens.load(tmp_path)


def test_a_rating_out_of_range_is_refused(tmp_path: Path) -> None:
    """Stars outside 0-5 (here 7) are refused rather than trained on."""
    data = write_movielens(tmp_path, [(1, 10, 7, 1)])
    with pytest.raises(DatasetError, match="between 0 and 5"):
        movielens.load(data)


def test_the_time_cut_holds_out_the_latest_share(movielens_dir: Path) -> None:
    """A 20% hold-out cut leaves about 20% of MovieLens ratings at or after it."""
    ratings = movielens.load(movielens_dir).ratings
    cut = movielens.time_cut(ratings, 0.2)
    held_out = float((ratings.timestamp >= cut).mean())
    assert 0.19 < held_out < 0.21
