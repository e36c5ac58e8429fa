"""The predictor as an ONNX graph, so a device routes locally without a round trip.

Inputs: ``indices`` (int64, [batch, width]) and ``values`` (float32, [batch, width]), a
batch of hashed texts padded with index 0 / value 0 (``device_sdk.text_features``), plus
``features`` (float32, [batch, n_features]) when the router takes plain features.
Outputs: ``d`` (float32, [batch, metrics]) and ``prs`` (float32, [batch]). The graph is
the predictor's arithmetic in float32: the idf weighting and unit scaling of the
values, then Gather, Mul, ReduceSum, Sigmoid, MatMul.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cloud.router.predictor import RouterModel

OPSET = 17
IR_VERSION = 8


def _const(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name=name)


def to_onnx(model: RouterModel, *, name: str = "router") -> bytes:
    """Serialise ``model`` as a checked ONNX model."""
    m = model.n_metrics
    initializers = [
        _const("idf", model.idf.astype(np.float32)),
        _const("tiny", np.array(1e-30, dtype=np.float32)),
        _const("text_weights", model.text_weights.astype(np.float32)),
        _const("bias", model.bias.astype(np.float32)),
        _const("metric_weights", model.metric_weights.astype(np.float32).reshape(m, 1)),
        _const("reduce_axis", np.array([1], dtype=np.int64)),
        _const("value_axis", np.array([2], dtype=np.int64)),
        _const("prs_shape", np.array([-1], dtype=np.int64)),
    ]
    inputs = [
        helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch", "width"]),
        helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", "width"]),
    ]
    nodes = [
        # Weigh each value by its index's idf, then scale each row back to unit length.
        helper.make_node("Gather", ["idf", "indices"], ["idf_rows"], axis=0),
        helper.make_node("Mul", ["values", "idf_rows"], ["weighted"]),
        helper.make_node("Mul", ["weighted", "weighted"], ["squares"]),
        helper.make_node("ReduceSum", ["squares", "reduce_axis"], ["square_sums"], keepdims=1),
        helper.make_node("Sqrt", ["square_sums"], ["norms"]),
        helper.make_node("Max", ["norms", "tiny"], ["safe_norms"]),
        helper.make_node("Div", ["weighted", "safe_norms"], ["unit"]),
        helper.make_node("Gather", ["text_weights", "indices"], ["gathered"], axis=0),
        helper.make_node("Unsqueeze", ["unit", "value_axis"], ["values_3d"]),
        helper.make_node("Mul", ["gathered", "values_3d"], ["pushes"]),
        helper.make_node("ReduceSum", ["pushes", "reduce_axis"], ["text_logits"], keepdims=0),
    ]
    logits = "text_logits"
    if model.n_features:
        initializers += [
            _const("feature_mean", model.feature_mean.astype(np.float32)),
            _const("feature_scale", model.feature_scale.astype(np.float32)),
            _const("feature_weights", model.feature_weights.astype(np.float32)),
        ]
        inputs.append(
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, ["batch", model.n_features]
            )
        )
        nodes += [
            helper.make_node("Sub", ["features", "feature_mean"], ["centred"]),
            helper.make_node("Div", ["centred", "feature_scale"], ["standard"]),
            helper.make_node("MatMul", ["standard", "feature_weights"], ["feature_logits"]),
            helper.make_node("Add", ["text_logits", "feature_logits"], ["both_logits"]),
        ]
        logits = "both_logits"
    nodes += [
        helper.make_node("Add", [logits, "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["d"]),
        helper.make_node("MatMul", ["d", "metric_weights"], ["prs_column"]),
        helper.make_node("Reshape", ["prs_column", "prs_shape"], ["prs"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        inputs,
        [
            helper.make_tensor_value_info("d", TensorProto.FLOAT, ["batch", m]),
            helper.make_tensor_value_info("prs", TensorProto.FLOAT, ["batch"]),
        ],
        initializer=initializers,
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tandem-router"
    )
    onnx_model.ir_version = IR_VERSION
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()
