"""The admin dashboard over HTTP: pages under /dashboard, and small JSON endpoints the
pages poll to refresh their figures without a reload. HTTP only; queries live in
``queries``/``rollouts``, actions in ``service``."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from cloud.core.db import INT32_MAX, utcnow
from cloud.core.errors import Conflict, InvalidCursor, NotFound
from cloud.core.handlers import tandem_error_response
from cloud.dashboard import csrf, queries, rollouts, service
from cloud.dashboard.access import (
    ApiSession,
    LoginRequired,
    PageSession,
    checked_form,
    login_redirect,
)
from cloud.dashboard.insight import learning_view, router_view
from cloud.dashboard.login_routes import router as login_router
from cloud.dashboard.rendering import DashboardState, context_of, render
from cloud.deploy.schemas import Action

router = APIRouter(prefix="/dashboard", include_in_schema=False)

DeploymentId = Annotated[int, PathParam(ge=1, le=INT32_MAX)]
Cursor = Annotated[str, Query(max_length=200)]
_FILTER = re.compile(r"^[\w.@+:/ -]{0,64}$")
_ID_PREFIX = re.compile(r"^[0-9a-fA-F-]{0,36}$")
_TASK = re.compile(r"^([a-z0-9][a-z0-9._-]{0,63})?$")
_STATES = ("", "active", "paused", "rolled_back")
MAX_POLLED = 50


def _read(request: Request, work: Any, *args: Any) -> Any:
    with context_of(request).db.session(write=False) as session:
        return work(session, *args)


# --- overview ---------------------------------------------------------------------------


async def _overview(request: Request) -> dict[str, Any]:
    # The fleet's GROUP BYs and the releases' progress counts run side by side, each in
    # its own read transaction: SQLite releases the GIL while it counts.
    online = len(context_of(request).online)
    fleet, releases, states = await asyncio.gather(
        run_in_threadpool(_read, request, queries.fleet, online),
        run_in_threadpool(_read, request, rollouts.in_progress),
        run_in_threadpool(_read, request, rollouts.state_counts),
    )
    return {"fleet": fleet, "releases": releases, "deployment_states": states}


def _live_fields(found: dict[str, Any]) -> dict[str, Any]:
    fleet: queries.Fleet = found["fleet"]
    return {
        "fleet": {
            "total": fleet.total,
            "online_now": fleet.online_now,
            "seen_recently": fleet.seen_recently,
        },
        "deployments": [d.as_json() for d in found["releases"]],
    }


@router.get("")
async def overview(request: Request, session: PageSession) -> Response:
    """Fleet size, devices online, breakdowns, releases in progress with their health."""
    return render(request, "overview.html", session, **await _overview(request))


@router.get("/api/overview")
async def overview_json(request: Request, _session: ApiSession) -> JSONResponse:
    found = await _overview(request)
    return JSONResponse(_live_fields(found), headers={"Cache-Control": "no-store"})


# --- devices ----------------------------------------------------------------------------


@router.get("/devices")
async def devices(
    request: Request,
    session: PageSession,
    q: Annotated[str, Query(max_length=200)] = "",
    platform: Annotated[str, Query(max_length=200)] = "",
    app_version: Annotated[str, Query(max_length=200)] = "",
    region: Annotated[str, Query(max_length=200)] = "",
    tag: Annotated[str, Query(max_length=200)] = "",
    cursor: Cursor = "",
) -> Response:
    """Devices matching a search (id prefix) and filters, a page at a time."""
    search = queries.DeviceSearch(
        q=q.strip(),
        platform=platform.strip(),
        app_version=app_version.strip(),
        region=region.strip(),
        tag=tag.strip(),
    )
    problems = [
        f"{name}: at most 64 letters, digits, spaces and . @ + : / _ -"
        for name, value in search.active().items()
        if name != "q" and not _FILTER.match(value)
    ]
    if not _ID_PREFIX.match(search.q):
        problems.append("search: a device id or its beginning (hex digits and hyphens)")
    if problems:
        return render(
            request,
            "devices.html",
            session,
            status=422,
            search=search,
            problems=problems,
            found=None,
            now=utcnow(),
        )
    try:
        found = await run_in_threadpool(_read, request, queries.devices, search, cursor or None)
    except InvalidCursor as exc:
        return render(
            request,
            "devices.html",
            session,
            status=400,
            search=search,
            problems=[exc.message],
            found=None,
            now=utcnow(),
        )
    return render(
        request, "devices.html", session, search=search, problems=[], found=found, now=utcnow()
    )


@router.get("/devices/{device_id}")
async def device(
    request: Request, session: PageSession, device_id: Annotated[str, PathParam(max_length=64)]
) -> Response:
    """One device: attributes, tags, desired tasks, latest status reports."""
    found = await run_in_threadpool(_read, request, queries.device, device_id.lower())
    if found is None:
        return render(
            request,
            "not_found.html",
            session,
            status=404,
            message=f"No device {device_id!r}; it may have been removed.",
        )
    return render(request, "device.html", session, found=found, now=utcnow())


# --- models -----------------------------------------------------------------------------


@router.get("/models")
async def models(request: Request, session: PageSession, cursor: Cursor = "") -> Response:
    """Registered model versions: target, size, signature, metrics."""
    try:
        found = await run_in_threadpool(_read, request, queries.models, cursor or None)
    except InvalidCursor as exc:
        return render(request, "models.html", session, status=400, found=None, error=exc.message)
    return render(request, "models.html", session, found=found, error=None)


# --- deployments ------------------------------------------------------------------------


def _deployments_page(session: Any, state: str, task: str, cursor: str) -> dict[str, Any]:
    items, next_cursor = rollouts.page(
        session, state=state or None, task=task or None, cursor=cursor or None
    )
    return {
        "items": items,
        "next_cursor": next_cursor,
        "task_versions": rollouts.task_versions(session),
    }


async def _deployments(
    request: Request,
    session: Any,
    *,
    state: str = "",
    task: str = "",
    cursor: str = "",
    status: int = 200,
    form: dict[str, str] | None = None,
    form_errors: list[str] | None = None,
) -> Response:
    problems = []
    if state not in _STATES:
        problems.append("state: one of active, paused, rolled_back")
    if not _TASK.match(task):
        problems.append("task: a task name (lowercase letters, digits, . _ -)")
    found: dict[str, Any] = {"items": [], "next_cursor": None, "task_versions": []}
    if problems:
        status = 422
    else:
        try:
            found = await run_in_threadpool(_read, request, _deployments_page, state, task, cursor)
        except InvalidCursor as exc:
            problems.append(exc.message)
            status = 400
    return render(
        request,
        "deployments.html",
        session,
        status=status,
        state=state,
        task=task,
        problems=problems,
        form=form or {"target": '{"everyone": true}', "stages": "10, 50, 100", "priority": "0"},
        form_errors=form_errors or [],
        **found,
    )


@router.get("/deployments")
async def deployments(
    request: Request,
    session: PageSession,
    state: Annotated[str, Query(max_length=32)] = "",
    task: Annotated[str, Query(max_length=200)] = "",
    cursor: Cursor = "",
) -> Response:
    """Tasks' deployments with live per-stage progress, and the form to create one."""
    return await _deployments(request, session, state=state, task=task, cursor=cursor)


@router.post("/deployments")
async def create_deployment(request: Request, session: PageSession) -> Response:
    form = await checked_form(request, session)
    submitted = {k: v for k, v in form.items() if isinstance(v, str) and k != csrf.FIELD}
    try:
        body = service.deployment_from_form(form)
        deployment_id = await service.create_deployment(context_of(request), body)
    except service.FormErrors as exc:
        return await _deployments(
            request, session, status=422, form=submitted, form_errors=exc.problems
        )
    return RedirectResponse(f"/dashboard/deployments/{deployment_id}", status_code=303)


async def _deployment_page(
    request: Request, session: Any, deployment_id: int, *, status: int = 200, error: str = ""
) -> Response:
    found = await run_in_threadpool(_read, request, rollouts.one, deployment_id)
    if found is None:
        return render(
            request,
            "not_found.html",
            session,
            status=404,
            message=f"No deployment {deployment_id}.",
        )
    return render(request, "deployment.html", session, status=status, d=found, error=error)


@router.get("/deployments/{deployment_id}")
async def deployment(
    request: Request, session: PageSession, deployment_id: DeploymentId
) -> Response:
    """One deployment: policy, state, progress per stage, and its controls."""
    return await _deployment_page(request, session, deployment_id)


@router.post("/deployments/{deployment_id}/{action}")
async def steer(
    request: Request, session: PageSession, deployment_id: DeploymentId, action: Action
) -> Response:
    await checked_form(request, session)
    try:
        await service.steer(context_of(request), deployment_id, action)
    except (Conflict, NotFound) as exc:
        return await _deployment_page(
            request, session, deployment_id, status=exc.status_code, error=exc.message
        )
    return RedirectResponse(f"/dashboard/deployments/{deployment_id}", status_code=303)


@router.get("/api/deployments")
async def deployments_json(
    request: Request,
    _session: ApiSession,
    ids: Annotated[str, Query(max_length=600, pattern=r"^\d{1,10}(,\d{1,10})*$")],
) -> JSONResponse:
    """Progress of up to 50 deployments, for the pages' live refresh."""
    wanted = sorted({int(i) for i in ids.split(",") if 0 < int(i) <= INT32_MAX})[:MAX_POLLED]
    found = await run_in_threadpool(_read, request, rollouts.by_ids, wanted)
    return JSONResponse(
        {"deployments": [d.as_json() for d in found]}, headers={"Cache-Control": "no-store"}
    )


# --- router and learning ----------------------------------------------------------------


@router.get("/router")
async def router_page(
    request: Request,
    session: PageSession,
    name: Annotated[str, Query(max_length=200)] = "",
    hours: Annotated[int, Query(ge=1, le=24 * 30)] = 24,
) -> Response:
    """Realised cloud share against the budget, PRS histogram, top key tokens per metric."""
    found = await run_in_threadpool(router_view, request, name, hours)
    return render(request, "router.html", session, status=found.pop("status", 200), **found)


@router.get("/learning")
async def learning(request: Request, session: PageSession) -> Response:
    """CoDA pools (sizes, retrievals); federation rounds and AUC per model version."""
    found = await run_in_threadpool(learning_view, request)
    return render(request, "learning.html", session, **found)


# --- installation -----------------------------------------------------------------------


async def _on_login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return login_redirect(exc) if exc.page else tandem_error_response(exc)


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: pages, JSON endpoints, static files."""
    context = app.state.context
    app.state.dashboard = DashboardState(key_dir=context.settings.key_dir)
    app.add_exception_handler(LoginRequired, _on_login_required)
    app.include_router(login_router)
    app.include_router(router)
    app.mount(
        "/dashboard/static",
        StaticFiles(directory=Path(__file__).parent / "static"),
        name="dashboard-static",
    )
