"""Liveness, readiness and Prometheus metrics, for load balancers and monitoring."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from cloud.core.broker import BrokerUnavailable
from cloud.core.deps import Context

router = APIRouter(tags=["operations"])
READY_TIMEOUT_S = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. It checks no dependency, so a database outage does not
    make an orchestrator restart every replica."""
    return {"status": "ok"}


@router.head("/healthz", response_class=Response)
async def healthz_head() -> Response:
    """Liveness for probes that send HEAD: GET's status and headers, no body."""
    get = JSONResponse(await healthz())
    return Response(
        status_code=200,
        headers={"Content-Length": get.headers["content-length"]},
        media_type=get.media_type,
    )


async def _check(name: str, probe: asyncio.Future[None] | asyncio.Task[None]) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, READY_TIMEOUT_S)
    except TimeoutError:
        return name, f"no answer within {READY_TIMEOUT_S:.0f} s"
    except (SQLAlchemyError, BrokerUnavailable, OSError) as exc:
        return name, f"unreachable: {exc.__class__.__name__}"
    return name, "ok"


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable."}})
async def readyz(context: Context) -> JSONResponse:
    """Readiness: 200 when the database and the broker answer, 503 naming the one that does not."""
    results = await asyncio.gather(
        _check("database", asyncio.ensure_future(run_in_threadpool(context.db.ping))),
        _check("broker", asyncio.ensure_future(context.broker.ping())),
    )
    checks = dict(results)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response)
def metrics(context: Context) -> Response:
    """Prometheus text format: request counts and latency by route template, and more."""
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
