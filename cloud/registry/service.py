"""The model registry: each upload of a name becomes its next immutable version."""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.blobs.service import record_blob
from cloud.core.blobstore import BlobStore
from cloud.core.db import Database
from cloud.core.errors import (
    Conflict,
    DuplicateModelContent,
    ModelNotFound,
    ModelTargetMismatch,
    ModelVersionNotFound,
)
from cloud.registry.onnx_signature import read_signature
from cloud.registry.schemas import ModelSummary, ModelVersionOut, Target, TensorSpec
from cloud.registry.tables import ModelVersionRow

# Versions of one name are taken under a lock, so a retry is for the blob index alone: two
# uploads of the same bytes under different names can both try to insert its row.
_INDEX_RACE_RETRIES = 3


def to_out(row: ModelVersionRow) -> ModelVersionOut:
    return ModelVersionOut(
        name=row.name,
        version=row.version,
        target=Target(row.target),
        sha256=row.sha256,
        size=row.size,
        inputs=[TensorSpec(**t) for t in row.inputs],
        outputs=[TensorSpec(**t) for t in row.outputs],
        opset=row.opset,
        metrics=row.metrics,
        description=row.description,
        created_at=row.created_at,
        download_url=f"/v1/blobs/{row.sha256}",
    )


def register_model(
    db: Database,
    blobs: BlobStore,
    *,
    name: str,
    target: Target,
    data: bytes,
    description: str = "",
    metrics: dict[str, float] | None = None,
) -> ModelVersionRow:
    """Validate ``data`` as ONNX, store it by digest, and record the next version of ``name``.

    Every check runs before the blob is written, so a refused upload leaves no file. The
    checks run again in the transaction that records the version and indexes the blob, under
    a per-name lock: an upload that lost a race is refused there, and only then (or on a
    database failure) is its file left unindexed, unreadable through the API.
    """
    signature = read_signature(data)
    sha256 = hashlib.sha256(data).hexdigest()
    with db.session(write=False) as session:
        latest = _latest(session, name)
        if latest is not None:
            _check_consistent(latest, target, sha256)
    stored = blobs.write_bytes(data, expected_sha256=sha256)
    for _attempt in range(_INDEX_RACE_RETRIES):
        try:
            with db.session() as session:
                _lock_name(session, name)
                latest = _latest(session, name)
                if latest is not None:
                    _check_consistent(latest, target, stored.sha256)
                record_blob(
                    session, stored.sha256, stored.size, device_readable=target is Target.device
                )
                row = ModelVersionRow(
                    name=name,
                    version=(latest.version if latest else 0) + 1,
                    target=target.value,
                    sha256=stored.sha256,
                    size=stored.size,
                    inputs=signature.inputs,
                    outputs=signature.outputs,
                    opset=signature.opset,
                    metrics=metrics or {},
                    description=description,
                )
                session.add(row)
                session.flush()
                return row
        except IntegrityError:
            continue  # another upload indexed the same blob first; its row is there now
    raise Conflict(
        f"Model {name!r} could not be recorded while the same file was being uploaded "
        "concurrently; retry the upload."
    )


def _lock_name(session: Session, name: str) -> None:
    """Hold ``name`` until the transaction ends, so its uploads take versions in turn.

    SQLite needs nothing: write transactions begin IMMEDIATE (``Database.session``), which
    already runs them one at a time. The lock key is a hash, so two names may share one;
    that costs a moment's wait, never a wrong version.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": f"model:{name}"})


def _latest(session: Session, name: str) -> ModelVersionRow | None:
    return session.scalar(
        select(ModelVersionRow)
        .where(ModelVersionRow.name == name)
        .order_by(ModelVersionRow.version.desc())
        .limit(1)
    )


def _check_consistent(latest: ModelVersionRow, target: Target, sha256: str) -> None:
    if latest.target != target.value:
        raise ModelTargetMismatch(
            f"Model {latest.name!r} is a {latest.target} model; a name keeps one target. "
            f"Upload the {target.value} model under another name."
        )
    if latest.sha256 == sha256:
        raise DuplicateModelContent(
            f"Model {latest.name!r} version {latest.version} already has exactly this content "
            f"(sha256 {sha256[:12]}...); nothing to register."
        )


def list_models(session: Session) -> list[ModelSummary]:
    """Every model name with its target, latest version, version count and last upload."""
    latest = (
        select(
            ModelVersionRow.name,
            func.max(ModelVersionRow.version).label("latest"),
            func.count().label("count"),
            func.max(ModelVersionRow.created_at).label("updated"),
        )
        .group_by(ModelVersionRow.name)
        .subquery()
    )
    rows = session.execute(
        select(
            latest.c.name, ModelVersionRow.target, latest.c.latest, latest.c.count, latest.c.updated
        )
        .join(
            ModelVersionRow,
            (ModelVersionRow.name == latest.c.name) & (ModelVersionRow.version == latest.c.latest),
        )
        .order_by(latest.c.name)
    )
    return [
        ModelSummary(
            name=name, target=Target(target), latest_version=top, versions=count, updated_at=updated
        )
        for name, target, top, count, updated in rows
    ]


def versions_of(session: Session, name: str) -> list[ModelVersionRow]:
    rows = list(
        session.scalars(
            select(ModelVersionRow)
            .where(ModelVersionRow.name == name)
            .order_by(ModelVersionRow.version)
        )
    )
    if not rows:
        raise ModelNotFound(f"No model named {name!r}; upload one with POST /v1/models.")
    return rows


def get_version(session: Session, name: str, version: int) -> ModelVersionRow:
    row = session.scalar(
        select(ModelVersionRow).where(
            ModelVersionRow.name == name, ModelVersionRow.version == version
        )
    )
    if row is None:
        published = ", ".join(str(r.version) for r in versions_of(session, name))
        raise ModelVersionNotFound(
            f"Model {name!r} has no version {version}; published versions are {published}."
        )
    return row
