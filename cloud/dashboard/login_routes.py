"""Logging in to the dashboard with an admin key, and out again."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from cloud.auth.principal import AdminPrincipal
from cloud.core.errors import TandemError
from cloud.dashboard import csrf
from cloud.dashboard.access import LoginRequired, PageSession, checked_form, page_session
from cloud.dashboard.rendering import context_of, render, state_of
from cloud.dashboard.session import clear_cookie, is_https, issue, log_in, set_cookie

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def _log_in(request: Request, key: str) -> AdminPrincipal:
    with context_of(request).db.session(write=False) as session:
        return log_in(session, key)


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The login form (an admin key), with a CSRF token bound to a fresh cookie."""
    try:
        await page_session(request)  # already logged in (and the key still valid)
        return RedirectResponse("/dashboard", status_code=303)
    except LoginRequired:
        pass
    binding = csrf.new_login_binding()
    response = render(request, "login.html", None, csrf_binding=binding, error=None)
    csrf.set_login_cookie(response, request, binding)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    state = state_of(request)
    form = await request.form()
    binding = csrf.login_binding(request)
    csrf.check(state.secret, binding, form.get(csrf.FIELD))
    key = form.get("admin_key")
    try:
        admin = await run_in_threadpool(
            _log_in, request, key.strip() if isinstance(key, str) else ""
        )
    except TandemError as exc:
        return render(
            request,
            "login.html",
            None,
            status=exc.status_code,
            csrf_binding=binding,
            error=exc.message,
        )
    response = RedirectResponse("/dashboard", status_code=303)
    set_cookie(response, request, issue(state.secret, admin))
    response.delete_cookie(
        csrf.LOGIN_COOKIE, path="/dashboard", samesite="strict", secure=is_https(request)
    )
    return response


@router.post("/logout")
async def logout(request: Request, session: PageSession) -> Response:
    await checked_form(request, session)
    response = RedirectResponse("/dashboard/login", status_code=303)
    clear_cookie(response, request)
    return response
