"""MovieLens as CoDA data: anonymous pool samples from before the time cut, and the
ratings after it, per user, for on-device learning experiments.

A sample is what the edge model reads (the target movie, the 20 movies rated before it,
its genres), its label (4 stars or more) and its embedding from the edge backbone
(``models.coda_split``). Nothing in a sample names its user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models import features, movielens, runtime
from models.build import HOLDOUT
from models.coda_split import EMBEDDING
from models.features import Examples

HISTORY = 20  # the edge model's history length


@dataclass(frozen=True)
class Samples:
    """Rows of edge-model inputs with labels and, once computed, embeddings."""

    item: NDArray[np.int64]  # [n]
    history: NDArray[np.int64]  # [n, HISTORY]
    genres: NDArray[np.float32]  # [n, G]
    label: NDArray[np.float32]  # [n]
    timestamp: NDArray[np.int64]  # [n]
    user: NDArray[np.int64]  # [n]; kept for the experiment's split, never sent to a pool

    def __len__(self) -> int:
        return int(self.item.shape[0])

    def take(self, rows: NDArray[Any]) -> Samples:
        return Samples(
            item=self.item[rows],
            history=self.history[rows],
            genres=self.genres[rows],
            label=self.label[rows],
            timestamp=self.timestamp[rows],
            user=self.user[rows],
        )

    def inputs(self) -> dict[str, NDArray[Any]]:
        """The backbone's (and the edge model's) inputs."""
        return {"item": self.item, "history": self.history, "genres": self.genres}

    def features(self, row: int) -> dict[str, Any]:
        """One sample's features as JSON: what a pool stores and a device trains on."""
        return {
            "item": int(self.item[row]),
            "history": [int(v) for v in self.history[row]],
            "genres": [float(v) for v in self.genres[row]],
        }


@dataclass(frozen=True)
class CodaData:
    pool: Samples  # every rating before the cut
    after: Samples  # every rating from the cut on (the users' own, on-device data)
    cut: int


def load(data_dir: Path) -> CodaData:
    """Read MovieLens and split it at the same time cut as ``tandem models build``."""
    dataset = movielens.load(data_dir)
    cut = movielens.time_cut(dataset.ratings, HOLDOUT)
    vocab = features.build_vocabulary(dataset.ratings, cut)
    examples = features.build_examples(dataset, vocab, HISTORY)
    samples = _samples(examples, dataset.ratings.user)
    before = samples.timestamp < cut
    return CodaData(
        pool=samples.take(np.flatnonzero(before)),
        after=samples.take(np.flatnonzero(~before)),
        cut=cut,
    )


def embed(backbone: bytes, samples: Samples, batch_size: int = 4096) -> NDArray[np.float32]:
    """Each sample's embedding from the backbone ONNX file, [n, 2 * dim]."""
    session = runtime.session(backbone)
    inputs = samples.inputs()
    parts = [
        np.asarray(
            session.run([EMBEDDING], {k: v[i : i + batch_size] for k, v in inputs.items()})[0],
            np.float32,
        )
        for i in range(0, len(samples), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _samples(examples: Examples, users: NDArray[np.int64]) -> Samples:
    recent = examples.recent(HISTORY)
    return Samples(
        item=recent.item,
        history=recent.history,
        genres=recent.genres,
        label=recent.label,
        timestamp=recent.timestamp,
        user=users,  # examples are in ratings order, one per rating
    )
