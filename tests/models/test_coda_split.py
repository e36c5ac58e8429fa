"""The edge model split for on-device learning: backbone + head compute the edge model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import runtime
from models.coda_split import ACTIVATION, EMBEDDING, split_edge
from models.edge import EdgeConfig, EdgeModel
from models.errors import ExportError
from tests.factories import onnx_linear

GENRES, VOCAB = 19, 40


def _edge() -> tuple[bytes, dict[str, np.ndarray]]:
    model = EdgeModel(VOCAB, GENRES, EdgeConfig(history=20, dim=8, hidden=16))
    params = model.init_params(np.random.default_rng(3))
    rng = np.random.default_rng(4)
    inputs: dict[str, np.ndarray] = {
        "item": rng.integers(0, VOCAB, 64).astype(np.int64),
        "history": rng.integers(0, VOCAB, (64, 20)).astype(np.int64),
        "genres": (rng.random((64, GENRES)) > 0.7).astype(np.float32),
    }
    inputs["history"][0] = 0  # no history at all
    inputs["item"][1] = 0  # an unknown movie
    return model.export(params, {}).SerializeToString(), inputs


def test_head_over_backbone_is_the_edge_model() -> None:
    """sigmoid(activation @ w + b) from the split equals the whole edge model's score."""
    edge, inputs = _edge()
    split = split_edge(edge)
    activation = runtime.session(split.backbone).run([ACTIVATION], inputs)[0]
    head = 1.0 / (1.0 + np.exp(-(activation @ split.head_w + split.head_b)))
    np.testing.assert_allclose(head, runtime.score(edge, inputs), atol=1e-5)


def test_embedding_halves_are_unit_length_and_padding_stays_zero() -> None:
    """Each half of a sample's embedding has length 1/sqrt(2); an empty history gives zeros."""
    edge, inputs = _edge()
    embedding = runtime.session(split_edge(edge).backbone).run([EMBEDDING], inputs)[0]
    assert embedding.shape == (64, 16) and np.isfinite(embedding).all()
    item_norm = np.linalg.norm(embedding[:, :8], axis=1)
    user_norm = np.linalg.norm(embedding[:, 8:], axis=1)
    np.testing.assert_allclose(item_norm, 1 / np.sqrt(2), atol=1e-5)
    np.testing.assert_allclose(user_norm[1:], 1 / np.sqrt(2), atol=1e-5)
    assert user_norm[0] == 0.0


def test_split_refuses_a_model_that_is_not_an_edge_model() -> None:
    """A linear ONNX model without the edge model's weights is refused by name."""
    with pytest.raises(ExportError, match="missing weights"):
        split_edge(onnx_linear())


def test_write_puts_backbone_and_head_side_by_side(tmp_path: Path) -> None:
    """write() leaves backbone.onnx and head.npz with arrays w and b."""
    edge, _ = _edge()
    backbone, head = split_edge(edge).write(tmp_path / "split")
    assert backbone.read_bytes()[:2] and set(np.load(head).files) == {"w", "b"}
