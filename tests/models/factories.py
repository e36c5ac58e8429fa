"""MovieLens for tests: the real small data set, and hand-made directories for tests that
need to know every rating."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.services import in_ci

MOVIELENS = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "movielens-small"

MOVIES = [
    (10, "Alpha (1990)", "Action|Comedy"),
    (20, "Beta, The (1991)", "Drama"),
    (30, "Gamma (1992)", "Comedy"),
    (40, "Delta (1993)", "(no genres listed)"),
]


def write_movielens(
    directory: Path,
    ratings: Iterable[tuple[int, int, float, int]],
    movies: Iterable[tuple[int, str, str]] = MOVIES,
) -> Path:
    """Write ratings.csv (user, movie, stars, timestamp) and movies.csv into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u},{m},{r:g},{t}" for u, m, r, t in ratings]
    (directory / "ratings.csv").write_text("\n".join(lines) + "\n")
    movie_lines = ["movieId,title,genres"]
    movie_lines += [f'{m},"{title}",{genres}' for m, title, genres in movies]
    (directory / "movies.csv").write_text("\n".join(movie_lines) + "\n")
    return directory


def require_movielens() -> Path:
    """The MovieLens small data set beside the repository; skip (fail under CI) if absent."""
    if not (MOVIELENS / "ratings.csv").is_file():
        message = f"MovieLens small not found at {MOVIELENS}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return MOVIELENS
