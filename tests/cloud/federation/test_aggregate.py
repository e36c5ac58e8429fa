"""FedSubAvg, FedAvg, clipping, noise, and applying an aggregate to a model's tensors."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from cloud.federation import codec
from cloud.federation.aggregate import Aggregate, apply, fedavg, fedsubavg, to_arrays
from device_sdk.federation_wire import ModelUpdate


def _update(
    samples: int,
    *,
    dense: list[float] | None = None,
    ids: list[int] | None = None,
    rows: list[list[float]] | None = None,
    counts: list[int] | None = None,
) -> ModelUpdate:
    body: dict[str, Any] = {
        "key": str(uuid.uuid4()),
        "model": "recs",
        "base_version": 1,
        "samples": samples,
        "dense": [{"name": "w", "shape": [2], "values": dense}] if dense is not None else [],
        "sparse": (
            [{"name": "e", "ids": ids, "rows": rows, "counts": counts}] if ids is not None else []
        ),
    }
    return ModelUpdate.model_validate(body)


def test_fedsubavg_averages_a_row_over_only_the_clients_holding_it() -> None:
    """A row one client of three touched keeps that client's delta whole."""
    updates = [
        _update(10, ids=[0, 5], rows=[[1.0], [4.0]]),
        _update(30, ids=[0], rows=[[3.0]]),
        _update(60, ids=[1], rows=[[2.0]]),
    ]
    agg = fedsubavg(updates)
    ids, rows = agg.sparse["e"]
    assert ids.tolist() == [0, 1, 5]
    np.testing.assert_allclose(rows[:, 0], [(10 * 1 + 30 * 3) / 40, 2.0, 4.0], rtol=1e-6)
    assert agg.clients == 3 and ids.dtype == np.int64 and rows.dtype == np.float32


def test_fedsubavg_weights_rows_by_their_counts() -> None:
    """Per-row counts, when given, weigh a row instead of the client's samples."""
    updates = [
        _update(100, ids=[0], rows=[[1.0]], counts=[1]),
        _update(1, ids=[0], rows=[[4.0]], counts=[3]),
    ]
    _, rows = fedsubavg(updates).sparse["e"]
    np.testing.assert_allclose(rows[0, 0], (1 * 1 + 3 * 4) / 4, rtol=1e-6)


def test_fedavg_shrinks_rare_rows_toward_zero() -> None:
    """The baseline averages every row over all clients, an absent row counting as zero."""
    updates = [
        _update(10, ids=[0, 5], rows=[[1.0], [4.0]]),
        _update(30, ids=[0], rows=[[3.0]]),
        _update(60, ids=[1], rows=[[2.0]]),
    ]
    ids, rows = fedavg(updates).sparse["e"]
    assert ids.tolist() == [0, 1, 5]
    np.testing.assert_allclose(rows[:, 0], [(10 + 90) / 100, 120 / 100, 40 / 100], rtol=1e-6)


def test_dense_deltas_are_sample_weighted_in_both() -> None:
    """Dense tensors are FedAvg'd (weighted by samples) by both aggregators."""
    updates = [_update(1, dense=[1.0, 0.0]), _update(3, dense=[5.0, 4.0])]
    for agg in (fedsubavg(updates), fedavg(updates)):
        np.testing.assert_allclose(agg.dense["w"], [4.0, 3.0], rtol=1e-6)


def test_clip_bounds_each_update_before_averaging() -> None:
    """An update whose L2 norm exceeds clip is scaled down to it; a small one is kept."""
    updates = [_update(1, dense=[3.0, 4.0]), _update(1, dense=[0.3, 0.4])]
    agg = fedsubavg(updates, clip=1.0)
    np.testing.assert_allclose(agg.dense["w"], [(0.6 + 0.3) / 2, (0.8 + 0.4) / 2], rtol=1e-5)


def test_clip_counts_sparse_and_dense_values_together() -> None:
    """The norm an update is clipped by covers all of its values."""
    agg = fedsubavg([_update(1, dense=[3.0, 0.0], ids=[0], rows=[[4.0]])], clip=1.0)
    np.testing.assert_allclose(agg.dense["w"], [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(agg.sparse["e"][1], [[0.8]], rtol=1e-5)


def test_noise_std_scales_with_clip_over_clients() -> None:
    """With a clip, the added noise has std noise_std * clip / clients."""
    zeros = [0.0, 0.0]
    updates = [_update(1, dense=zeros, ids=list(range(2000)), rows=[[0.0]] * 2000)] * 4
    agg = fedsubavg(updates, clip=2.0, noise_std=1.0, rng=np.random.default_rng(0))
    assert abs(float(np.std(agg.sparse["e"][1])) - 0.5) < 0.05


def test_no_noise_means_a_deterministic_aggregate() -> None:
    """Without noise two aggregations of the same updates are identical."""
    updates = [_update(2, dense=[1.0, 2.0], ids=[3], rows=[[1.0]])]
    first, second = fedsubavg(updates), fedsubavg(updates)
    np.testing.assert_array_equal(first.dense["w"], second.dense["w"])
    np.testing.assert_array_equal(first.sparse["e"][1], second.sparse["e"][1])


def test_apply_adds_lr_times_the_aggregate() -> None:
    """Dense tensors and the touched rows move by lr x delta; the base stays as it was."""
    base = {"w": np.ones(2, np.float32), "e": np.zeros((4, 1), np.float32)}
    agg = Aggregate(
        dense={"w": np.array([2.0, -2.0], np.float32)},
        sparse={"e": (np.array([1, 3]), np.array([[1.0], [3.0]], np.float32))},
        clients=2,
    )
    out = apply(base, agg, lr=0.5)
    np.testing.assert_allclose(out["w"], [2.0, 0.0])
    np.testing.assert_allclose(out["e"][:, 0], [0.0, 0.5, 0.0, 1.5])
    np.testing.assert_array_equal(base["e"], np.zeros((4, 1)))


def test_apply_refuses_what_the_base_lacks() -> None:
    """Unknown names, wrong shapes and rows past the table raise ValueError."""
    base = {"w": np.ones(2, np.float32), "e": np.zeros((4, 1), np.float32)}
    bad = [
        Aggregate({"x": np.ones(2, np.float32)}, {}, 1),
        Aggregate({"w": np.ones(3, np.float32)}, {}, 1),
        Aggregate({}, {"e": (np.array([4]), np.ones((1, 1), np.float32))}, 1),
        Aggregate({}, {"e": (np.array([0]), np.ones((1, 2), np.float32))}, 1),
    ]
    for agg in bad:
        with pytest.raises(ValueError, match=r"base|rows"):
            apply(base, agg)


def test_stored_updates_decode_to_the_same_arrays() -> None:
    """The storage codec keeps every array, count and the sample count."""
    update = to_arrays(
        _update(7, dense=[1.5, 2.5], ids=[2, 9], rows=[[1.0, 2.0], [3.0, 4.0]], counts=[1, 6])
    )
    back = codec.decode(codec.encode(update))
    assert back.samples == 7
    np.testing.assert_array_equal(back.dense["w"], update.dense["w"])
    np.testing.assert_array_equal(back.sparse["e"].ids, [2, 9])
    np.testing.assert_array_equal(back.sparse["e"].rows, update.sparse["e"].rows)
    assert back.sparse["e"].counts is not None
    np.testing.assert_array_equal(back.sparse["e"].counts, [1, 6])


def test_decoding_garbage_raises_value_error() -> None:
    """Bytes that are not a stored update raise ValueError, not something else."""
    with pytest.raises(ValueError, match="not a stored update"):
        codec.decode(b"not an npz")
