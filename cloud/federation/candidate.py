"""The base model's trainable tensors, checking an update against them, and the candidate:
the base ONNX file with an aggregate applied to its initializers."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from cloud.federation.aggregate import Aggregate, apply
from cloud.federation.errors import ParameterShapeMismatch, RowIdOutOfRange, UnknownParameter
from device_sdk.federation_wire import ModelUpdate

_TRAINABLE_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
)


@dataclass(frozen=True)
class Trainable:
    """A floating-point initializer of the base model: what an update may change."""

    name: str
    shape: tuple[int, ...]


def trainables(onnx_bytes: bytes) -> dict[str, Trainable]:
    """Every floating-point initializer of a model, by name, with its shape."""
    model = onnx.load_model_from_string(onnx_bytes)
    return {
        init.name: Trainable(init.name, tuple(int(d) for d in init.dims))
        for init in model.graph.initializer
        if init.data_type in _TRAINABLE_TYPES
    }


class TrainableCache:
    """Trainable tensors of recently used model files, by digest: parsed once, not per update."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[str, dict[str, Trainable]] = OrderedDict()

    def get(self, sha256: str) -> dict[str, Trainable] | None:
        with self._lock:
            found = self._items.get(sha256)
            if found is not None:
                self._items.move_to_end(sha256)
        return found

    def put(self, sha256: str, value: dict[str, Trainable]) -> None:
        with self._lock:
            self._items[sha256] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def check_update(update: ModelUpdate, params: dict[str, Trainable]) -> None:
    """Refuse an update whose deltas do not fit the base model's trainable tensors."""
    known = ", ".join(sorted(params)[:20]) or "none"
    for dense in update.dense:
        spec = params.get(dense.name)
        if spec is None:
            raise UnknownParameter(
                f"Model {update.model!r} version {update.base_version} has no trainable "
                f"tensor {dense.name!r}; its trainable tensors are: {known}.",
                details={"param": dense.name},
            )
        if tuple(dense.shape) != spec.shape:
            raise ParameterShapeMismatch(
                f"Dense delta {dense.name!r} has shape {list(dense.shape)}; the tensor in "
                f"model {update.model!r} version {update.base_version} is {list(spec.shape)}.",
                details={"param": dense.name},
            )
    for sparse in update.sparse:
        spec = params.get(sparse.name)
        if spec is None:
            raise UnknownParameter(
                f"Model {update.model!r} version {update.base_version} has no trainable "
                f"tensor {sparse.name!r}; its trainable tensors are: {known}.",
                details={"param": sparse.name},
            )
        if len(spec.shape) != 2 or spec.shape[1] != sparse.width:
            raise ParameterShapeMismatch(
                f"Sparse delta {sparse.name!r} has rows of width {sparse.width}; the tensor "
                f"in model {update.model!r} version {update.base_version} has shape "
                f"{list(spec.shape)} (a table of [rows, width] is needed).",
                details={"param": sparse.name},
            )
        largest = max(sparse.ids)
        if largest >= spec.shape[0]:
            raise RowIdOutOfRange(
                f"Sparse delta {sparse.name!r} names row {largest}; the table has "
                f"{spec.shape[0]} rows (ids 0 to {spec.shape[0] - 1}).",
                details={"param": sparse.name},
            )


def build_candidate(onnx_bytes: bytes, agg: Aggregate, *, lr: float) -> bytes:
    """The base model's bytes with ``lr`` times the aggregate added to its initializers."""
    model = onnx.load_model_from_string(onnx_bytes)
    names = set(agg.dense) | set(agg.sparse)
    by_name = {init.name: init for init in model.graph.initializer if init.name in names}
    missing = sorted(names - set(by_name))
    if missing:
        raise ValueError(f"the base model has no initializers {missing}.")
    base = {name: numpy_helper.to_array(init) for name, init in by_name.items()}
    updated = apply(base, agg, lr=lr)
    for name, init in by_name.items():
        values = np.ascontiguousarray(updated[name].astype(base[name].dtype))
        init.CopyFrom(numpy_helper.from_array(values, name))
    return model.SerializeToString()
