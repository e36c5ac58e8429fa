"""One inference exchange, bytes to bytes: decode the body, run the model, encode the
answer. Shared by the route and the fast path, so both answer exactly alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from cloud.core.errors import ModelRunFailed
from cloud.serving import archive, codec
from cloud.serving.service import ServingPool, non_finite_outputs

# Bodies above this are decoded in a worker thread, so a large one does not stall the loop.
DECODE_INLINE_BYTES = 256 * 1024


@dataclass(slots=True)  # (not frozen: a frozen dataclass is slower to make, once a request)
class Answer:
    body: bytes
    media_type: str
    headers: Mapping[str, str]
    raw_headers: tuple[tuple[bytes, bytes], ...]  # the same, for raw ASGI


async def answer(
    pool: ServingPool,
    name: str,
    version: int | None,
    body: bytes,
    *,
    request_type: str,
    response_type: str,
    max_body_bytes: int,
) -> Answer:
    """The response to ``body`` (of ``request_type``) for model ``name``; raises the
    domain errors the error handler renders (422, 404, 429 ...)."""

    def decode() -> dict[str, np.ndarray[Any, Any]]:
        if request_type == codec.NPZ:
            # An .npz may be compressed: its arrays may take more room than its bytes.
            return codec.decode_npz(body, max_bytes=4 * max_body_bytes)
        return codec.decode_json(body)

    arrays: dict[str, np.ndarray[Any, Any]] | archive.Archive
    if len(body) > DECODE_INLINE_BYTES:
        arrays = await run_in_threadpool(decode)
    elif request_type == codec.NPZ:
        # A client's next body of a layout seen before is checked, not parsed.
        arrays = archive.decode(body, max_bytes=4 * max_body_bytes)
    else:
        arrays = decode()
    served, outputs = await pool.infer(name, version, arrays)
    if response_type == codec.NPZ:
        return Answer(codec.encode_npz(outputs), codec.NPZ, served.headers, served.raw_headers)
    bad = non_finite_outputs(outputs)
    if bad:
        raise ModelRunFailed(
            f"Model {served.name!r} version {served.version} produced NaN or infinity in "
            f"{', '.join(bad)}, which JSON cannot carry; request Accept: application/x-npz "
            "to receive them, or fix the model.",
            details={"outputs": bad},
        )
    return Answer(
        codec.encode_json(served.name, served.version, outputs),
        codec.JSON,
        served.headers,
        served.raw_headers,
    )
