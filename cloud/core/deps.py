"""FastAPI dependencies as ``Annotated`` aliases: the context, a database session, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from cloud.auth.principal import AdminPrincipal, DevicePrincipal, Principal
from cloud.auth.service import authenticate, needs_last_seen, touch_last_seen
from cloud.core.context import CloudContext
from cloud.core.errors import Forbidden, Unauthorized
from cloud.core.secrets import hash_token

# Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in
# the thread pool, and a hop there costs more than the work itself.


async def get_context(request: Request) -> CloudContext:
    context: CloudContext = request.app.state.context
    return context


Context = Annotated[CloudContext, Depends(get_context)]


def get_session(context: Context) -> Iterator[Session]:
    """One session per request, committed when the handler returns without error."""
    with context.db.session() as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


def get_read_session(context: Context) -> Iterator[Session]:
    """A read-only transaction: on SQLite it does not queue for the write lock."""
    with context.db.session(write=False) as session:
        yield session


ReadSession = Annotated[Session, Depends(get_read_session)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized(
            "This endpoint needs credentials: "
            "send 'Authorization: Bearer <admin key or device token>'."
        )
    if scheme.lower() != "bearer" or not token.strip() or len(token) > 512:
        raise Unauthorized("Malformed Authorization header; use 'Authorization: Bearer <token>'.")
    return token.strip()


def _authenticate(context: CloudContext, token: str) -> Principal:
    with context.db.session(write=False) as session:
        principal = authenticate(session, token)
    if isinstance(principal, DevicePrincipal) and needs_last_seen(principal):
        # Its own short write, at most once a minute per device, committed even if the
        # handler then fails.
        with context.db.session() as session:
            touch_last_seen(session, principal)
    return principal


async def get_principal(request: Request) -> Principal:
    """The caller, from the per-replica cache or (once a minute per token) the database."""
    # The context comes straight from the app rather than as a sub-dependency: each
    # dependency level costs FastAPI real work on every request of this hot path.
    context: CloudContext = request.app.state.context
    token = bearer_token(request)
    digest = hash_token(token)
    principal = context.auth_cache.get(digest)
    if principal is None:
        principal = await run_in_threadpool(_authenticate, context, token)
        context.auth_cache.put(digest, principal)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def require_admin(principal: CurrentPrincipal) -> AdminPrincipal:
    if not isinstance(principal, AdminPrincipal):
        raise Forbidden("This endpoint needs an admin key; device tokens may not call it.")
    return principal


async def require_device(principal: CurrentPrincipal) -> DevicePrincipal:
    if not isinstance(principal, DevicePrincipal):
        raise Forbidden(
            "This endpoint answers for the calling device and needs a device token; "
            "admins use the /v1/devices/{device_id} endpoints instead."
        )
    return principal


Admin = Annotated[AdminPrincipal, Depends(require_admin)]
CurrentDevice = Annotated[DevicePrincipal, Depends(require_device)]
