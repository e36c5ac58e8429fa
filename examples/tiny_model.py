"""Write a tiny valid ONNX model (y = x @ W + b) to a file, for trying the model registry.

python examples/tiny_model.py tiny.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_model(n_in: int = 4, n_out: int = 2, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "tiny_linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])],
        [
            numpy_helper.from_array(rng.standard_normal((n_in, n_out)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/tiny_model.py OUTPUT.onnx")
    Path(sys.argv[1]).write_bytes(tiny_model().SerializeToString())
    print(f"wrote {sys.argv[1]}")
