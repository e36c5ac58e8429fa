"""CSRF tokens for the dashboard's forms: an HMAC of the session they belong to.

Every form carries ``csrf_token``; every POST checks it before doing anything. A logged-in
form's token is bound to the session's nonce, so a token from one session is worthless in
another. The login form has no session yet: its token is bound to a random nonce in a
short-lived ``tandem_csrf`` cookie (HttpOnly, SameSite=Strict), so a page elsewhere cannot
log a browser in under someone else's key either.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

from cloud.core.errors import Forbidden
from cloud.dashboard.session import SessionSecret, is_https

FIELD = "csrf_token"
LOGIN_COOKIE = "tandem_csrf"
LOGIN_COOKIE_TTL_S = 3600
_PURPOSE = "csrf"


class CsrfRejected(Forbidden):
    """A dashboard form posted without the CSRF token of the caller's session."""

    code = "csrf_failed"


def token_for(secret: SessionSecret, binding: str) -> str:
    return secret.sign(_PURPOSE, binding)


def check(secret: SessionSecret, binding: str | None, submitted: object) -> None:
    """Refuse (403 ``csrf_failed``) unless ``submitted`` is the token for ``binding``."""
    if (
        not binding
        or not isinstance(submitted, str)
        or not 0 < len(submitted) <= 100
        or not secret.verify(_PURPOSE, binding, submitted)
    ):
        raise CsrfRejected(
            "The form's CSRF token is missing or does not match your session; reload the "
            "page and submit the form again."
        )


def login_binding(request: Request) -> str | None:
    value = request.cookies.get(LOGIN_COOKIE)
    return value if value and len(value) <= 64 else None


def new_login_binding() -> str:
    return secrets.token_urlsafe(24)


def set_login_cookie(response: Response, request: Request, binding: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        binding,
        max_age=LOGIN_COOKIE_TTL_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )
