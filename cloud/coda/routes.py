"""CoDA over HTTP: admins create and fill pools; devices retrieve samples like theirs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Path, Request, Response, status
from starlette.concurrency import run_in_threadpool

from cloud.coda import service
from cloud.coda.builder import SnapshotBuilder
from cloud.coda.ratelimit import RateLimiter
from cloud.coda.schemas import CreatePool, IngestAccepted, IngestBatch, PoolList, PoolOut
from cloud.core.deps import Admin, Context, CurrentDevice, DbSession, ReadSession
from cloud.core.errors import PayloadTooLarge, RateLimited
from device_sdk.coda_wire import POOL_NAME_PATTERN, RetrieveRequest, RetrieveResponse

router = APIRouter(tags=["coda"])
PoolPath = Annotated[str, Path(max_length=64, pattern=POOL_NAME_PATTERN)]
# 2,000 samples of up to 1,024-number embeddings and 4,096-number features, as JSON.
MAX_INGEST_BODY_BYTES = 32 * 1024 * 1024
MAX_RETRIEVE_BODY_BYTES = 1024 * 1024


@dataclass
class CodaState:
    """What CoDA keeps per app: the snapshot builder and the per-device rate limiter."""

    builder: SnapshotBuilder
    limiter: RateLimiter
    max_results: int
    rng: np.random.Generator = field(default_factory=np.random.default_rng)


async def get_coda(request: Request) -> CodaState:
    state: CodaState = request.app.state.coda
    return state


Coda = Annotated[CodaState, Depends(get_coda)]


def _bounded(limit: int) -> object:
    async def check(request: Request) -> None:
        size = len(await request.body())
        if size > limit:
            raise PayloadTooLarge(
                f"This request body may have at most {limit} bytes; this one has {size}. "
                "Send fewer samples (or queries) per request."
            )

    return Depends(check)


@router.post("/v1/coda/pools", status_code=status.HTTP_201_CREATED)
def create_pool(body: CreatePool, _admin: Admin, session: DbSession, coda: Coda) -> PoolOut:
    """Create an empty sample pool whose embeddings have `dim` numbers."""
    row = service.create_pool(session, body)
    return service.describe(session, row, coda.builder)


@router.get("/v1/coda/pools")
def list_pools(_admin: Admin, session: ReadSession, coda: Coda) -> PoolList:
    """Every pool with its statistics."""
    return PoolList(
        items=[service.describe(session, r, coda.builder) for r in service.list_pools(session)]
    )


@router.get("/v1/coda/pools/{name}")
def read_pool(name: PoolPath, _admin: Admin, session: ReadSession, coda: Coda) -> PoolOut:
    """A pool's statistics: samples stored, the snapshot this replica answers from (version,
    size, kind), samples not yet in it, and retrievals counted without identities."""
    return service.describe(session, service.get_pool(session, name), coda.builder)


@router.delete("/v1/coda/pools/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_pool(name: PoolPath, _admin: Admin, context: Context, coda: Coda) -> Response:
    """Delete a pool: its samples and statistics, and this replica's index snapshots, in
    memory and on disk (other replicas drop theirs at their next poll). Retrievals from it
    get 404 `pool_not_found` from then on; its name may be used again."""

    def work() -> None:
        with context.db.session() as session:
            pool_id = service.delete_pool(session, name)
        coda.builder.forget(pool_id)

    await run_in_threadpool(work)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/v1/coda/pools/{name}/samples",
    status_code=status.HTTP_201_CREATED,
    dependencies=[_bounded(MAX_INGEST_BODY_BYTES)],  # type: ignore[list-item]
)
def ingest(
    name: PoolPath, body: IngestBatch, _admin: Admin, session: DbSession, coda: Coda
) -> IngestAccepted:
    """Store up to 2,000 anonymous samples (features, label, embedding), all or none.
    They reach retrieval with the next index snapshot, which the background builder starts
    at once; `GET /v1/coda/pools/{name}` shows when it holds them."""
    accepted = service.ingest(session, name, body.samples)
    session.commit()
    coda.builder.nudge()
    return accepted


@router.post("/v1/coda/pools/{name}/snapshot")
async def build_snapshot(name: PoolPath, _admin: Admin, context: Context, coda: Coda) -> PoolOut:
    """Bring this replica's index snapshot up to date now and answer when it is built
    (the background builder does the same on its own within seconds)."""

    def work() -> PoolOut:
        with context.db.session(write=False) as session:
            row = service.get_pool(session, name)
        coda.builder.refresh(row.id)
        with context.db.session(write=False) as session:
            return service.describe(session, service.get_pool(session, name), coda.builder)

    return await run_in_threadpool(work)


@router.post("/v1/coda/retrieve", dependencies=[_bounded(MAX_RETRIEVE_BODY_BYTES)])  # type: ignore[list-item]
async def retrieve(
    body: RetrieveRequest, device: CurrentDevice, context: Context, coda: Coda
) -> RetrieveResponse:
    """Answer a device's anonymous query embeddings with the `k` nearest pool samples per
    query, de-duplicated and capped, best first, plus `random` uniformly drawn samples.
    Queries are answered from the current index snapshot and never wait on ingestion. The
    query is not stored, nor who sent it; each device token is rate-limited (429 with
    Retry-After)."""
    wait = coda.limiter.acquire(device.seq)
    if wait > 0:
        raise RateLimited(
            f"This device has retrieved too often; retry in {math.ceil(wait)} s.",
            retry_after_s=math.ceil(wait),
        )

    def work() -> RetrieveResponse:
        with context.db.session(write=False) as session:
            return service.retrieve(
                session, coda.builder, body, max_results=coda.max_results, rng=coda.rng
            )

    return await run_in_threadpool(work)
