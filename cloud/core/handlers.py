"""The one place where errors become HTTP responses.

Every error body has the same shape, ``{"error": {"code", "message", "details"?}}``:
``code`` is stable for programs, ``message`` tells a person what to do next.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud.core.errors import TandemError
from device_sdk.wire import ErrorBody

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
_JSON = "application/json"
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
# FastAPI's detail when reading a JSON body fails other than with a syntax error: nesting
# too deep (RecursionError), an integer past Python's digit limit, bytes that are not UTF-8.
_FASTAPI_UNREADABLE_BODY = "There was an error parsing the body"


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# The error statuses every route may answer, each with the envelope the handlers below
# send, for the OpenAPI document: pass as ``include_router(..., responses=ERROR_RESPONSES)``.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("The request cannot be parsed (e.g. `invalid_json`, `invalid_cursor`)."),
    401: _documented("No credentials, or credentials nobody issued."),
    403: _documented("Valid credentials that may not do this."),
    404: _documented("No such resource, or none available to the caller."),
    409: _documented("The request conflicts with what is stored."),
    413: _documented("The body is over the server's upload limit."),
    415: _documented("The body was sent with a Content-Type this endpoint does not take."),
    422: _documented("The request's content is invalid; `details` names each field."),
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


def tandem_error_response(exc: TandemError) -> JSONResponse:
    """The response for a domain error: its status, stable code, message and details."""
    headers = dict(exc.headers)
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="tandem"')
    return error_response(exc.status_code, exc.code, exc.message, exc.details, headers)


async def _on_tandem_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TandemError)
    return tandem_error_response(exc)


def _invalid_json() -> JSONResponse:
    return error_response(
        400,
        "invalid_json",
        "The request body is not valid JSON; send a JSON object with "
        "Content-Type: application/json.",
    )


def _expected_media_type(request: Request) -> str | None:
    """The media type the matched route reads its body as; None when it takes no body."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return None
    field_info = route.body_field.field_info
    return field_info.media_type if isinstance(field_info, params.Body) else _JSON


def _accepts(expected: str, received: str) -> bool:
    if expected == _JSON:
        return received == _JSON or (
            received.startswith("application/") and received.endswith("+json")
        )
    return received in _FORMS  # the form parser reads either encoding


def _unsupported_media_type(request: Request, exc: RequestValidationError) -> JSONResponse | None:
    """415 when the body failed validation because it came in a type the route cannot read.

    FastAPI reads a body as JSON only under a JSON Content-Type (a missing one included),
    and as a form only under a form type; anything else reaches validation as raw bytes or
    an empty form, which would otherwise be reported as missing or mistyped fields.
    """
    expected = _expected_media_type(request)
    if expected is None or not any(e.get("loc", ())[:1] == ("body",) for e in exc.errors()):
        return None
    header = request.headers.get("content-type")
    received = header.partition(";")[0].strip().lower() if header else None
    if received is None and not exc.body:
        return None  # nothing was sent: the missing fields are the better answer
    if received is not None and _accepts(expected, received):
        return None
    sent = f"Content-Type {received}" if received else "no Content-Type"
    return error_response(
        415,
        "unsupported_media_type",
        f"This endpoint reads its body as {expected}, but the request has {sent}; "
        f"send the body with Content-Type: {expected}.",
        {"expected": expected, "received": received},
    )


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _invalid_json()
    wrong_type = _unsupported_media_type(request, exc)
    if wrong_type is not None:
        return wrong_type
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


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if (
        exc.status_code == 400
        and exc.detail == _FASTAPI_UNREADABLE_BODY
        and _expected_media_type(request) == _JSON
    ):
        return _invalid_json()
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
