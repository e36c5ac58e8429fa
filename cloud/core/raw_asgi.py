"""What the fast paths share: the cached device behind a request, and answering in raw ASGI.

A fast path (``cloud/deploy/fast_path.py``, ``cloud/serving/fast_path.py``) answers only
requests whose device token is already in the replica's cache, as the full path decides
(a cache hit needs no query and no write); anything else goes on to the full app, which
authenticates it. A fast path that read the body before deciding hands the full app a
``receive`` that replays it.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Message, Receive, Send

from cloud.auth.principal import DevicePrincipal
from cloud.core.context import CloudContext
from cloud.core.secrets import hash_token


@dataclass(frozen=True)
class RouteTemplate:
    """Stands in for the matched route in ``scope["route"]`` of a request a fast path
    answered, so request metrics carry the route template."""

    path: str


def cached_token_hash(headers: dict[bytes, bytes]) -> str | None:
    """The hash of the request's bearer token, if one is there and well formed."""
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return hash_token(token)


def cached_device(context: CloudContext, headers: dict[bytes, bytes]) -> DevicePrincipal | None:
    """The calling device, if its bearer token is well formed and in the cache."""
    token_hash = cached_token_hash(headers)
    if token_hash is None:
        return None
    principal = context.auth_cache.get(token_hash)
    return principal if isinstance(principal, DevicePrincipal) else None


async def respond(
    send: Send, status: int, body: bytes, media_type: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Send a whole response: ``headers``, then Content-Length and Content-Type."""
    headers = [
        *headers,
        (b"content-length", str(len(body)).encode()),
        (b"content-type", media_type),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, declared: int) -> tuple[bytes | None, list[Message]]:
    """The body when it arrives whole and exactly as long as ``declared`` (a Content-Length
    the caller has already bounded); else None. Either way, the messages consumed, for
    :func:`replay`."""
    chunks: list[bytes] = []
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages  # the client went away
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > declared:
            return None, messages
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return (b"".join(chunks), messages) if size == declared else (None, messages)


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands the full path the messages a fast path already consumed."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
