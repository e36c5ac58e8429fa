"""ONNX export: the graphs run in onnxruntime and compute what the numpy models compute."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from models import runtime
from models.cloud import CloudConfig, CloudModel
from models.edge import EdgeConfig, EdgeModel
from models.graph import BATCH, OUTPUT
from models.recommender import Inputs, Recommender

GENRES = 19
VOCAB = 50


def _models() -> list[Recommender]:
    return [
        EdgeModel(VOCAB, GENRES, EdgeConfig(history=20, dim=8, hidden=16)),
        CloudModel(VOCAB, GENRES, CloudConfig(history=30, dim=8, hidden=(16, 8))),
    ]


def _random_inputs(model: Recommender, rows: int, rng: np.random.Generator) -> Inputs:
    inputs: Inputs = {}
    for spec in model.inputs:
        shape = (rows, *spec.shape[1:])
        if spec.dtype == "int64":
            inputs[spec.name] = rng.integers(0, VOCAB, shape).astype(np.int64)
        else:
            inputs[spec.name] = rng.random(shape).astype(np.float32)
    inputs["history"][0] = 0  # a user with no history
    inputs["history"][1, :-1] = 0  # a user with one movie
    inputs["item"][2] = 0  # an unknown movie
    if "history_ratings" in inputs:
        stars = rng.integers(1, 11, inputs["history"].shape) / 2
        inputs["history_ratings"] = np.where(inputs["history"] > 0, stars, 0).astype(np.float32)
    return inputs


def _trained_looking(model: Recommender, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random parameters large enough that scores spread over (0, 1)."""
    return {
        k: (v * 1.5 + rng.normal(0, 0.1, v.shape)).astype(np.float32)
        for k, v in model.init_params(rng).items()
    }


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.name)
def test_onnxruntime_agrees_with_the_numpy_forward_pass(model: Recommender) -> None:
    """On random inputs, padding and unknown movies included, ONNX scores equal numpy's."""
    rng = np.random.default_rng(7)
    params = _trained_looking(model, rng)
    inputs = _random_inputs(model, 64, rng)
    expected = model.predict(params, inputs)
    got = runtime.score(model.export(params, {}).SerializeToString(), inputs)
    assert got.shape == (64,) and got.dtype == np.float32
    assert expected.std() > 0.05  # the comparison is not between constants
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.name)
def test_inputs_are_batch_first_and_the_output_is_score(model: Recommender) -> None:
    """Every input has the symbolic first dimension 'batch'; the one output is score[batch]."""
    exported = model.export(_trained_looking(model, np.random.default_rng(0)), {"k": "v"})
    onnx.checker.check_model(exported, full_check=True)
    types = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.FLOAT: "float32"}
    for value, spec in zip(exported.graph.input, model.inputs, strict=True):
        dims = value.type.tensor_type.shape.dim
        assert value.name == spec.name
        assert types[value.type.tensor_type.elem_type] == spec.dtype
        assert dims[0].dim_param == BATCH
        assert [d.dim_value for d in dims[1:]] == list(spec.shape[1:])
    (output,) = exported.graph.output
    assert output.name == OUTPUT
    assert [d.dim_param for d in output.type.tensor_type.shape.dim] == [BATCH]
    assert {p.key: p.value for p in exported.metadata_props} == {"k": "v"}


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.name)
def test_one_row_and_many_rows_score_alike(model: Recommender) -> None:
    """A row scored alone gets the same score as inside a batch."""
    rng = np.random.default_rng(2)
    blob = model.export(_trained_looking(model, rng), {}).SerializeToString()
    inputs = _random_inputs(model, 16, rng)
    batch = runtime.score(blob, inputs)
    alone = runtime.score(blob, {k: v[5:6] for k, v in inputs.items()})
    np.testing.assert_allclose(alone, batch[5:6], atol=1e-6)
