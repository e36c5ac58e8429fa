"""Edge/cloud routers over HTTP: configure, observe, train, route, export, watch."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from starlette.concurrency import run_in_threadpool

from cloud.core.deps import Admin, Context, CurrentDevice, CurrentPrincipal, DbSession, ReadSession
from cloud.core.errors import PayloadTooLarge
from cloud.router import service
from cloud.router.controller import RouterEngine
from cloud.router.schemas import (
    ROUTER_NAME_PATTERN,
    CreateRouter,
    ObservationBatch,
    ObservationsAccepted,
    RouterDetail,
    RouteRequest,
    RouteResponse,
    RouterList,
    RouterOut,
    RouterVersionOut,
    TrainRequest,
    UpdateRouter,
)
from device_sdk.router_wire import DecisionReceipt, DecisionReport, RouterExport

router = APIRouter(tags=["routers"])
NamePath = Annotated[str, Path(max_length=64, pattern=ROUTER_NAME_PATTERN)]
# Observation batches carry texts of up to 100,000 characters each: bounded as a whole.
MAX_BODY_BYTES = 16 * 1024 * 1024
_ENGINE_LOCK = threading.Lock()


async def _bounded_body(request: Request) -> None:
    size = len(await request.body())
    if size > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"A router request body may have at most {MAX_BODY_BYTES} bytes; this one has "
            f"{size}. Send fewer items per request."
        )


def get_engine(request: Request) -> RouterEngine:
    """This app's routing state, made on first use (nothing is built at import time)."""
    state = request.app.state
    with _ENGINE_LOCK:
        engine: RouterEngine | None = getattr(state, "router_engine", None)
        if engine is None:
            engine = RouterEngine()
            state.router_engine = engine
    return engine


Engine = Annotated[RouterEngine, Depends(get_engine)]


@router.post("/v1/routers", status_code=status.HTTP_201_CREATED)
def create_router(body: CreateRouter, _admin: Admin, session: DbSession) -> RouterOut:
    """Create a router: its quality metrics with weights summing to 1, its cloud budget
    (the share of requests allowed to the cloud), the window over which the budget holds,
    and the number of plain features per request (0 for text only)."""
    return service.to_out(session, service.create_router(session, body))


@router.get("/v1/routers")
def list_routers(_admin: Admin, session: ReadSession) -> RouterList:
    """Every router with its versions."""
    return RouterList(items=[service.to_out(session, r) for r in service.list_routers(session)])


@router.get("/v1/routers/{name}")
def read_router(
    name: NamePath,
    _admin: Admin,
    session: ReadSession,
    engine: Engine,
    hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24,
) -> RouterDetail:
    """A router, its versions, and its statistics over the last `hours`: the cloud share
    per time bucket against the budget, the PRS histogram, and this replica's live
    threshold."""
    row = service.get_router(session, name)
    out = service.to_out(session, row)
    return RouterDetail(**out.model_dump(), stats=service.stats(session, engine, row, hours))


@router.patch("/v1/routers/{name}")
def update_router(
    name: NamePath, body: UpdateRouter, _admin: Admin, session: DbSession
) -> RouterOut:
    """Change the budget or the window; each replica's controller restarts from the
    current version's calibrated threshold on its next decision."""
    return service.to_out(session, service.update_router(session, name, body))


@router.post("/v1/routers/{name}/observations", dependencies=[Depends(_bounded_body)])
def add_observations(
    name: NamePath, body: ObservationBatch, _admin: Admin, session: DbSession
) -> ObservationsAccepted:
    """Log up to 1,000 requests with, per metric, the edge model's and the cloud model's
    score (higher is better). Every item is checked first (metric names, feature count);
    one bad item refuses the whole batch with a 422 naming it, and nothing is stored."""
    return service.add_observations(session, name, body.items)


@router.post("/v1/routers/{name}/train", status_code=status.HTTP_201_CREATED)
async def train(
    name: NamePath,
    _admin: Admin,
    context: Context,
    engine: Engine,
    body: TrainRequest | None = None,
) -> RouterVersionOut:
    """Train a new immutable version on the latest observations: one logistic model per
    metric over hashed unigrams and bigrams (plus plain features), its threshold calibrated
    as the budget quantile of PRS on the newest observations, exported to ONNX."""
    row = await run_in_threadpool(
        service.train, context.db, context.blobs, engine, name, body or TrainRequest()
    )
    return RouterVersionOut(
        version=row.version,
        alpha=row.alpha,
        onnx_sha256=row.onnx_sha256,
        onnx_size=row.onnx_size,
        training=row.training,
        created_at=row.created_at,
    )


@router.post("/v1/route", dependencies=[Depends(_bounded_body)])
def route(
    body: RouteRequest, _caller: CurrentPrincipal, context: Context, engine: Engine
) -> RouteResponse:
    """Decide edge or cloud for one request (`text`/`features`) or a batch (`items`, up to
    1,000): each answer has the target, the PRS, each metric's D_i (probability that the
    edge is at least as good) and key tokens. Admin keys and device tokens may call it;
    every decision counts against the router's budget."""
    return service.route(context.db, context.blobs, engine, body)


@router.get("/v1/routers/{name}/export")
def export_router(
    name: NamePath, _caller: CurrentPrincipal, session: ReadSession, engine: Engine
) -> RouterExport:
    """The latest version for routing on a device: the ONNX file's digest and URL, the
    featurizer, the metrics, and the threshold this replica currently holds."""
    return service.export(session, engine, name)


@router.post("/v1/routers/{name}/decisions")
def report_decisions(
    name: NamePath, body: DecisionReport, _device: CurrentDevice, session: DbSession, engine: Engine
) -> DecisionReceipt:
    """Report up to 1,000 decisions a device took locally, in order; they count in the
    router's statistics and move the threshold. The answer carries the current one."""
    return service.report_decisions(session, engine, name, body)
