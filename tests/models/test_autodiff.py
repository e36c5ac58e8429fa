"""The numpy autodiff: its gradients are the derivatives of what it computes."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytest

from models import autodiff as ad
from models.cloud import CloudConfig, CloudModel
from models.edge import EdgeConfig, EdgeModel
from models.recommender import Inputs, Recommender


def _inputs(rng: np.random.Generator, batch: int, history: int, vocab: int) -> Inputs:
    items = rng.integers(0, vocab, (batch, history))
    items[0] = 0  # a user with no history at all
    items[1, :2] = 0  # and one with a short one
    return {
        "item": rng.integers(0, vocab, batch),
        "history": items,
        "history_ratings": np.where(items > 0, rng.integers(1, 11, items.shape) / 2, 0.0),
        "genres": rng.integers(0, 2, (batch, 3)).astype(np.float64),
        "user_genres": rng.random((batch, 3)),
        "item_stats": rng.normal(size=(batch, 3)),
        "user_stats": rng.normal(size=(batch, 3)),
    }


def _scalar(
    model: Recommender, inputs: Inputs, weights: np.ndarray
) -> Callable[[Mapping[str, ad.Tensor]], ad.Tensor]:
    """A weighted sum of the model's logits: one number whose gradient involves them all."""

    def f(params: Mapping[str, ad.Tensor]) -> ad.Tensor:
        return ad.reduce_sum(ad.mul(model.logits(params, inputs), ad.Tensor(weights)), axis=0)

    return f


@pytest.mark.parametrize(
    "model",
    [
        EdgeModel(vocab_size=7, genres=3, config=EdgeConfig(history=4, dim=3, hidden=5)),
        CloudModel(vocab_size=7, genres=3, config=CloudConfig(history=4, dim=4, hidden=(5, 3))),
    ],
    ids=["edge", "cloud"],
)
def test_gradients_match_finite_differences(model: Recommender) -> None:
    """Every parameter's gradient agrees with central differences of the model's output."""
    rng = np.random.default_rng(1)
    params = {k: v.astype(np.float64) * 4 for k, v in model.init_params(rng).items()}
    params = {k: v + rng.normal(0, 0.3, v.shape) for k, v in params.items()}  # no zero biases
    inputs = _inputs(rng, batch=6, history=4, vocab=7)
    inputs = {k: v for k, v in inputs.items() if k in {s.name for s in model.inputs}}
    f = _scalar(model, inputs, rng.normal(size=6))
    tensors = {k: ad.parameter(v) for k, v in params.items()}
    ad.backward(f(tensors))
    eps = 1e-6
    for name, value in params.items():
        grad = tensors[name].grad
        assert grad is not None, name
        for flat in rng.choice(value.size, min(value.size, 6), replace=False).tolist():
            index = np.unravel_index(flat, value.shape)
            up = {k: v.copy() for k, v in params.items()}
            down = {k: v.copy() for k, v in params.items()}
            up[name][index] += eps
            down[name][index] -= eps
            # Tensor, not ad.constant: the parameters stay float64 for the differences.
            constants = lambda p: {k: ad.Tensor(v) for k, v in p.items()}  # noqa: E731
            numeric = (float(f(constants(up)).value) - float(f(constants(down)).value)) / (2 * eps)
            assert grad[index] == pytest.approx(numeric, rel=1e-4, abs=1e-6), (name, index)


def test_masked_softmax_gives_padding_no_weight() -> None:
    """Weights over masked positions are zero and the rest sum to one."""
    scores = ad.constant(np.array([[3.0, 1.0, 2.0, 9.0]]))
    weights = ad.masked_softmax(scores, np.array([[1.0, 1.0, 1.0, 0.0]], np.float32)).value
    assert weights[0, 3] == 0.0
    assert weights.sum() == pytest.approx(1.0)
    assert weights[0, 0] > weights[0, 2] > weights[0, 1]


def test_cross_entropy_gradient_is_prediction_minus_label() -> None:
    """d mean-BCE / d logit is (sigmoid(logit) - label) / batch."""
    logits = ad.parameter(np.array([0.0, 2.0, -1.0], np.float32))
    labels = np.array([1.0, 0.0, 1.0], np.float32)
    ad.backward(ad.bce_with_logits(logits, labels))
    expected = (ad.sigmoid(logits.value) - labels) / 3
    assert logits.grad is not None
    np.testing.assert_allclose(logits.grad, expected, rtol=1e-6)
