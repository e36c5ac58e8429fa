"""Pools: create, ingest, describe, and retrieve the nearest samples for a device's queries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.coda import index
from cloud.coda.builder import SnapshotBuilder
from cloud.coda.index import Snapshot
from cloud.coda.schemas import CreatePool, IngestAccepted, IngestSample, PoolOut, SnapshotOut
from cloud.coda.tables import CodaPoolRow, CodaSampleRow
from cloud.core.db import utcnow
from cloud.core.errors import DuplicateName, EmbeddingMismatch, PoolNotFound, PoolNotReady
from device_sdk.coda_wire import PoolSample, RetrieveRequest, RetrieveResponse


def create_pool(session: Session, body: CreatePool) -> CodaPoolRow:
    if session.scalar(select(CodaPoolRow.id).where(CodaPoolRow.name == body.name)) is not None:
        raise DuplicateName(f"A pool named {body.name!r} exists already; choose another name.")
    row = CodaPoolRow(name=body.name, dim=body.dim, description=body.description)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # created by a concurrent request between check and insert
        raise DuplicateName(
            f"A pool named {body.name!r} exists already; choose another name."
        ) from exc
    return row


def get_pool(session: Session, name: str) -> CodaPoolRow:
    row = session.scalar(select(CodaPoolRow).where(CodaPoolRow.name == name))
    if row is None:
        names = session.scalars(select(CodaPoolRow.name).order_by(CodaPoolRow.name).limit(20))
        known = ", ".join(names) or "none yet"
        raise PoolNotFound(
            f"There is no pool named {name!r}; pools: {known}. Create it with POST /v1/coda/pools."
        )
    return row


def list_pools(session: Session) -> list[CodaPoolRow]:
    return list(session.scalars(select(CodaPoolRow).order_by(CodaPoolRow.name)))


def delete_pool(session: Session, name: str) -> int:
    """Delete the pool and every sample in it (one transaction); returns its id."""
    pool = get_pool(session, name)
    session.execute(delete(CodaSampleRow).where(CodaSampleRow.pool_id == pool.id))
    session.execute(delete(CodaPoolRow).where(CodaPoolRow.id == pool.id))
    return pool.id


def ingest(session: Session, name: str, samples: Sequence[IngestSample]) -> IngestAccepted:
    """Store every sample or none: each embedding is checked against the pool's length first."""
    pool = get_pool(session, name)
    for position, sample in enumerate(samples):
        if len(sample.embedding) != pool.dim:
            raise EmbeddingMismatch(
                f"Sample {position} has an embedding of {len(sample.embedding)} numbers; pool "
                f"{name!r} takes {pool.dim}. Nothing was stored; fix it and send the batch again.",
                details={"sample": position},
            )
    now = utcnow()
    session.execute(
        insert(CodaSampleRow),
        [
            {
                "pool_id": pool.id,
                "features": sample.features,
                "label": sample.label,
                "embedding": np.asarray(sample.embedding, np.float32).tobytes(),
                "created_at": now,
            }
            for sample in samples
        ],
    )
    session.execute(
        update(CodaPoolRow)
        .where(CodaPoolRow.id == pool.id)
        .values(samples=CodaPoolRow.samples + len(samples), updated_at=now)
    )
    size = session.scalar(select(CodaPoolRow.samples).where(CodaPoolRow.id == pool.id)) or 0
    return IngestAccepted(accepted=len(samples), pool_size=int(size))


def describe(session: Session, row: CodaPoolRow, builder: SnapshotBuilder) -> PoolOut:
    snapshot = builder.current(row.id)
    retrievals, returned = builder.unflushed(row.id)
    stored = session.scalar(
        select(func.count()).select_from(CodaSampleRow).where(CodaSampleRow.pool_id == row.id)
    )
    return PoolOut(
        name=row.name,
        description=row.description,
        dim=row.dim,
        samples=int(stored or 0),
        retrievals=row.retrievals + retrievals,
        samples_returned=row.returned + returned,
        snapshot=_snapshot_out(snapshot),
        pending_samples=max(0, int(stored or 0) - (snapshot.size if snapshot else 0)),
        created_at=row.created_at,
    )


def _snapshot_out(snapshot: Snapshot | None) -> SnapshotOut | None:
    if snapshot is None:
        return None
    return SnapshotOut(
        version=snapshot.version,
        samples=snapshot.size,
        kind=snapshot.kind,
        built_at=snapshot.built_at,
        build_seconds=round(snapshot.build_seconds, 6),
    )


def retrieve(
    session: Session,
    builder: SnapshotBuilder,
    body: RetrieveRequest,
    *,
    max_results: int,
    rng: np.random.Generator,
) -> RetrieveResponse:
    """The nearest samples to the queries from the current snapshot, and random ones.

    Nothing about the caller is stored: only this replica's retrieval counter moves."""
    pool = get_pool(session, body.pool)
    dim = len(body.queries[0])
    if dim != pool.dim:
        raise EmbeddingMismatch(
            f"The queries have {dim} numbers each; pool {pool.name!r} takes {pool.dim}."
        )
    snapshot = builder.current(pool.id)
    if snapshot is None or snapshot.size == 0:
        raise PoolNotReady(
            f"Pool {pool.name!r} has no index snapshot yet: it is empty or its first build is "
            "running. Retry in a few seconds, after ingesting samples."
        )
    queries = np.asarray(body.queries, np.float32)
    nearest, capped = index.nearest_unique(snapshot, queries, body.k, max_results)
    random_ids: list[int] = []
    if body.random:
        picks = rng.choice(snapshot.size, size=min(body.random, snapshot.size), replace=False)
        random_ids = [int(i) for i in snapshot.ids[np.sort(picks)]]
    rows = _rows(session, pool.id, {i for i, _ in nearest} | set(random_ids))
    samples = [_sample(rows[i], score) for i, score in nearest if i in rows]
    random_samples = [_sample(rows[i], None) for i in random_ids if i in rows]
    builder.count_retrieval(pool.id, len(samples) + len(random_samples))
    return RetrieveResponse(
        pool=pool.name,
        snapshot_version=snapshot.version,
        pool_size=snapshot.size,
        samples=samples,
        random_samples=random_samples,
        capped=capped,
    )


def _rows(session: Session, pool_id: int, ids: set[int]) -> dict[int, CodaSampleRow]:
    found: dict[int, CodaSampleRow] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), 1000):  # bounded IN lists
        chunk = ordered[start : start + 1000]
        for row in session.scalars(
            select(CodaSampleRow).where(
                CodaSampleRow.pool_id == pool_id, CodaSampleRow.id.in_(chunk)
            )
        ):
            found[row.id] = row
    return found


def _sample(row: CodaSampleRow, score: float | None) -> PoolSample:
    return PoolSample(
        id=row.id,
        features=row.features,
        label=row.label,
        embedding=np.frombuffer(row.embedding, np.float32).tolist(),
        score=score,
    )
