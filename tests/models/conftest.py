"""Fixtures of the models tests: the MovieLens data, one quick build shared by the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.build import BuildResult, build_models
from tests.models.factories import require_movielens


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    return require_movielens()


@pytest.fixture(scope="session")
def quick_build(movielens_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """One quick build (seed 0) that the tests read but never modify."""
    return build_models(movielens_dir, tmp_path_factory.mktemp("quick-build"), seed=0, quick=True)
