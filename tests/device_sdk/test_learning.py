"""On-device learning: the frozen backbone, the activation cache (PAC), the head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_sdk import (
    ActivationCache,
    Backbone,
    Head,
    HeadTraining,
    LearningError,
    backbone_source,
    cached_source,
    log_loss,
    train_head,
)
from tests.device_sdk.coda_factories import inputs, labels, split
from tests.factories import onnx_linear


def test_cached_training_runs_the_backbone_once_per_sample() -> None:
    """Over 5 epochs the cache runs the backbone on each sample once; without it, 5 times."""
    parts = split()
    arrays = inputs(100, seed=1)
    y = labels(Backbone(parts.backbone), arrays, parts.direction)
    config = HeadTraining(epochs=5, batch_size=32)
    plain, cached = Backbone(parts.backbone), Backbone(parts.backbone)
    cache = ActivationCache(cached)
    keys = [f"s{i}" for i in range(100)]
    train_head(parts.head, backbone_source(plain, arrays), y, np.ones(100), config)
    train_head(parts.head, cached_source(cache, keys, arrays), y, np.ones(100), config)
    assert plain.runs == 500 and cached.runs == 100
    assert cache.hits == 400 and cache.misses == 100 and len(cache) == 100


def test_cache_gives_the_same_head_as_the_backbone() -> None:
    """Training through the cache and through the backbone gives the same head."""
    parts = split()
    arrays = inputs(80, seed=2)
    y = labels(Backbone(parts.backbone), arrays, parts.direction)
    cache = ActivationCache(Backbone(parts.backbone))
    keys = [f"s{i}" for i in range(80)]
    a = train_head(parts.head, backbone_source(Backbone(parts.backbone), arrays), y, np.ones(80))
    b = train_head(parts.head, cached_source(cache, keys, arrays), y, np.ones(80))
    np.testing.assert_allclose(a.w, b.w, atol=1e-5)
    assert a.b == pytest.approx(b.b, abs=1e-5)


def test_cache_partly_filled_out_of_order_gives_the_same_head() -> None:
    """With some keys cached before, in another order, and small batches, training through
    the cache still gives the backbone's head."""
    parts = split()
    arrays = inputs(90, seed=6)
    y = labels(Backbone(parts.backbone), arrays, parts.direction)
    keys = [f"s{i}" for i in range(90)]
    cache = ActivationCache(Backbone(parts.backbone))
    earlier = np.arange(60, 10, -3)
    cache.slots([keys[i] for i in earlier], {k: v[earlier] for k, v in arrays.items()})
    config = HeadTraining(epochs=4, batch_size=16)
    weights = np.linspace(0.2, 1.0, 90)
    a = train_head(
        parts.head, backbone_source(Backbone(parts.backbone), arrays), y, weights, config
    )
    b = train_head(parts.head, cached_source(cache, keys, arrays), y, weights, config)
    np.testing.assert_allclose(a.w, b.w, atol=1e-5)
    assert a.b == pytest.approx(b.b, abs=1e-5)
    assert cache.misses == len(earlier) + 90 - len(earlier)


def test_rows_of_samples_cached_together_are_a_read_only_view() -> None:
    """Consecutive slots come back as a read-only view of the cache; others as a copy."""
    parts = split()
    cache = ActivationCache(Backbone(parts.backbone))
    arrays = inputs(12, seed=7)
    slots = cache.slots([f"k{i}" for i in range(12)], arrays)
    run = cache.rows(slots[2:9])
    assert not run.flags.writeable and np.shares_memory(run, cache.rows(slots))
    scattered = cache.rows(slots[[5, 1, 7]])
    assert scattered.flags.writeable
    np.testing.assert_allclose(scattered, Backbone(parts.backbone).activations(arrays)[[5, 1, 7]])


class _RacingBackbone(Backbone):
    """A backbone during whose run another caller caches the same keys first."""

    race: tuple[ActivationCache, list[str], dict[str, np.ndarray]] | None = None

    def activations(self, inputs: Any) -> Any:
        if self.race is not None:
            cache, keys, arrays = self.race
            self.race = None
            cache.slots(keys, arrays)
        return super().activations(inputs)


def test_keys_cached_by_two_callers_at_once_keep_their_rows() -> None:
    """When another caller caches the same keys during a backbone run, later samples never
    overwrite their rows."""
    parts = split()
    backbone = _RacingBackbone(parts.backbone)
    cache = ActivationCache(backbone)
    first, later = inputs(10, seed=8), inputs(10, seed=9)
    keys = [f"a{i}" for i in range(10)]
    backbone.race = (cache, keys, first)
    cache.slots(keys, first)
    cache.slots([f"b{i}" for i in range(10)], later)
    truth = Backbone(parts.backbone).activations(first)
    np.testing.assert_allclose(cache.activations(keys, first), truth, atol=1e-6)
    assert backbone.runs == 30 and len(cache) == 20


def test_training_the_head_lowers_the_loss() -> None:
    """A head trained on labels that its activations determine fits them better than before."""
    parts = split()
    backbone = Backbone(parts.backbone)
    arrays = inputs(300, seed=3)
    y = labels(backbone, arrays, parts.direction)
    trained = train_head(
        parts.head, backbone_source(backbone, arrays), y, np.ones(300), HeadTraining(epochs=20)
    )
    activations = backbone.activations(arrays)
    before = log_loss(y, parts.head.predict(activations))
    assert log_loss(y, trained.predict(activations)) < before - 0.05


def test_zero_weight_samples_do_not_move_the_head() -> None:
    """Samples of weight 0 contribute nothing: training on them alone keeps the head."""
    parts = split()
    arrays = inputs(40, seed=4)
    source = backbone_source(Backbone(parts.backbone), arrays)
    y = np.ones(40, np.float32)
    trained = train_head(parts.head, source, y, np.zeros(40), HeadTraining(l2_to_start=0.0))
    np.testing.assert_allclose(trained.w, parts.head.w, atol=1e-6)


def test_cache_beyond_its_size_computes_without_keeping() -> None:
    """A cache of 10 rows keeps the first 10 keys and still answers right for the others."""
    parts = split()
    backbone = Backbone(parts.backbone)
    cache = ActivationCache(backbone, max_rows=10)
    arrays = inputs(25, seed=5)
    out = cache.activations([f"k{i}" for i in range(25)], arrays)
    assert len(cache) == 10 and out.shape == (25, 16)
    np.testing.assert_allclose(out, backbone.activations(arrays), atol=1e-6)
    assert cache.nbytes == 10 * 16 * 4
    source = cached_source(cache, [f"k{i}" for i in range(25)], arrays)
    np.testing.assert_allclose(source(slice(0, 25)), out, atol=1e-6)


def test_head_round_trips_through_a_file(tmp_path: Path) -> None:
    """save then load gives the same weights and bias."""
    head = Head(np.arange(4, dtype=np.float32), -0.5)
    head.save(tmp_path / "head.npz")
    loaded = Head.load(tmp_path / "head.npz")
    np.testing.assert_array_equal(loaded.w, head.w)
    assert loaded.b == -0.5


def test_backbone_refuses_a_model_without_its_outputs() -> None:
    """A model without `activation` and `embedding` outputs is refused by name."""
    with pytest.raises(LearningError, match="activation"):
        Backbone(onnx_linear())
