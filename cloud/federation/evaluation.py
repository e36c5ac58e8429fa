"""A model's cloud validation set, and a model file's AUC on it.

The set is an .npz holding one array per model input (named as the input, one row per
example) and ``label`` (0 or 1 per example). A model's score is its first output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from cloud.core.errors import InvalidModelInput, InvalidTensorBody, PayloadTooLarge
from cloud.federation.errors import InvalidValidationSet
from cloud.serving.npz import read_arrays

LABEL = "label"
MIN_ROWS = 2
BATCH_ROWS = 65_536
# Numpy dtypes a validation array may be given in, per ONNX input dtype: the same kind.
_KINDS = {"f": "f", "i": "iu", "u": "u", "b": "b"}


@dataclass(frozen=True)
class ValidationSet:
    """The inputs (by name, cast to the model's dtypes) and 0/1 labels of ``rows`` examples."""

    inputs: dict[str, np.ndarray[Any, Any]]
    labels: np.ndarray[Any, Any]

    @property
    def rows(self) -> int:
        return len(self.labels)


def read_validation(data: bytes, inputs: list[dict[str, Any]], *, max_bytes: int) -> ValidationSet:
    """Parse and check ``data`` against a model's ``inputs`` (the registry's specs);
    InvalidValidationSet names the first problem."""
    try:
        arrays = read_arrays(data, max_bytes=max_bytes)
    except (InvalidTensorBody, InvalidModelInput, PayloadTooLarge) as exc:
        raise InvalidValidationSet(
            f"The validation set is not a readable .npz: {exc.message} "
            "Write it with numpy.savez(file, <input name>=..., label=...)."
        ) from exc
    names = [spec["name"] for spec in inputs]
    expected = sorted([*names, LABEL])
    if sorted(arrays) != expected:
        raise InvalidValidationSet(
            f"The validation set holds arrays {sorted(arrays)}; the model needs exactly "
            f"{expected} (one per model input, and the labels).",
            details={"expected": expected, "received": sorted(arrays)},
        )
    labels = arrays[LABEL].reshape(-1) if arrays[LABEL].ndim == 2 else arrays[LABEL]
    if labels.ndim != 1 or labels.dtype.kind not in "fiub":
        raise InvalidValidationSet("'label' must be a numeric array with one value a row.")
    if len(labels) < MIN_ROWS or not np.isin(labels, (0, 1)).all():
        raise InvalidValidationSet(
            f"'label' must hold at least {MIN_ROWS} values, each 0 or 1; "
            "the metric is the AUC of the model's score against it."
        )
    if len(np.unique(labels)) != 2:
        raise InvalidValidationSet("'label' must hold both 0s and 1s for the AUC to exist.")
    cast = {spec["name"]: _input(arrays[spec["name"]], spec, len(labels)) for spec in inputs}
    return ValidationSet(inputs=cast, labels=labels.astype(np.int8))


def _input(array: np.ndarray[Any, Any], spec: dict[str, Any], rows: int) -> np.ndarray[Any, Any]:
    name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
    try:
        target = np.dtype(dtype)
    except TypeError as exc:
        raise InvalidValidationSet(
            f"Input {name!r} has dtype {dtype}, which a validation set cannot carry."
        ) from exc
    if array.dtype.kind not in _KINDS.get(target.kind, target.kind):
        raise InvalidValidationSet(
            f"Array {name!r} has dtype {array.dtype}; the model's input takes {dtype}.",
            details={"input": name},
        )
    if array.ndim == 0 or array.shape[0] != rows:
        raise InvalidValidationSet(
            f"Array {name!r} has shape {list(array.shape)}; it needs one row per label "
            f"({rows} rows).",
            details={"input": name},
        )
    if shape is not None and not _fits(shape, array.shape):
        raise InvalidValidationSet(
            f"Array {name!r} has shape {list(array.shape)}; the model's input is {shape}.",
            details={"input": name},
        )
    if target.kind == "f" and not np.isfinite(array).all():
        raise InvalidValidationSet(f"Array {name!r} holds NaN or infinite values.")
    return array.astype(target, copy=False)


def _fits(shape: list[int | str | None], actual: tuple[int, ...]) -> bool:
    """Whether an array's shape fits an input's: same rank, fixed dimensions equal."""
    return len(shape) == len(actual) and all(
        not isinstance(want, int) or want == got
        for want, got in zip(shape[1:], actual[1:], strict=True)
    )


def scores(onnx_bytes: bytes, validation: ValidationSet) -> np.ndarray[Any, Any]:
    """The model's first output over the validation set, one score a row."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    parts = []
    for start in range(0, validation.rows, BATCH_ROWS):
        feed = {n: a[start : start + BATCH_ROWS] for n, a in validation.inputs.items()}
        (result,) = session.run([output], feed)
        rows = min(BATCH_ROWS, validation.rows - start)
        flat = np.asarray(result, np.float64).reshape(-1)
        if flat.shape[0] != rows:
            raise ValueError(
                f"the model's output {output!r} has {flat.shape[0]} values for {rows} rows; "
                "a score per row is needed."
            )
        parts.append(flat)
    return np.concatenate(parts)


def auc(labels: np.ndarray[Any, Any], score: np.ndarray[Any, Any]) -> float:
    """The area under the ROC curve (ties count half), from the ranks of the scores."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[inverse.reshape(-1)]
    positive = labels == 1
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the AUC needs both positive and negative labels.")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def evaluate(onnx_bytes: bytes, validation: ValidationSet) -> float:
    """The AUC of a model file on a validation set."""
    result = scores(onnx_bytes, validation)
    if not np.isfinite(result).all():
        raise ValueError("the model's scores hold NaN or infinite values.")
    return auc(validation.labels, result)
