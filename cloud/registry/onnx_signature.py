"""Reading and checking an uploaded ONNX file: is it a valid model, and what does it take?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from cloud.core.db import INT32_MAX
from cloud.core.errors import InvalidModel


@dataclass(frozen=True)
class OnnxSignature:
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    opset: int | None


def _text(value: object, what: str) -> str:
    # protobuf hands back bytes, not str, for a proto2 string field that is not valid UTF-8.
    if not isinstance(value, str):
        raise InvalidModel(
            f"The model's {what} is not valid UTF-8 text; fix the export and upload again."
        )
    return value


def _dtype(elem_type: int) -> str:
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        pass  # a type numpy lacks (bfloat16, float8...): use its ONNX name
    try:
        return str(onnx.TensorProto.DataType.Name(elem_type)).lower()
    except ValueError:
        raise InvalidModel(
            f"The model uses tensor element type {elem_type}, which ONNX does not define; "
            "fix the export and upload again."
        ) from None


def _dimension(dim: Any, tensor: str) -> int | str | None:
    which = dim.WhichOneof("value")
    if which == "dim_value":
        return int(dim.dim_value)
    if which == "dim_param":
        return _text(dim.dim_param, f"dimension name in tensor {tensor!r}")
    return None


def _tensor(value_info: Any) -> dict[str, Any]:
    name = _text(value_info.name, "tensor name")
    kind = value_info.type.WhichOneof("value")
    if kind != "tensor_type":
        return {"name": name, "dtype": kind or "unknown", "shape": None}
    tensor = value_info.type.tensor_type
    shape: list[int | str | None] | None = None
    if tensor.HasField("shape"):
        shape = [_dimension(dim, name) for dim in tensor.shape.dim]
    return {"name": name, "dtype": _dtype(tensor.elem_type), "shape": shape}


def _opset(model: Any) -> int | None:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not 0 <= opset <= INT32_MAX:
        raise InvalidModel(
            f"The model imports opset {opset}, which no ONNX release defines; "
            "export it with a released opset and upload again."
        )
    return opset


def _check(model: Any) -> None:
    if not model.HasField("graph"):
        raise InvalidModel("The uploaded file has no graph; it is not an ONNX model.")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise InvalidModel(
            f"The ONNX checker rejected the model: {first_line}. Fix the export and upload again."
        ) from exc


def read_signature(data: bytes) -> OnnxSignature:
    """Parse and check ``data`` as an ONNX model; InvalidModel says what is wrong.

    Total over its input: whatever bytes arrive, the answer is a signature or InvalidModel.
    """
    if not data:
        raise InvalidModel("The uploaded file is empty; upload an .onnx model file.")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidModel(
            f"The uploaded file is not an ONNX model ({exc.__class__.__name__}); "
            "upload the .onnx file your exporter wrote."
        ) from exc
    try:
        _check(model)
        initializers = {i.name for i in model.graph.initializer}
        inputs = [_tensor(v) for v in model.graph.input if v.name not in initializers]
        outputs = [_tensor(v) for v in model.graph.output]
        return OnnxSignature(inputs=inputs, outputs=outputs, opset=_opset(model))
    except InvalidModel:
        raise
    except Exception as exc:
        # The file is hostile input that passed the parser: any other failure to read it
        # (the checker's or ours) means it is not a model we can record, never a 500.
        raise InvalidModel(
            f"The model could not be read ({exc.__class__.__name__}); "
            "export it again with a current ONNX exporter and upload that file."
        ) from exc
