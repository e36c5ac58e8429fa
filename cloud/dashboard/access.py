"""Who may see the dashboard: the session dependency, and login, logout and CSRF checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from cloud.core.errors import Unauthorized
from cloud.dashboard import csrf
from cloud.dashboard.rendering import context_of, state_of
from cloud.dashboard.session import COOKIE, DashboardSession, read, still_valid

LOGIN_PATH = "/dashboard/login"


class LoginRequired(Unauthorized):
    """A dashboard page asked for without a valid session: pages redirect to the login
    form, the JSON endpoints answer 401."""

    code = "dashboard_login_required"

    def __init__(self, message: str, *, page: bool) -> None:
        super().__init__(message)
        self.page = page


def _valid(request: Request, found: DashboardSession) -> bool:
    with context_of(request).db.session(write=False) as session:
        return still_valid(session, found)


async def _session(request: Request, *, page: bool) -> DashboardSession:
    try:
        found = read(state_of(request).secret, request.cookies.get(COOKIE))
    except Unauthorized as exc:
        raise LoginRequired(exc.message, page=page) from exc
    if not await run_in_threadpool(_valid, request, found):
        raise LoginRequired("The admin key of this session was revoked; log in again.", page=page)
    return found


async def page_session(request: Request) -> DashboardSession:
    return await _session(request, page=True)


async def api_session(request: Request) -> DashboardSession:
    return await _session(request, page=False)


PageSession = Annotated[DashboardSession, Depends(page_session)]
ApiSession = Annotated[DashboardSession, Depends(api_session)]


async def checked_form(request: Request, session: DashboardSession) -> FormData:
    """The posted form, once its CSRF token matches ``session`` (else 403 csrf_failed)."""
    form = await request.form()
    csrf.check(state_of(request).secret, session.nonce, form.get(csrf.FIELD))
    return form


def login_redirect(exc: LoginRequired) -> Response:
    return RedirectResponse(LOGIN_PATH, status_code=303)
