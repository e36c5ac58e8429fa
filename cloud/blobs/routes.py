"""Downloading blobs by digest: immutable, cacheable, resumable with Range."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from cloud.blobs.service import readable_blob
from cloud.core.blobstore import InvalidDigest, is_sha256
from cloud.core.deps import Context, CurrentPrincipal
from cloud.core.errors import InvalidRange
from cloud.core.http_range import parse_range

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])
IMMUTABLE = "private, max-age=31536000, immutable"


def serve_blob(request: Request, context: Context, sha256: str, media_type: str) -> Response:
    """A blob as a response: 304 for a matching ETag, 206 for a satisfiable Range, else 200."""
    etag = f'"{sha256}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "Accept-Ranges": "bytes"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    size = context.blobs.size(sha256)
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
    if byte_range is None:
        headers["Content-Length"] = str(size)
        body = context.blobs.open_range(sha256, 0, size - 1) if size else iter([b""])
        return StreamingResponse(body, status_code=200, media_type=media_type, headers=headers)
    headers["Content-Length"] = str(byte_range.length)
    headers["Content-Range"] = byte_range.content_range(size)
    return StreamingResponse(
        context.blobs.open_range(sha256, byte_range.start, byte_range.end),
        status_code=206,
        media_type=media_type,
        headers=headers,
    )


@router.get("/{sha256}", response_class=StreamingResponse)
def download_blob(
    sha256: str, request: Request, principal: CurrentPrincipal, context: Context
) -> Response:
    """Download a blob (an ONNX model, a task bundle) by its sha256. Supports `Range`
    (single ranges) and `If-None-Match`; responses are immutable and cacheable for a year.
    Devices may download only blobs meant for devices."""
    if not is_sha256(sha256):
        raise InvalidDigest(
            f"{sha256[:80]!r} is not a sha256 digest (64 lowercase hex characters)."
        )
    # A short read: no transaction stays open while the bytes stream out.
    with context.db.session(write=False) as session:
        row = readable_blob(session, sha256, principal)
    return serve_blob(request, context, row.sha256, row.media_type)
