"""What a loaded model takes and gives, and the checks every request's inputs pass.

The signature comes from the onnxruntime session itself (the truth of what will run), with
one addition read from the graph: integer inputs used directly as ``Gather`` indices into a
weight table, whose valid range is then known, so an out-of-range id is a 422 naming the
input rather than a runtime failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from cloud.core.errors import InvalidModelInput, ModelLoadFailed

# onnxruntime's tensor type names -> numpy dtypes. Others (string, bfloat16...) cannot be
# fed from JSON or .npz safely, and a model taking them is refused at load.
_ORT_DTYPES: dict[str, np.dtype[Any]] = {
    f"tensor({name})": np.dtype(dtype)
    for name, dtype in {
        "float": "float32",
        "double": "float64",
        "float16": "float16",
        "int8": "int8",
        "int16": "int16",
        "int32": "int32",
        "int64": "int64",
        "uint8": "uint8",
        "uint16": "uint16",
        "uint32": "uint32",
        "uint64": "uint64",
        "bool": "bool",
    }.items()
}


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    dtype: np.dtype[Any]
    # None for a dimension of any size (symbolic or unknown).
    shape: tuple[int | None, ...]
    # Integer inputs that index a table of this many rows: values must be in [0, bound).
    index_bound: int | None = None

    @property
    def batched(self) -> bool:
        return len(self.shape) >= 1 and self.shape[0] is None

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype.name}[{dims}]"


# (name, dtype, rank, trailing dimensions) of each input, for the common case's check.
_Plan = tuple[tuple[str, np.dtype[Any], int, tuple[int, ...]], ...]


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    # Every input and output has a free first dimension: requests can be concatenated.
    batchable: bool
    # Set when every input is batched with fixed trailing dimensions (see _exact_feeds).
    plan: _Plan | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fixed = all(
            spec.batched and all(d is not None for d in spec.shape[1:]) for spec in self.inputs
        )
        plan = tuple(
            (spec.name, spec.dtype, len(spec.shape), tuple(d or 0 for d in spec.shape[1:]))
            for spec in self.inputs
        )
        object.__setattr__(self, "plan", plan if fixed and plan else None)

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]


def _gather_bounds(model_bytes: bytes) -> dict[str, int]:
    """Graph inputs used as Gather indices on axis 0 of a constant table: name -> rows."""
    model = onnx.load_model_from_string(model_bytes)
    graph = model.graph
    tables = {init.name: list(init.dims) for init in graph.initializer}
    inputs = {value.name for value in graph.input} - set(tables)
    bounds: dict[str, int] = {}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.domain not in ("", "ai.onnx"):
            continue
        data, indices = node.input[0], node.input[1]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        dims = tables.get(data)
        if indices in inputs and dims and axis == 0 and dims[0] > 0:
            rows = int(dims[0])
            bounds[indices] = min(rows, bounds.get(indices, rows))
    return bounds


def read_signature(session: Any, model_bytes: bytes) -> Signature:
    """The signature of a loaded onnxruntime ``session`` built from ``model_bytes``."""
    try:
        bounds = _gather_bounds(model_bytes)
    except Exception:  # the registry checked the model; a graph we cannot scan just has no bounds
        bounds = {}
    inputs = []
    for arg in session.get_inputs():
        dtype = _ORT_DTYPES.get(arg.type)
        if dtype is None:
            raise ModelLoadFailed(
                f"Input {arg.name!r} has type {arg.type}, which serving cannot feed; "
                "export the model with numeric or boolean inputs."
            )
        shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or []))
        bound = bounds.get(arg.name) if dtype.kind in "iu" else None
        inputs.append(InputSpec(arg.name, dtype, shape, bound))
    outputs = [arg for arg in session.get_outputs()]
    batchable = all(spec.batched for spec in inputs) and all(
        out.shape and not isinstance(out.shape[0], int) for out in outputs
    )
    return Signature(tuple(inputs), tuple(out.name for out in outputs), batchable)


def _problem(spec: InputSpec, message: str, **details: Any) -> InvalidModelInput:
    return InvalidModelInput(
        f"Input {spec.name!r}: {message} The model takes {spec.describe()}.",
        details={"input": spec.name, "expected": spec.describe(), **details},
    )


def _check_fits(spec: InputSpec, array: np.ndarray[Any, Any]) -> None:
    """Integers within a narrower target type, checked before the cast would wrap them."""
    info = np.iinfo(spec.dtype)
    if array.min() < info.min or array.max() > info.max:
        raise _problem(spec, f"values must lie in [{info.min}, {info.max}].")


def _cast(spec: InputSpec, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    source, target = array.dtype, spec.dtype
    if source == target:
        return array
    if array.size == 0:  # an empty list parses as float64; there is no value to lose
        return array.astype(target)
    if source.kind not in "biuf":
        raise _problem(spec, f"values of type {source.name} are not numbers.")
    if target.kind == "b":
        raise _problem(spec, "expects booleans (true/false).")
    if source.kind == "b":
        raise _problem(spec, "expects numbers, got booleans.")
    if target.kind in "iu":
        if source.kind == "f":
            raise _problem(spec, "expects integers, got fractional numbers.")
        if not np.can_cast(source, target):
            _check_fits(spec, array)
        return array.astype(target)
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(target)  # an overflow becomes inf, which check_values refuses


def check_values(signature: Signature, feeds: dict[str, np.ndarray[Any, Any]]) -> None:
    """Values the model can take: finite floats, ids within their table. ``feeds`` are
    already cast (``check_inputs(..., values=False)``), one request's or a whole batch's:
    two reductions an input, paid once per batch when the batcher checks merged feeds."""
    for spec in signature.inputs:
        array = feeds[spec.name]
        if not array.size:
            continue
        if spec.dtype.kind == "f":
            if not np.isfinite(array).all():
                raise _problem(
                    spec, f"values must be finite numbers that fit in {spec.dtype.name}."
                )
        elif spec.index_bound is not None and _beyond(array, spec.index_bound):
            raise _problem(
                spec,
                f"ids must lie in [0, {spec.index_bound - 1}] (the model's table has "
                f"{spec.index_bound} rows); map unknown ids to a valid one.",
            )


def _beyond(array: np.ndarray[Any, Any], bound: int) -> bool:
    """Whether any id is negative or at least ``bound``: one reduction, not two (seen as
    unsigned, a negative id is larger than any table)."""
    if array.dtype.kind == "i":
        if bound > 1 << (8 * array.dtype.itemsize - 1):  # (a table past the type's half)
            return bool(array.min() < 0 or array.max() >= bound)
        array = array.view(array.dtype.str.replace("i", "u"))
    return bool(array.max() >= bound)


def _check_shape(spec: InputSpec, array: np.ndarray[Any, Any]) -> None:
    if array.ndim != len(spec.shape):
        raise _problem(
            spec, f"has {array.ndim} dimensions, expected {len(spec.shape)}.", shape=array.shape
        )
    for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
        if want is not None and got != want:
            raise _problem(
                spec, f"dimension {axis} is {got}, expected {want}.", shape=list(array.shape)
            )


def _exact_feeds(
    plan: _Plan, arrays: dict[str, np.ndarray[Any, Any]], max_rows: int
) -> tuple[dict[str, np.ndarray[Any, Any]], int] | None:
    """The feeds and rows when ``arrays`` are already exactly what the model takes (every
    input, each of its dtype and trailing dimensions, C-contiguous, the same rows, within
    ``max_rows``), as an .npz body from a well-behaved client is; None otherwise, and the
    full check decides. A few comparisons an input instead of a dozen operations."""
    if len(arrays) != len(plan):
        return None
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    rows = -1
    for name, dtype, rank, tail in plan:
        array = arrays.get(name)
        if (
            array is None
            or array.dtype != dtype
            or array.ndim != rank
            or array.shape[1:] != tail
            or not array.flags.c_contiguous
        ):
            return None
        if array.shape[0] != rows:
            if rows >= 0:
                return None
            rows = array.shape[0]
        feeds[name] = array
    return (feeds, rows) if 1 <= rows <= max_rows else None


def check_inputs(
    signature: Signature,
    arrays: dict[str, np.ndarray[Any, Any]],
    *,
    max_rows: int,
    values: bool = True,
) -> tuple[dict[str, np.ndarray[Any, Any]], int]:
    """``arrays`` cast and checked against ``signature``, and the rows they carry.

    Raises InvalidModelInput naming the first offending input. With ``values=False`` the
    value checks (:func:`check_values`) are left to the caller.
    """
    exact = None if signature.plan is None else _exact_feeds(signature.plan, arrays, max_rows)
    if exact is not None:
        if values:
            check_values(signature, exact[0])
        return exact
    expected = signature.input_names()
    missing = [n for n in expected if n not in arrays]
    extra = sorted(n for n in arrays if n not in set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"unknown {', '.join(repr(n[:64]) for n in extra[:10])}")
        first = (missing or extra)[0][:64]
        raise InvalidModelInput(
            f"Inputs do not match the model: {'; '.join(parts)}. "
            f"Send exactly these inputs: {', '.join(expected)}.",
            details={"input": first, "missing": missing, "unknown": extra[:10]},
        )
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    rows: int | None = None
    for spec in signature.inputs:
        array = arrays[spec.name]
        _check_shape(spec, array)
        array = _cast(spec, array)
        if spec.batched:
            if rows is None:
                rows = array.shape[0]
            elif array.shape[0] != rows:
                raise _problem(
                    spec,
                    f"has {array.shape[0]} rows but other inputs have {rows}; "
                    "every input needs one entry per row.",
                )
        feeds[spec.name] = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    rows = 1 if rows is None else rows
    if rows < 1 or rows > max_rows:
        spec = next(s for s in signature.inputs if s.batched)
        raise _problem(spec, f"carries {rows} rows; send between 1 and {max_rows} per request.")
    if values:
        check_values(signature, feeds)
    return feeds, rows
