"""Model inference over HTTP: ``POST /v1/models/{name}/infer``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from cloud.core.body_limit import read_within
from cloud.core.db import INT32_MAX
from cloud.core.deps import CurrentPrincipal
from cloud.core.errors import PayloadTooLarge
from cloud.registry.schemas import MODEL_NAME_PATTERN
from cloud.serving import codec
from cloud.serving.exchange import answer
from cloud.serving.schemas import InferRequest, InferResponse
from cloud.serving.service import ServingPool

router = APIRouter(prefix="/v1/models", tags=["serving"])

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            codec.JSON: {"schema": InferRequest.model_json_schema()},
            codec.NPZ: {
                "schema": {"type": "string", "format": "binary"},
                "example": "np.savez(buffer, **inputs)",
            },
        },
    }
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferResponse,
        "content": {codec.NPZ: {"schema": {"type": "string", "format": "binary"}}},
        "description": "The outputs, as JSON or (with Accept: application/x-npz) an .npz "
        "archive; X-Tandem-Model and X-Tandem-Model-Version name the version that answered.",
    },
    406: {"description": "The Accept header allows neither JSON nor .npz."},
    429: {"description": "The model's queue is full (`overloaded`); retry after Retry-After."},
    500: {
        "description": "The model failed to load or run (`model_load_failed`, `model_run_failed`)."
    },
}


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The inference body is over the {limit}-byte limit; send fewer rows per request "
        "(or the binary .npz form), or raise TANDEM_SERVING_MAX_BODY_BYTES.",
        details={"max_bytes": limit},
    )


@router.post(
    "/{name}/infer",
    openapi_extra=_BODY_DOC,
    responses=_RESPONSES,
    response_model=None,
)
async def infer(
    request: Request,
    name: Annotated[str, Path(max_length=64, pattern=MODEL_NAME_PATTERN)],
    _caller: CurrentPrincipal,
    version: Annotated[
        int | None,
        Query(ge=1, le=INT32_MAX, description="Pin a version; the latest when omitted."),
    ] = None,
) -> Response:
    """Run a registered model (either target) on a batch of inputs, with a device token or
    an admin key. Concurrent requests for one version are merged into one onnxruntime call.

    Inputs are checked against the model's signature (422 `invalid_model_input` naming the
    input); 429 `overloaded` with Retry-After when the queue is full."""
    pool: ServingPool = request.app.state.serving
    settings = request.app.state.context.settings
    request_type = codec.media_type(request.headers.get("content-type"))
    response_type = codec.response_type(request.headers.get("accept"), request_type)
    limit = settings.serving_max_body_bytes
    body = await read_within(request, limit, _too_large(limit))
    result = await answer(
        pool,
        name,
        version,
        body,
        request_type=request_type,
        response_type=response_type,
        max_body_bytes=settings.serving_max_body_bytes,
    )
    return Response(result.body, media_type=result.media_type, headers=result.headers)


@router.post("/-/noop", tags=["serving"], response_model=None)
async def noop(request: Request, _caller: CurrentPrincipal) -> Response:
    """Authenticate, read the body, answer `{}`: what an inference request costs in HTTP
    alone, to tell network and server overhead from model time. Runs nothing."""
    limit = request.app.state.context.settings.serving_max_body_bytes
    await read_within(request, limit, _too_large(limit))
    return Response(b"{}", media_type="application/json")
