"""FastAPI dependencies as ``Annotated`` aliases: the context, a database session, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from cloud.auth.principal import AdminPrincipal, DevicePrincipal, Principal
from cloud.auth.service import authenticate
from cloud.core.context import CloudContext
from cloud.core.errors import Forbidden, Unauthorized


def get_context(request: Request) -> CloudContext:
    context: CloudContext = request.app.state.context
    return context


Context = Annotated[CloudContext, Depends(get_context)]


def get_session(context: Context) -> Iterator[Session]:
    """One session per request, committed when the handler returns without error."""
    with context.db.session() as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


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


def get_principal(request: Request, context: Context) -> Principal:
    token = bearer_token(request)
    # A short session of its own: authentication commits last_seen even if the handler fails.
    with context.db.session() as session:
        return authenticate(session, token)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: CurrentPrincipal) -> AdminPrincipal:
    if not isinstance(principal, AdminPrincipal):
        raise Forbidden("This endpoint needs an admin key; device tokens may not call it.")
    return principal


def require_device(principal: CurrentPrincipal) -> DevicePrincipal:
    if not isinstance(principal, DevicePrincipal):
        raise Forbidden(
            "This endpoint answers for the calling device and needs a device token; "
            "admins use the /v1/devices/{device_id} endpoints instead."
        )
    return principal


Admin = Annotated[AdminPrincipal, Depends(require_admin)]
CurrentDevice = Annotated[DevicePrincipal, Depends(require_device)]
