"""ONNX models for serving tests, built with onnx.helper: a recommender-shaped MLP, and
models that misbehave on purpose."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

N_ITEMS = 50
HISTORY = 5
DENSE = 3
_OPSET = [helper.make_opsetid("", 17)]


def _model(graph: Any) -> bytes:
    model = helper.make_model(graph, opset_imports=_OPSET)
    model.ir_version = 8
    return bytes(model.SerializeToString())


def recommender(seed: int = 0, *, hidden: int = 16, dim: int = 8) -> bytes:
    """score = sigmoid(MLP([emb[item], mean(emb[history]), dense])), batch dimension free.

    Inputs: ``item`` int64[batch], ``history`` int64[batch, 5], ``dense`` float32[batch, 3];
    output ``score`` float32[batch, 1]. Item ids index a 50-row embedding table.
    """
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> Any:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    nodes = [
        helper.make_node("Gather", ["emb", "item"], ["item_e"]),
        helper.make_node("Gather", ["emb", "history"], ["hist_all"]),
        helper.make_node("ReduceMean", ["hist_all"], ["hist_e"], axes=[1], keepdims=0),
        helper.make_node("Concat", ["item_e", "hist_e", "dense"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h1b"]),
        helper.make_node("Relu", ["h1b"], ["h1r"]),
        helper.make_node("MatMul", ["h1r", "w2"], ["logit0"]),
        helper.make_node("Add", ["logit0", "b2"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "recommender",
        [
            helper.make_tensor_value_info("item", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", HISTORY]),
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["batch", DENSE]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        [
            weight("emb", N_ITEMS, dim),
            weight("w1", 2 * dim + DENSE, hidden),
            weight("b1", hidden),
            weight("w2", hidden, 1),
            weight("b2", 1),
        ],
    )
    return _model(graph)


def recommender_inputs(rows: int, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """Valid random inputs for :func:`recommender`."""
    rng = np.random.default_rng(seed)
    return {
        "item": rng.integers(0, N_ITEMS, rows, dtype=np.int64),
        "history": rng.integers(0, N_ITEMS, (rows, HISTORY), dtype=np.int64),
        "dense": rng.standard_normal((rows, DENSE)).astype(np.float32),
    }


def fixed_batch(rows: int = 2) -> bytes:
    """y = x * 2 with x float32[rows, 2] fixed: not batchable, each request runs alone."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 2])],
        [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    return _model(graph)


def log_model() -> bytes:
    """y = log(x) for float32[batch, 1]: a zero input gives -inf, which JSON cannot carry."""
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["y"])],
        "log",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
    )
    return _model(graph)


def hidden_lookup() -> bytes:
    """y = table[id + 0] for id int64[batch]: the Add hides the table's size from the input
    checks, so an id past 9 passes them and fails at run time. For run-time failures."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["id", "zero"], ["shifted"]),
            helper.make_node("Gather", ["table", "shifted"], ["y"]),
        ],
        "hidden_lookup",
        [helper.make_tensor_value_info("id", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [
            numpy_helper.from_array(np.arange(20, dtype=np.float32).reshape(10, 2), "table"),
            numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        ],
    )
    return _model(graph)
