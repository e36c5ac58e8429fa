"""A terse builder of ONNX graphs: inputs, weights, nodes, one ``score`` output.

Every input is batch-first with the symbolic dimension ``batch``. Names of intermediate
values are generated in call order, so building the same model twice gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# IR version 8 is read by every onnxruntime from 1.13 on, which devices may still run.
IR_VERSION = 8
BATCH = "batch"
OUTPUT = "score"

_DTYPES = {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT}


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, element type, shape (``batch`` first) and meaning."""

    name: str
    dtype: str  # "int64" or "float32"
    shape: tuple[int | str, ...]
    meaning: str

    def as_card(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "meaning": self.meaning,
        }


class GraphBuilder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._count = 0

    def input(self, spec: InputSpec) -> str:
        self.inputs.append(
            helper.make_tensor_value_info(spec.name, _DTYPES[spec.dtype], list(spec.shape))
        )
        return spec.name

    def weight(self, name: str, value: NDArray[Any]) -> str:
        """A named initializer (a trained parameter)."""
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def const(self, value: Any, dtype: type[np.generic] = np.float32) -> str:
        """An anonymous constant, e.g. the axes of a reduction."""
        self._count += 1
        return self.weight(f"const_{self._count}", np.asarray(value, dtype=dtype))

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        self._count += 1
        output = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def axes(self, *axes: int) -> str:
        return self.const(list(axes), np.int64)

    def model(self, score: str, doc: str, metadata: Mapping[str, str]) -> onnx.ModelProto:
        """The finished model, whose one output ``score`` is ``score`` as float32 [batch]."""
        self.nodes.append(helper.make_node("Identity", [score], [OUTPUT]))
        output = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [BATCH])
        graph = helper.make_graph(
            self.nodes, self.name, self.inputs, [output], initializer=self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="tandem.models",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        helper.set_model_props(model, dict(metadata))
        onnx.checker.check_model(model, full_check=True)
        return model
