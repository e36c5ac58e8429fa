"""MovieLens ratings and movies, read into dense arrays, and the global time split.

A "click" is a rating of 4 stars or more. The split is by time: one global cut at a
quantile of the rating timestamps; every rating at or after the cut is held out.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models.errors import DatasetError

CLICK_THRESHOLD = 4.0
NO_GENRES = "(no genres listed)"


@dataclass(frozen=True)
class Ratings:
    """Every rating, sorted by (timestamp, user, movie) so that row order is time order."""

    user: NDArray[np.int64]
    movie: NDArray[np.int64]  # MovieLens movieId, not a dense index
    rating: NDArray[np.float32]
    timestamp: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def click(self) -> NDArray[np.float32]:
        return (self.rating >= CLICK_THRESHOLD).astype(np.float32)


@dataclass(frozen=True)
class Movies:
    """Genres of every movie: a multi-hot row per movieId in ``ids``."""

    ids: NDArray[np.int64]
    genre_names: tuple[str, ...]
    genres: NDArray[np.float32]  # [movies, genres]

    def genres_of(self, movie: NDArray[np.int64]) -> NDArray[np.float32]:
        """Multi-hot genres for each movieId; an unknown movie has none."""
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        pos = np.searchsorted(sorted_ids, movie).clip(0, max(len(sorted_ids) - 1, 0))
        found = sorted_ids[pos] == movie if len(sorted_ids) else np.zeros(movie.shape, bool)
        out = np.zeros((*movie.shape, len(self.genre_names)), np.float32)
        out[found] = self.genres[order[pos[found]]]
        return out


@dataclass(frozen=True)
class Dataset:
    ratings: Ratings
    movies: Movies


def load(data_dir: Path) -> Dataset:
    """Read ``ratings.csv`` and ``movies.csv`` from a MovieLens directory."""
    return Dataset(ratings=_read_ratings(data_dir / "ratings.csv"), movies=_read_movies(data_dir))


def time_cut(ratings: Ratings, holdout: float) -> int:
    """The timestamp at which the last ``holdout`` share of ratings begins."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be a share in (0, 1), not {holdout}")
    return int(np.quantile(ratings.timestamp, 1.0 - holdout, method="higher"))


def _rows(path: Path, columns: tuple[str, ...]) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(header[: len(columns)]) != columns:
                raise DatasetError(
                    f"{path} must start with the header {','.join(columns)}; found "
                    f"{','.join(header or []) or 'nothing'}. Is this a MovieLens directory?"
                )
            return [row for row in reader if row]
    except FileNotFoundError as exc:
        raise DatasetError(
            f"{path} does not exist; --data must be a MovieLens directory holding "
            "ratings.csv and movies.csv."
        ) from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def _read_ratings(path: Path) -> Ratings:
    rows = _rows(path, ("userId", "movieId", "rating", "timestamp"))
    if not rows:
        raise DatasetError(f"{path} holds no ratings.")
    try:
        table = np.array([[float(v) for v in row[:4]] for row in rows], dtype=np.float64)
    except (ValueError, IndexError) as exc:
        raise DatasetError(
            f"{path}: every row needs numeric userId,movieId,rating,timestamp"
        ) from exc
    if not np.isfinite(table).all() or (table[:, 2] < 0).any() or (table[:, 2] > 5).any():
        raise DatasetError(f"{path}: ratings must be finite numbers between 0 and 5 stars.")
    user = table[:, 0].astype(np.int64)
    movie = table[:, 1].astype(np.int64)
    timestamp = table[:, 3].astype(np.int64)
    order = np.lexsort((movie, user, timestamp))
    return Ratings(
        user=user[order],
        movie=movie[order],
        rating=table[order, 2].astype(np.float32),
        timestamp=timestamp[order],
    )


def _read_movies(data_dir: Path) -> Movies:
    path = data_dir / "movies.csv"
    rows = _rows(path, ("movieId", "title", "genres"))
    try:
        ids = np.array([int(row[0]) for row in rows], dtype=np.int64)
        genre_lists = [[g for g in row[2].split("|") if g and g != NO_GENRES] for row in rows]
    except (ValueError, IndexError) as exc:
        raise DatasetError(f"{path}: every row needs movieId,title,genres") from exc
    names = tuple(sorted({g for genres in genre_lists for g in genres}))
    column = {name: i for i, name in enumerate(names)}
    genres = np.zeros((len(rows), len(names)), np.float32)
    for i, movie_genres in enumerate(genre_lists):
        genres[i, [column[g] for g in movie_genres]] = 1.0
    return Movies(ids=ids, genre_names=names, genres=genres)
