"""Reading and checking an uploaded ONNX file: is it a valid model, and what does it take?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from cloud.core.errors import InvalidModel


@dataclass(frozen=True)
class OnnxSignature:
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    opset: int | None


def _dtype(elem_type: int) -> str:
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return str(onnx.TensorProto.DataType.Name(elem_type)).lower()


def _tensor(value_info: Any) -> dict[str, Any]:
    kind = value_info.type.WhichOneof("value")
    if kind != "tensor_type":
        return {"name": value_info.name, "dtype": kind or "unknown", "shape": None}
    tensor = value_info.type.tensor_type
    shape: list[int | str | None] | None = None
    if tensor.HasField("shape"):
        shape = []
        for dim in tensor.shape.dim:
            which = dim.WhichOneof("value")
            shape.append(
                dim.dim_value
                if which == "dim_value"
                else dim.dim_param
                if which == "dim_param"
                else None
            )
    return {"name": value_info.name, "dtype": _dtype(tensor.elem_type), "shape": shape}


def read_signature(data: bytes) -> OnnxSignature:
    """Parse and check ``data`` as an ONNX model; InvalidModel says what is wrong."""
    if not data:
        raise InvalidModel("The uploaded file is empty; upload an .onnx model file.")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidModel(
            f"The uploaded file is not an ONNX model ({exc.__class__.__name__}); "
            "upload the .onnx file your exporter wrote."
        ) from exc
    if not model.HasField("graph"):
        raise InvalidModel("The uploaded file has no graph; it is not an ONNX model.")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise InvalidModel(
            f"The ONNX checker rejected the model: {first_line}. Fix the export and upload again."
        ) from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_tensor(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor(v) for v in model.graph.output]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return OnnxSignature(inputs=inputs, outputs=outputs, opset=opset)
