"""Dashboard sessions: a stateless, HMAC-signed cookie that names an admin key and expires.

Logging in checks the admin key once, through the auth service, and never stores it: the
cookie carries the key's id, an expiry and a random nonce, signed with a server secret kept
in the data directory (``keys/dashboard_session.key``, created on first use, mode 0600).
Every request re-checks the signature and expiry, and that the key is still not revoked,
so revoking an admin key ends its dashboard sessions too. Logging out clears the cookie.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from cloud.auth.principal import AdminPrincipal
from cloud.auth.service import authenticate
from cloud.auth.tables import AdminKeyRow
from cloud.core.errors import Forbidden, Unauthorized

COOKIE = "tandem_session"
SESSION_TTL_S = 8 * 3600
SECRET_FILE = "dashboard_session.key"  # noqa: S105  # a file name, not a secret
MAX_COOKIE_CHARS = 512


@dataclass(frozen=True, slots=True)
class DashboardSession:
    key_id: int
    name: str
    expires_at: int
    nonce: str


class SessionSecret:
    """The server secret that signs sessions and CSRF tokens, loaded once per app."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def load_or_create(cls, key_dir: Path) -> SessionSecret:
        key_dir.mkdir(parents=True, exist_ok=True)
        path = key_dir / SECRET_FILE
        try:
            # O_EXCL: two replicas starting at once agree on whichever file was made first.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
        key = path.read_bytes()
        if len(key) < 32:
            raise RuntimeError(f"{path} is truncated; delete it to make a new one.")
        return cls(key)

    def sign(self, purpose: str, value: str) -> str:
        digest = hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def verify(self, purpose: str, value: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(purpose, value), signature)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def log_in(session: Session, token: str) -> AdminPrincipal:
    """The admin behind ``token``; Unauthorized for a key nobody issued, Forbidden for a
    device token (devices may not use the dashboard)."""
    if not token or len(token) > MAX_COOKIE_CHARS:
        raise Unauthorized("Enter an admin key (from `tandem admin create-key`).")
    principal = authenticate(session, token)
    if not isinstance(principal, AdminPrincipal):
        raise Forbidden("That is a device token; the dashboard needs an admin key.")
    return principal


def issue(secret: SessionSecret, admin: AdminPrincipal, *, now: float | None = None) -> str:
    """A signed cookie value for ``admin``, valid for ``SESSION_TTL_S``."""
    expires = int(now if now is not None else time.time()) + SESSION_TTL_S
    payload = _b64(
        json.dumps(
            {"k": admin.key_id, "n": admin.name, "e": expires, "r": secrets.token_urlsafe(16)},
            separators=(",", ":"),
        ).encode()
    )
    return f"{payload}.{secret.sign('session', payload)}"


def read(secret: SessionSecret, value: str | None, *, now: float | None = None) -> DashboardSession:
    """The session in a cookie value; Unauthorized when missing, forged or expired."""
    if not value or len(value) > MAX_COOKIE_CHARS or value.count(".") != 1:
        raise Unauthorized("Log in to the dashboard with an admin key.")
    payload, signature = value.split(".")
    if not secret.verify("session", payload, signature):
        raise Unauthorized("The dashboard session is not valid; log in again.")
    try:
        fields = json.loads(_unb64(payload))
        found = DashboardSession(
            key_id=int(fields["k"]),
            name=str(fields["n"]),
            expires_at=int(fields["e"]),
            nonce=str(fields["r"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise Unauthorized("The dashboard session is not valid; log in again.") from exc
    if found.expires_at <= (now if now is not None else time.time()):
        raise Unauthorized("The dashboard session expired; log in again.")
    return found


def still_valid(session: Session, found: DashboardSession) -> bool:
    """Whether the session's admin key still exists unrevoked."""
    return (
        session.scalar(
            select(AdminKeyRow.id).where(
                AdminKeyRow.id == found.key_id, AdminKeyRow.revoked_at.is_(None)
            )
        )
        is not None
    )


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_TTL_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path="/dashboard", httponly=True, samesite="strict", secure=is_https(request)
    )
