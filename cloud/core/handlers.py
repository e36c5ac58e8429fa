"""The one place where errors become HTTP responses.

Every error body has the same shape, ``{"error": {"code", "message", "details"?}}``:
``code`` is stable for programs, ``message`` tells a person what to do next.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud.core.errors import TandemError

log = logging.getLogger("tandem.errors")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


async def _on_tandem_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TandemError)
    headers = dict(exc.headers)
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="tandem"')
    return error_response(exc.status_code, exc.code, exc.message, exc.details, headers)


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(
            400,
            "invalid_json",
            "The request body is not valid JSON; send a JSON object with "
            "Content-Type: application/json.",
        )
    details = [
        {
            "field": _location(tuple(e.get("loc", ()))),
            "problem": str(e.get("msg", "")),
            "type": e.get("type"),
        }
        for e in errors
    ]
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
    more = f" (and {len(details) - 5} more)" if len(details) > 5 else ""
    return error_response(
        422,
        "validation_error",
        f"The request is invalid: {summary}{more}. Fix these fields and retry.",
        details,
    )


async def _on_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = "No such endpoint; see /docs for the API."
    if exc.status_code == 405:
        message = "This endpoint does not accept that method; see /docs for the API."
    return error_response(exc.status_code, code, message, headers=dict(exc.headers or {}))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id", "?")
    log.exception("unhandled error", extra={"request_id": request_id})
    return error_response(
        500,
        "internal_error",
        f"An unexpected error happened (request id {request_id}); it was logged. "
        "Retry, and report the request id if it persists.",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TandemError, _on_tandem_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
