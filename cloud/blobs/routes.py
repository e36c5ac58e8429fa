"""Downloading blobs by digest: immutable, cacheable, resumable with Range."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from cloud.auth.principal import Principal
from cloud.blobs.service import readable_blob
from cloud.blobs.tables import BlobRow
from cloud.core.blobstore import InvalidDigest, is_sha256
from cloud.core.context import CloudContext
from cloud.core.deps import Context, CurrentPrincipal
from cloud.core.errors import InvalidRange
from cloud.core.http_range import parse_range

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])
SMALL_BLOB = 1 << 20
IMMUTABLE = "private, max-age=31536000, immutable"
# One entity tag, weak or strong (RFC 9110 8.8.3). Finding the quoted tags, rather than
# splitting on commas, keeps a comma inside a quoted tag from cutting it in two.
_ENTITY_TAG = re.compile(r'(?:W/)?("[^"]*")')


def if_none_match(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` value matches the strong ``etag`` (RFC 9110 13.1.2).

    ``*`` matches any current representation; otherwise the value is a list of tags,
    compared weakly: ``W/"x"`` matches ``"x"``.
    """
    if header is None:
        return False
    if header.strip(" \t") == "*":
        return True
    return etag in _ENTITY_TAG.findall(header)


def serve_blob(request: Request, context: CloudContext, sha256: str, media_type: str) -> Response:
    """A blob as a response: 304 for a matching ETag, 206 for a satisfiable Range, else 200.

    A HEAD request gets the 200's headers, Content-Length included, and the file is not
    opened; Range does not apply to it (RFC 9110 14.2 defines ranges for GET only).
    """
    etag = f'"{sha256}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "Accept-Ranges": "bytes"}
    if if_none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    size = context.blobs.size(sha256)
    if request.method == "HEAD":
        headers["Content-Length"] = str(size)
        return Response(status_code=200, media_type=media_type, headers=headers)
    range_header = request.headers.get("range")
    # If-Range with another validator means the client's partial copy is stale: send it all.
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range != etag:
        range_header = None
    try:
        byte_range = parse_range(range_header, size)
    except InvalidRange as exc:
        exc.details = {"size": size}
        exc.headers["Content-Range"] = f"bytes */{size}"
        raise
    status_code, start, end = 200, 0, size - 1
    if byte_range is not None:
        status_code, start, end = 206, byte_range.start, byte_range.end
        headers["Content-Range"] = byte_range.content_range(size)
    headers["Content-Length"] = str(end - start + 1)
    if end - start < SMALL_BLOB:
        # Read at once, in this thread: streaming costs a thread-pool round trip per chunk,
        # which for a typical task bundle is more than reading the whole file.
        body = b"".join(context.blobs.open_range(sha256, start, end))
        return Response(body, status_code=status_code, media_type=media_type, headers=headers)
    return StreamingResponse(
        context.blobs.open_range(sha256, start, end),
        status_code=status_code,
        media_type=media_type,
        headers=headers,
    )


def _readable(sha256: str, principal: Principal, context: CloudContext) -> BlobRow:
    if not is_sha256(sha256):
        raise InvalidDigest(
            f"{sha256[:80]!r} is not a sha256 digest (64 lowercase hex characters)."
        )
    # A short read: no transaction stays open while the bytes stream out.
    with context.db.session(write=False) as session:
        return readable_blob(session, sha256, principal)


@router.get("/{sha256}", response_class=StreamingResponse)
def download_blob(
    sha256: str, request: Request, principal: CurrentPrincipal, context: Context
) -> Response:
    """Download a blob (an ONNX model, a task bundle) by its sha256. Supports `Range`
    (single ranges) and `If-None-Match`; responses are immutable and cacheable for a year.
    Devices may download only blobs meant for devices."""
    row = _readable(sha256, principal, context)
    return serve_blob(request, context, row.sha256, row.media_type)


@router.head("/{sha256}", response_class=Response)
def inspect_blob(
    sha256: str, request: Request, principal: CurrentPrincipal, context: Context
) -> Response:
    """A blob's download headers without its bytes: `Content-Length` (its size), `ETag`
    and `Accept-Ranges`, so a downloader can plan ranged requests. Same access as GET."""
    row = _readable(sha256, principal, context)
    return serve_blob(request, context, row.sha256, row.media_type)
