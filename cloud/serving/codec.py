"""Inference bodies in and out: JSON for convenience, NumPy ``.npz`` for speed.

Request ``Content-Type`` picks the decoder and ``Accept`` the response encoding:

- ``application/json``: ``{"inputs": {"<name>": <nested list>, ...}}`` in,
  ``{"name", "version", "outputs": {"<name>": <nested list>}}`` out;
- ``application/x-npz``: an ``np.savez`` archive, one array per input, named like the
  input; the response is an archive of the outputs, with the model name and version in the
  ``X-Tandem-Model`` and ``X-Tandem-Model-Version`` headers.

Both decoders are total over their input: any bytes give arrays or a 4xx error. Pickled
(object) arrays are never loaded.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from cloud.core.errors import (
    BadRequest,
    InvalidModelInput,
    NotAcceptable,
    UnsupportedMediaType,
)
from cloud.serving import archive, npz


class InvalidJsonBody(BadRequest):
    code = "invalid_json"


JSON = "application/json"
NPZ = "application/x-npz"


def media_type(header: str | None) -> str:
    """The request's body format from its Content-Type; JSON when there is none."""
    if not header:
        return JSON
    kind = header.partition(";")[0].strip().lower()
    if kind == JSON or (kind.startswith("application/") and kind.endswith("+json")):
        return JSON
    if kind == NPZ:
        return NPZ
    raise UnsupportedMediaType(
        f"Inference bodies are {JSON} or {NPZ}, not {kind[:100]!r}; "
        "send one of those with a matching Content-Type.",
        details={"expected": [JSON, NPZ], "received": kind[:100]},
    )


def response_type(accept: str | None, default: str) -> str:
    """The response format from the Accept header; ``default`` (the request's) for ``*/*``."""
    if not accept:
        return default
    offered: list[str] = []
    for part in accept.split(","):
        kind, _, params = part.partition(";")
        if any(p.strip().replace(" ", "") in ("q=0", "q=0.0", "q=0.00") for p in params.split(";")):
            continue
        offered.append(kind.strip().lower())
    for kind in offered:
        if kind in (JSON, NPZ):
            return kind
        if kind in ("*/*", "application/*"):
            return default
    raise NotAcceptable(
        f"Inference responses are {JSON} or {NPZ}; the Accept header allows neither. "
        "Accept one of them (or */*).",
        details={"offered": [JSON, NPZ]},
    )


def _as_array(name: str, value: Any) -> np.ndarray[Any, Any]:
    if isinstance(value, bool) or not isinstance(value, list | int | float):
        raise InvalidModelInput(
            f"Input {name!r} must be a number or a (nested) list of numbers.",
            details={"input": name},
        )
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidModelInput(
            f"Input {name!r} is not a rectangular array of numbers: every list at one depth "
            "must have the same length, and nesting must not exceed 64 levels.",
            details={"input": name, "problem": str(exc)[:200]},
        ) from None
    if array.dtype.kind not in "biuf":
        raise InvalidModelInput(
            f"Input {name!r} holds values that are not numbers (strings, nulls, objects, or "
            "integers beyond 64 bits); send numbers only.",
            details={"input": name},
        )
    return array


def decode_json(body: bytes) -> dict[str, np.ndarray[Any, Any]]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidJsonBody(
            'The request body is not valid JSON; send {"inputs": {"<input>": [...]}} with '
            "Content-Type: application/json."
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), dict):
        raise InvalidModelInput(
            'The body must be a JSON object {"inputs": {"<input name>": <nested list>, ...}}.',
            details={"input": None},
        )
    unknown = sorted(k for k in document if k != "inputs")
    if unknown:
        raise InvalidModelInput(
            f"Unknown top-level fields {', '.join(repr(k[:64]) for k in unknown[:5])}; "
            'the body holds only "inputs".',
            details={"input": None, "unknown": [k[:64] for k in unknown[:5]]},
        )
    inputs: dict[str, Any] = document["inputs"]
    return {name: _as_array(name, value) for name, value in inputs.items()}


def decode_npz(body: bytes, *, max_bytes: int) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays of an ``np.savez`` archive, with at most ``max_bytes`` of array data."""
    return npz.read_arrays(body, max_bytes=max_bytes)


def encode_json(name: str, version: int, outputs: dict[str, np.ndarray[Any, Any]]) -> bytes:
    document = {
        "name": name,
        "version": version,
        "outputs": {key: value.tolist() for key, value in outputs.items()},
    }
    return json.dumps(document, allow_nan=False, separators=(",", ":")).encode()


def encode_npz(outputs: dict[str, np.ndarray[Any, Any]]) -> bytes:
    """What ``np.savez`` would write, from a template per output shape."""
    return archive.encode(outputs)
