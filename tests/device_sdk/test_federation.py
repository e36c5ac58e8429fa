"""Federated learning on the device: local training, the update, its outbox and upload."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray

from device_sdk import (
    AnonymousEmbedding,
    CloudClient,
    EmbeddingError,
    LocalTraining,
    TrainableModel,
    UpdateOutbox,
    train_update,
    upload_updates,
)
from device_sdk._federation import DENSE, ITEM_EMB, _forward, _gradients
from device_sdk.federation_wire import ModelUpdate
from tests.device_sdk.federation_factories import bundle_arrays, embedding, examples, model


def _update(items: list[int], config: LocalTraining | None = None, seed: int = 0) -> ModelUpdate:
    user = embedding(seed=seed)
    local = examples(items, seed=seed)
    user.observe(local.item, local.click)
    return train_update(
        model(), local, user, model_name="movielens-federated", base_version=3,
        config=config or LocalTraining(), rng=np.random.default_rng(seed),
    )  # fmt: skip


def _norm(update: ModelUpdate) -> float:
    values = [v for d in update.dense for v in d.values]
    values += [v for s in update.sparse for row in s.rows for v in row]
    return float(np.linalg.norm(values))


def test_update_holds_only_the_touched_rows_with_counts() -> None:
    """The sparse delta names exactly the rated movies (not padding), counting each."""
    update = _update([5, 7, 7, 0, 12, 5, 5])
    (sparse,) = update.sparse
    assert sparse.name == ITEM_EMB
    assert sparse.ids == [5, 7, 12]
    assert sparse.counts == [3, 2, 1]
    assert {d.name for d in update.dense} == set(DENSE)
    assert update.samples == 7 and update.base_version == 3


def test_update_carries_no_identity() -> None:
    """What leaves the device has no field beyond key, model, version, samples and deltas."""
    payload = json.loads(_update([1, 2, 3]).model_dump_json())
    assert set(payload) == {"key", "model", "base_version", "samples", "dense", "sparse"}


def test_clipping_bounds_the_norm() -> None:
    """With a tight clip the update's L2 norm over every value is at most the clip."""
    update = _update(list(range(1, 25)), LocalTraining(epochs=5, learning_rate=1.0, clip=0.05))
    assert _norm(update) <= 0.05 * (1 + 1e-4)


def test_local_noise_changes_what_is_sent() -> None:
    """With noise_multiplier > 0 the same training sends different values."""
    plain = _update([1, 2, 3], LocalTraining(clip=1.0))
    noised = _update([1, 2, 3], LocalTraining(clip=1.0, noise_multiplier=0.5))
    assert plain.dense[0].values != noised.dense[0].values


def test_training_leaves_the_base_model_unchanged() -> None:
    """train_update works on copies: the model it started from is not modified."""
    base = model()
    before = {k: v.copy() for k, v in base.params.items()}
    local = examples([1, 2, 3, 4])
    train_update(base, local, embedding(), model_name="m", base_version=1)
    assert all(np.array_equal(before[k], base.params[k]) for k in before)


def test_gradients_match_finite_differences() -> None:
    """The hand-written backward pass agrees with numeric derivatives of the log-loss."""
    params = model().params
    local = examples([1, 2, 3, 2])
    rows = params[ITEM_EMB][[1, 2, 3]]
    index = np.array([0, 1, 2, 1])
    user = np.array([[0.3], [-0.2], [0.1], [0.4]], np.float32)

    def loss(p: dict[str, np.ndarray], r: np.ndarray) -> float:
        table = np.vstack([np.zeros((1, 4)), r]).astype(np.float64)
        wide = {k: v.astype(np.float64) for k, v in p.items()}
        logits = _forward(wide, table[index + 1], local.genres, user)[0]
        probs = 1.0 / (1.0 + np.exp(-logits))
        y = local.click
        return float(-np.mean(y * np.log(probs) + (1 - y) * np.log(1 - probs)))

    grads, row_grads = _gradients(params, rows, index, local.genres, user, local.click)
    eps = 1e-3
    bumped = {k: v.copy() for k, v in params.items()}
    bumped["mlp.w0"][2, 1] += eps
    assert (loss(bumped, rows) - loss(params, rows)) / eps == pytest.approx(
        grads["mlp.w0"][2, 1], abs=2e-3
    )
    moved = rows.copy()
    moved[1, 0] += eps
    summed = row_grads[index == 1, 0].sum()
    assert (loss(params, moved) - loss(params, rows)) / eps == pytest.approx(summed, abs=2e-3)


def test_training_lowers_the_local_loss() -> None:
    """Applying the update's deltas lowers the log-loss on the local examples."""
    base, local, user = model(), examples(list(range(1, 21)) * 3), embedding(anonymity=0.0)
    update = train_update(
        base, local, user, model_name="m", base_version=1,
        config=LocalTraining(epochs=5, clip=100.0), rng=np.random.default_rng(1),
    )  # fmt: skip
    trained = {k: v.copy() for k, v in base.params.items()}
    for d in update.dense:
        trained[d.name] += np.asarray(d.values, np.float32).reshape(d.shape)
    for s in update.sparse:
        trained[s.name][s.ids] += np.asarray(s.rows, np.float32)
    user_rows = user.draw(len(local))

    def loss(params: dict[str, np.ndarray]) -> float:
        p = TrainableModel(params).predict(local.item, local.genres, user_rows)
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return float(-np.mean(local.click * np.log(p) + (1 - local.click) * np.log(1 - p)))

    assert loss(trained) < loss(base.params)


def test_bundle_file_loads_model_and_embedding(tmp_path: Path) -> None:
    """TrainableModel.load reads the parameters and the embedding's basis from an .npz."""
    np.savez(tmp_path / "m.npz", **bundle_arrays())  # type: ignore[arg-type]
    loaded, user = TrainableModel.load(tmp_path / "m.npz")
    assert loaded.params[ITEM_EMB].shape == (30, 4) and user.rank == 1


def test_queued_update_survives_a_restart(tmp_path: Path) -> None:
    """An update put into the outbox is still there for a new outbox on the same folder."""
    update = _update([1, 2])
    UpdateOutbox(tmp_path / "updates").put(update)
    (again,) = UpdateOutbox(tmp_path / "updates").pending()
    assert again == update


def test_outbox_keeps_only_the_newest(tmp_path: Path) -> None:
    """Beyond max_items the oldest updates are evicted."""
    outbox = UpdateOutbox(tmp_path, max_items=2)
    keys = [outbox.put(_update([1, 2], seed=i)) for i in range(3)]
    assert [u.key for u in outbox.pending()] == keys[1:] and outbox.evicted == 1


def _client(status: int, seen: list[httpx.Request]) -> CloudClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body: dict[str, object] = {"round": 4, "received": 2, "k": 20, "duplicate": False}
        if status != 201:
            body = {"error": {"code": "nope", "message": "no"}}
        return httpx.Response(status, json=body)

    return CloudClient("http://cloud", token="t", transport=httpx.MockTransport(handler))


def test_upload_sends_to_the_federation_endpoint_and_removes(tmp_path: Path) -> None:
    """A 201 removes the update; it was posted as the wire ModelUpdate with the token."""
    outbox, seen = UpdateOutbox(tmp_path), list[httpx.Request]()
    update = _update([1, 2, 3])
    outbox.put(update)
    summary = upload_updates(outbox, _client(201, seen))
    assert summary.sent == 1 and summary.remaining == 0 and summary.receipts[0].round == 4
    assert seen[0].url.path == "/v1/federation/updates"
    assert seen[0].headers["authorization"] == "Bearer t"
    assert ModelUpdate.model_validate_json(seen[0].content) == update


def test_upload_keeps_updates_when_the_cloud_is_away(tmp_path: Path) -> None:
    """A 503 leaves the update queued for a later call."""
    outbox = UpdateOutbox(tmp_path)
    outbox.put(_update([1, 2]))
    summary = upload_updates(outbox, _client(503, []))
    assert summary.sent == 0 and summary.remaining == 1


def test_upload_drops_updates_the_cloud_refuses(tmp_path: Path) -> None:
    """A 422 (the deltas do not fit the model) drops the update and counts it."""
    outbox = UpdateOutbox(tmp_path)
    outbox.put(_update([1, 2]))
    summary = upload_updates(outbox, _client(422, []))
    assert summary.dropped == 1 and summary.remaining == 0 and outbox.dropped == 1


class _RecordingEmbedding(AnonymousEmbedding):
    """An embedding that keeps every (positions, draws) pair draw_around() gave."""

    calls: list[tuple[NDArray[np.float32], NDArray[np.float32]]]

    def draw_around(self, positions: NDArray[np.float32]) -> NDArray[np.float32]:
        draws = super().draw_around(positions)
        self.calls.append((np.asarray(positions), draws))
        return draws


def test_examples_train_on_draws_around_their_own_positions() -> None:
    """With LocalExamples.user, every example's embedding is drawn around its own position
    from observe_each(): within a / 2 of (1 - a) times it, every example once an epoch."""
    local = examples([3, 5, 7, 9, 11, 13, 17, 19, 23, 29])
    arrays = bundle_arrays()
    user = _RecordingEmbedding(arrays["basis"], arrays["quantiles"], rank=1, anonymity=0.2)
    user.calls = []
    positions = user.observe_each(local.item, local.click)
    assert np.ptp(positions) > 0.2  # positions far apart: a draw near the wrong one fails
    config = LocalTraining(epochs=2, batch_size=4)
    train_update(
        model(), replace(local, user=positions), user, model_name="movielens-federated",
        base_version=3, config=config, rng=np.random.default_rng(0),
    )  # fmt: skip
    given = np.concatenate([p for p, _ in user.calls])
    draws = np.concatenate([d for _, d in user.calls])
    assert np.array_equal(np.sort(given, axis=0), np.sort(np.tile(positions, (2, 1)), axis=0))
    assert np.all(np.abs(draws - 0.8 * given) <= 0.1 + 1e-6)


def test_examples_positions_must_match_the_examples() -> None:
    """A user column of another length is refused, naming observe_each."""
    user, local = embedding(), examples([3, 5, 7])
    with pytest.raises(EmbeddingError, match="observe_each"):
        train_update(
            model(), replace(local, user=np.zeros((2, 1), np.float32)), user,
            model_name="movielens-federated", base_version=3,
        )  # fmt: skip
