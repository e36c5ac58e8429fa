"""A batch of requests as the matrices the predictor reads.

Texts go through :mod:`device_sdk.text_features`, the same code a device runs, into a
compressed sparse row matrix (numpy only); plain feature vectors form a dense matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from device_sdk.text_features import FeatureSpec, HashedText, featurize

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SparseRows:
    """Rows of hashed features in CSR form: row ``r`` holds ``indices[ptr[r]:ptr[r+1]]``
    with ``values`` alongside; ``row`` repeats each row number once per stored entry."""

    indices: IntArray
    values: FloatArray
    ptr: IntArray
    row: IntArray
    dim: int

    @property
    def n_rows(self) -> int:
        return len(self.ptr) - 1

    def weighted(self, idf: FloatArray) -> SparseRows:
        """Each value times its index's ``idf``, each row scaled back to unit length."""
        values = self.values * idf[self.indices]
        norms = np.sqrt(np.bincount(self.row, weights=values * values, minlength=self.n_rows))
        values = values / np.where(norms > 0, norms, 1.0)[self.row]
        return SparseRows(self.indices, values, self.ptr, self.row, self.dim)

    def dot(self, weights: FloatArray) -> FloatArray:
        """``X @ weights`` for ``weights`` of shape (dim, k): shape (rows, k)."""
        out = np.zeros((self.n_rows, weights.shape[1]))
        for k in range(weights.shape[1]):
            out[:, k] = np.bincount(
                self.row, weights=self.values * weights[self.indices, k], minlength=self.n_rows
            )
        return out

    def transpose_dot(self, residuals: FloatArray) -> FloatArray:
        """``X.T @ residuals`` for ``residuals`` of shape (rows, k): shape (dim, k)."""
        out = np.zeros((self.dim, residuals.shape[1]))
        for k in range(residuals.shape[1]):
            out[:, k] = np.bincount(
                self.indices, weights=self.values * residuals[self.row, k], minlength=self.dim
            )
        return out


@dataclass(frozen=True)
class Batch:
    """Featurized requests: the texts and their hashed features (kept for key tokens), the
    sparse matrix, and the dense feature matrix (shape (rows, 0) without plain features)."""

    raw: list[str]
    texts: list[HashedText]
    sparse: SparseRows
    dense: FloatArray

    def split(self, at: int) -> tuple[Batch, Batch]:
        """The rows before ``at`` and the rows from ``at`` on, as two batches."""
        dim = self.sparse.dim
        return (
            Batch(self.raw[:at], self.texts[:at], to_sparse(self.texts[:at], dim), self.dense[:at]),
            Batch(self.raw[at:], self.texts[at:], to_sparse(self.texts[at:], dim), self.dense[at:]),
        )


def inverse_document_frequency(rows: SparseRows) -> FloatArray:
    """Per hash bucket, ``log((1 + n) / (1 + df)) + 1``: rare terms weigh more."""
    df = np.bincount(rows.indices, minlength=rows.dim)
    idf: FloatArray = np.log((1.0 + rows.n_rows) / (1.0 + df)) + 1.0
    return idf


def to_sparse(texts: Sequence[HashedText], dim: int) -> SparseRows:
    lengths = np.fromiter((len(t.indices) for t in texts), dtype=np.int64, count=len(texts))
    ptr = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    empty = np.zeros(0)
    return SparseRows(
        indices=np.concatenate([empty.astype(np.int64), *(t.indices for t in texts)]),
        values=np.concatenate([empty, *(t.values for t in texts)]),
        ptr=ptr,
        row=np.repeat(np.arange(len(texts), dtype=np.int64), lengths),
        dim=dim,
    )


def make_batch(
    texts: Sequence[str | None],
    features: Sequence[Sequence[float] | None],
    *,
    spec: FeatureSpec,
    n_features: int,
) -> Batch:
    """Featurize requests; a missing text has no hashed features, missing plain features
    are zeros (the caller validated that each vector has ``n_features`` entries)."""
    raw = [text or "" for text in texts]
    hashed = [featurize(text, spec) for text in raw]
    dense = np.zeros((len(texts), n_features))
    for r, vector in enumerate(features):
        if vector is not None and n_features:
            dense[r] = np.asarray(vector, dtype=np.float64)
    return Batch(raw=raw, texts=hashed, sparse=to_sparse(hashed, spec.dim), dense=dense)
