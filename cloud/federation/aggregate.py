"""Combining model updates into one: FedSubAvg, the FedAvg baseline, and applying the result.

Pure numpy, no database. FedSubAvg averages every embedding row over only the clients
whose data touched it, so a row few users touch keeps its full update; FedAvg averages it
over every client of the round, shrinking it toward zero by the share that did not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from device_sdk.federation_wire import ModelUpdate

Floats = NDArray[np.float32]
Ids = NDArray[np.int64]


@dataclass(frozen=True)
class SparseArrays:
    """One table's touched rows: ``ids`` (unique), ``rows`` [n, width], per-row ``counts``
    (None: each row counts the update's samples)."""

    ids: Ids
    rows: Floats
    counts: NDArray[np.float64] | None


@dataclass(frozen=True)
class UpdateArrays:
    """A model update as arrays: what the aggregation works on, and what the cloud stores."""

    samples: int
    dense: dict[str, Floats]
    sparse: dict[str, SparseArrays]

    def norm(self) -> float:
        """The L2 norm over every value the update holds."""
        total = sum(float(np.dot(v.ravel(), v.ravel())) for v in self.dense.values())
        total += sum(float(np.dot(s.rows.ravel(), s.rows.ravel())) for s in self.sparse.values())
        return float(np.sqrt(total))

    def scaled(self, factor: float) -> UpdateArrays:
        return UpdateArrays(
            samples=self.samples,
            dense={n: (v * np.float32(factor)) for n, v in self.dense.items()},
            sparse={
                n: SparseArrays(s.ids, s.rows * np.float32(factor), s.counts)
                for n, s in self.sparse.items()
            },
        )


@dataclass(frozen=True)
class Aggregate:
    """The combined update of a round: dense deltas by name, sparse deltas as (sorted ids,
    rows [n, width]) by name, and how many clients it combines."""

    dense: dict[str, np.ndarray]
    sparse: dict[str, tuple[np.ndarray, np.ndarray]]
    clients: int


def to_arrays(update: ModelUpdate) -> UpdateArrays:
    """The arrays of a validated wire update."""
    return UpdateArrays(
        samples=update.samples,
        dense={
            d.name: np.asarray(d.values, np.float32).reshape(tuple(d.shape)) for d in update.dense
        },
        sparse={
            s.name: SparseArrays(
                ids=np.asarray(s.ids, np.int64),
                rows=np.asarray(s.rows, np.float32),
                counts=None if s.counts is None else np.asarray(s.counts, np.float64),
            )
            for s in update.sparse
        },
    )


def _clipped(updates: Sequence[UpdateArrays], clip: float | None) -> list[UpdateArrays]:
    if clip is None:
        return list(updates)
    if not clip > 0:
        raise ValueError(f"clip must be positive; got {clip}.")
    out = []
    for update in updates:
        norm = update.norm()
        out.append(update.scaled(clip / norm) if norm > clip else update)
    return out


def _dense_mean(updates: Sequence[UpdateArrays]) -> dict[str, np.ndarray]:
    """Per tensor, the sample-weighted mean over every client (absent: a zero delta)."""
    total = float(sum(u.samples for u in updates))
    sums: dict[str, NDArray[np.float64]] = {}
    for update in updates:
        for name, values in update.dense.items():
            weighted = values.astype(np.float64) * update.samples
            if name in sums:
                if sums[name].shape != weighted.shape:
                    raise ValueError(f"dense delta {name!r} has different shapes across updates.")
                sums[name] += weighted
            else:
                sums[name] = weighted
    return {name: (s / total).astype(np.float32) for name, s in sums.items()}


def _sparse_mean(
    updates: Sequence[UpdateArrays], *, only_holders: bool
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per table, every touched row's weighted mean: over the clients holding it
    (``only_holders``, FedSubAvg) or over all clients with absent rows as zero (FedAvg)."""
    all_samples = float(sum(u.samples for u in updates))
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    names = sorted({name for u in updates for name in u.sparse})
    for name in names:
        parts = [(u, u.sparse[name]) for u in updates if name in u.sparse]
        widths = {s.rows.shape[1] for _, s in parts}
        if len(widths) != 1:
            raise ValueError(f"sparse delta {name!r} has different row widths across updates.")
        ids = np.unique(np.concatenate([s.ids for _, s in parts]))
        sums = np.zeros((len(ids), widths.pop()), np.float64)
        weights = np.zeros(len(ids), np.float64)
        for update, s in parts:
            if only_holders:
                w = s.counts if s.counts is not None else np.full(len(s.ids), update.samples, float)
            else:
                w = np.full(len(s.ids), update.samples, np.float64)
            at = np.searchsorted(ids, s.ids)
            sums[at] += s.rows.astype(np.float64) * w[:, None]
            weights[at] += w
        denominator = weights if only_holders else np.full(len(ids), all_samples)
        out[name] = (ids.astype(np.int64), (sums / denominator[:, None]).astype(np.float32))
    return out


def _noised(
    agg: Aggregate, noise_std: float, clip: float | None, rng: np.random.Generator | None
) -> Aggregate:
    if noise_std == 0.0:
        return agg
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0; got {noise_std}.")
    rng = rng if rng is not None else np.random.default_rng()
    std = noise_std * clip / agg.clients if clip is not None else noise_std
    return Aggregate(
        dense={
            n: (v + rng.normal(0.0, std, v.shape)).astype(np.float32) for n, v in agg.dense.items()
        },
        sparse={
            n: (ids, (rows + rng.normal(0.0, std, rows.shape)).astype(np.float32))
            for n, (ids, rows) in agg.sparse.items()
        },
        clients=agg.clients,
    )


def combine(
    updates: Sequence[UpdateArrays],
    *,
    subset: bool = True,
    clip: float | None = None,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Aggregate:
    """Aggregate updates already held as arrays: FedSubAvg (``subset``) or FedAvg."""
    if not updates:
        raise ValueError("there are no updates to aggregate.")
    clipped = _clipped(updates, clip)
    agg = Aggregate(
        dense=_dense_mean(clipped),
        sparse=_sparse_mean(clipped, only_holders=subset),
        clients=len(clipped),
    )
    return _noised(agg, noise_std, clip, rng)


def fedsubavg(
    updates: Sequence[ModelUpdate],
    *,
    clip: float | None = None,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Aggregate:
    """FedSubAvg: dense deltas by FedAvg (weighted by samples over all clients); each
    sparse row the mean over only the clients whose update holds it, weighted by the row's
    count (else the client's samples). ``clip`` bounds each update's L2 norm first;
    ``noise_std`` adds Gaussian noise (std ``noise_std * clip / clients`` with a clip)."""
    return combine(
        [to_arrays(u) for u in updates], subset=True, clip=clip, noise_std=noise_std, rng=rng
    )


def fedavg(
    updates: Sequence[ModelUpdate],
    *,
    clip: float | None = None,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Aggregate:
    """The FedAvg baseline: like :func:`fedsubavg`, but every sparse row is averaged over
    all clients, weighted by their samples, a client without the row counting as zero."""
    return combine(
        [to_arrays(u) for u in updates], subset=False, clip=clip, noise_std=noise_std, rng=rng
    )


def apply(
    base: Mapping[str, np.ndarray], agg: Aggregate, *, lr: float = 1.0
) -> dict[str, np.ndarray]:
    """``base`` with ``lr`` times the aggregate added: dense tensors whole, sparse deltas to
    their rows. ``base`` is not changed; a name or shape it lacks raises ValueError."""
    out = {name: np.array(values, copy=True) for name, values in base.items()}
    for name, delta in agg.dense.items():
        if name not in out:
            raise ValueError(f"the base has no tensor {name!r}.")
        if out[name].shape != delta.shape:
            raise ValueError(
                f"dense delta {name!r} has shape {delta.shape}; the base's is {out[name].shape}."
            )
        out[name] = (out[name] + lr * delta).astype(out[name].dtype)
    for name, (ids, rows) in agg.sparse.items():
        if name not in out:
            raise ValueError(f"the base has no tensor {name!r}.")
        table = out[name]
        if table.ndim != 2 or rows.ndim != 2 or table.shape[1] != rows.shape[1]:
            raise ValueError(
                f"sparse delta {name!r} has rows of shape {rows.shape[1:]}; "
                f"the base table is {table.shape}."
            )
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= table.shape[0]):
            raise ValueError(f"sparse delta {name!r} names rows outside the table's {len(table)}.")
        table[ids] = (table[ids] + lr * rows).astype(table.dtype)
    return out
