"""The federated model: statistics without leakage, the same numbers on the device, ONNX
export equal to the numpy forward pass, and a bundle the device SDK reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from device_sdk import AnonymousEmbedding, TrainableModel
from models import federated as fm
from models import federated_data as fd
from models.training import TrainReport


def _ratings(n: int = 60, seed: int = 0) -> fd.Ratings:
    rng = np.random.default_rng(seed)
    return fd.Ratings(
        user=rng.integers(1, 5, n).astype(np.int64),
        item=rng.integers(1, 12, n).astype(np.int64),
        genres=(rng.random((n, 3)) < 0.5).astype(np.float32),
        click=(rng.random(n) < 0.5).astype(np.float32),
        timestamp=np.arange(n, dtype=np.int64),
    )


def _base(seed: int = 0) -> fm.BaseModel:
    ratings = _ratings(seed=seed)
    basis = fd.fit_basis(ratings, 12)
    quantiles = fd.population_quantiles(fd.user_statistics(ratings, basis))
    model = fm.FederatedModel(12, 3, fm.FederatedConfig(dim=4, hidden=5, rank=2))
    params = model.init_params(np.random.default_rng(seed))
    params[fm.ITEM_EMB] += np.random.default_rng(1).normal(0, 0.3, params[fm.ITEM_EMB].shape)
    report = TrainReport(losses=[], validation=[], best_epoch=0)
    return fm.BaseModel(model, params, basis, quantiles, 0.5, report)


def test_statistics_use_only_earlier_ratings() -> None:
    """A rating's statistics equal the user's statistics over the ratings before it."""
    ratings = _ratings()
    basis = fd.fit_basis(ratings, 12)
    stats = fd.earlier_statistics(ratings, basis)
    row = int(np.flatnonzero(ratings.user == ratings.user[40])[3])
    earlier = ratings.take(
        np.flatnonzero((ratings.user == ratings.user[row]) & (np.arange(60) < row))
    )
    assert np.allclose(stats[row], fd.user_statistics(earlier, basis)[0], atol=1e-6)


def test_device_computes_the_same_statistics() -> None:
    """device_sdk.AnonymousEmbedding learns exactly the statistics the model trained on."""
    ratings = _ratings()
    basis = fd.fit_basis(ratings, 12)
    quantiles = fd.population_quantiles(fd.user_statistics(ratings, basis))
    mine = ratings.take(np.flatnonzero(ratings.user == 2))
    device = AnonymousEmbedding(basis, quantiles, rank=4)
    device.observe(mine.item, mine.click)
    expected = fd.user_statistics(mine, basis)[0]
    assert np.allclose(device.statistics(), expected, atol=1e-6)
    assert np.allclose(device.mean(), fd.ranks(expected[None], quantiles)[0], atol=1e-6)


def test_ranks_lie_in_the_unit_interval() -> None:
    """Statistics far outside the population still map into [-0.5, 0.5]."""
    quantiles = fd.population_quantiles(
        np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    )
    ranks = fd.ranks(np.array([[-99, 0, 0, 99]], np.float32), quantiles)
    assert ranks.min() >= -0.5 and ranks.max() <= 0.5 and ranks[0, 0] == -0.5


def test_onnx_export_equals_numpy_forward() -> None:
    """onnxruntime's p_click equals the numpy forward pass of the same parameters."""
    base = _base()
    session = ort.InferenceSession(base.model.export(base.params, {}).SerializeToString())
    rng = np.random.default_rng(2)
    inputs: dict[str, np.ndarray] = {
        "item": rng.integers(0, 12, 9).astype(np.int64),
        "genres": (rng.random((9, 3)) < 0.5).astype(np.float32),
        "user": (rng.random((9, 2)) - 0.5).astype(np.float32),
    }
    (onnx_scores,) = session.run([fm.OUTPUT], inputs)
    assert np.allclose(onnx_scores, base.model.predict(base.params, inputs), atol=1e-5)


def test_device_forward_equals_the_model(tmp_path: Path) -> None:
    """The SDK's TrainableModel, loaded from the bundle, scores as the model does."""
    base = _base()
    npz = base.write_bundle(tmp_path / "federated.onnx")
    device, embedding = TrainableModel.load(npz)
    rng = np.random.default_rng(3)
    item = rng.integers(0, 12, 7).astype(np.int64)
    genres = (rng.random((7, 3)) < 0.5).astype(np.float32)
    user = (rng.random((7, 2)) - 0.5).astype(np.float32)
    expected = base.model.predict(base.params, {"item": item, "genres": genres, "user": user})
    assert np.allclose(device.predict(item, genres, user), expected, atol=1e-5)
    assert embedding.rank == 2 and (tmp_path / "federated.onnx").is_file()


def test_static_mode_feeds_the_exact_ranks() -> None:
    """user_input: zeros for no embedding, the ranks for static, fresh draws otherwise."""
    ranks = np.full((4, 1), 0.3, np.float32)
    rng = np.random.default_rng(0)
    assert not fm.user_input(fm.NONE, ranks, 0.5, rng).any()
    assert np.array_equal(fm.user_input(fm.STATIC, ranks, 0.5, rng), ranks)
    drawn = fm.user_input(fm.ANONYMOUS, ranks, 0.5, rng)
    assert len(np.unique(drawn)) == 4 and np.all(np.abs(drawn - 0.15) <= 0.25)


def test_training_draws_as_the_device_draws() -> None:
    """models.federated.draw and AnonymousEmbedding.draw give the same embeddings for the
    same random stream: the base model trains on what devices will send."""
    ratings = _ratings()
    basis = fd.fit_basis(ratings, 12)
    quantiles = fd.population_quantiles(fd.user_statistics(ratings, basis))
    device = AnonymousEmbedding(
        basis, quantiles, rank=1, anonymity=0.4, rng=np.random.default_rng(9)
    )
    device.observe(ratings.item[:10], ratings.click[:10])
    many = np.repeat(device.mean()[None, :], 6, axis=0)
    expected = fm.draw(many, 0.4, np.random.default_rng(9))
    assert np.allclose(device.draw(6), expected, atol=1e-6)


def test_decayed_statistics_are_the_devices_at_each_request() -> None:
    """With a half-life, a rating's statistics equal those of a device that observed the
    user's earlier ratings one at a time, as they happened."""
    ratings = _ratings()
    basis = fd.fit_basis(ratings, 12)
    quantiles = fd.population_quantiles(fd.user_statistics(ratings, basis))
    stats = fd.earlier_statistics(ratings, basis, half_life=3.0)
    device = AnonymousEmbedding(basis, quantiles, rank=1, half_life=3.0)
    for row in np.flatnonzero(ratings.user == 3):
        assert np.allclose(stats[row], device.statistics(), atol=1e-6)
        device.observe(ratings.item[row : row + 1], ratings.click[row : row + 1])


def test_bundle_ships_the_half_life(tmp_path: Path) -> None:
    """A base built with a half-life writes it into the bundle; the SDK's embedding uses it."""
    base = _base()
    recent = fm.BaseModel(
        fm.FederatedModel(12, 3, fm.FederatedConfig(dim=4, hidden=5, rank=2, half_life=7.0)),
        base.params, base.basis, base.quantiles, 0.5, base.report,
    )  # fmt: skip
    _, embedding = TrainableModel.load(recent.write_bundle(tmp_path / "federated.onnx"))
    assert embedding.half_life == 7.0
    _, flat = TrainableModel.load(_flat(base).write_bundle(tmp_path / "flat.onnx"))
    assert flat.half_life is None


def test_bundle_names_recent_quantiles_apart(tmp_path: Path) -> None:
    """A half-life bundle ships its quantiles as ``quantiles_recent`` and no ``quantiles``
    (an SDK before half-lives refuses it); an all-time bundle ships ``quantiles``."""
    base = _base()
    recent = fm.BaseModel(
        fm.FederatedModel(12, 3, fm.FederatedConfig(dim=4, hidden=5, rank=2, half_life=7.0)),
        base.params, base.basis, base.quantiles, 0.5, base.report,
    )  # fmt: skip
    with np.load(recent.write_bundle(tmp_path / "federated.onnx")) as bundle:
        assert "quantiles" not in bundle.files
        assert np.array_equal(bundle["quantiles_recent"], base.quantiles)
    with np.load(_flat(base).write_bundle(tmp_path / "flat.onnx")) as bundle:
        assert "quantiles_recent" not in bundle.files and "half_life" not in bundle.files
        assert np.array_equal(bundle["quantiles"], base.quantiles)


def _flat(base: fm.BaseModel) -> fm.BaseModel:
    config = fm.FederatedConfig(dim=4, hidden=5, rank=2, half_life=None)
    return fm.BaseModel(
        fm.FederatedModel(12, 3, config), base.params, base.basis, base.quantiles, 0.5,
        base.report,
    )  # fmt: skip
