"""Federation bookkeeping: validation sets, opening rounds, receiving anonymous updates,
and describing rounds and models. Closing a round is in ``cloud.federation.rounds``."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from cloud.blobs.service import record_blob
from cloud.core.blobstore import BlobStore
from cloud.core.db import Database, utcnow
from cloud.core.pagination import keyset_page
from cloud.core.settings import Settings
from cloud.federation import codec, evaluation
from cloud.federation.aggregate import to_arrays
from cloud.federation.candidate import Trainable, TrainableCache, check_update, trainables
from cloud.federation.errors import (
    BaseVersionMismatch,
    FederationNotEnabled,
    InvalidValidationSet,
    RoundAlreadyOpen,
    RoundNotFound,
)
from cloud.federation.release import check_deploy_task
from cloud.federation.schemas import (
    CreateRound,
    FederatedModelOut,
    RoundOut,
    RoundStatus,
    ValidationSetOut,
    VersionMetric,
)
from cloud.federation.tables import (
    FederationEvaluationRow,
    FederationModelRow,
    FederationRoundRow,
    FederationUpdateRow,
)
from cloud.registry import service as registry
from cloud.registry.tables import ModelVersionRow
from device_sdk.federation_wire import ModelUpdate, UpdateAccepted

MAX_PAGE = 200
NPZ_MEDIA_TYPE = "application/x-npz"


def _latest_version(session: Session, model: str) -> ModelVersionRow:
    return registry.versions_of(session, model)[-1]


def validation_of(session: Session, model: str) -> FederationModelRow:
    row = session.get(FederationModelRow, model)
    if row is None:
        raise FederationNotEnabled(
            f"Model {model!r} has no cloud validation set, so it takes no federated updates "
            f"yet; an admin uploads one with PUT /v1/federation/models/{model}/validation."
        )
    return row


def validation_out(row: FederationModelRow) -> ValidationSetOut:
    return ValidationSetOut(
        model=row.name,
        sha256=row.validation_sha256,
        rows=row.validation_rows,
        updated_at=row.updated_at,
    )


def put_validation(
    db: Database, blobs: BlobStore, name: str, data: bytes, *, max_bytes: int
) -> ValidationSetOut:
    """Check ``data`` against the latest version's inputs (and a trial run of it), store
    it by digest, and make it model ``name``'s validation set."""
    with db.session(write=False) as session:
        latest = _latest_version(session, name)
    validation = evaluation.read_validation(data, latest.inputs, max_bytes=max_bytes)
    try:
        evaluation.evaluate(blobs.path_for(latest.sha256).read_bytes(), validation)
    except Exception as exc:  # the set is hostile input: any failure to score it is a 422
        raise InvalidValidationSet(
            f"Model {name!r} version {latest.version} could not be evaluated on this set "
            f"({exc.__class__.__name__}: {str(exc)[:200]}); check the arrays' shapes."
        ) from exc
    stored = blobs.write_bytes(data)
    with db.session() as session:
        record_blob(
            session, stored.sha256, stored.size, device_readable=False, media_type=NPZ_MEDIA_TYPE
        )
        row = session.get(FederationModelRow, name)
        if row is None:
            row = FederationModelRow(name=name)
            session.add(row)
        row.validation_sha256 = stored.sha256
        row.validation_rows = validation.rows
        row.updated_at = utcnow()
        session.flush()
        return validation_out(row)


def _open_round_row(session: Session, model: str) -> FederationRoundRow | None:
    query = select(FederationRoundRow).where(FederationRoundRow.open_model == model)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalar(query)


def open_round(session: Session, settings: Settings, body: CreateRound) -> FederationRoundRow:
    """Open a round for ``body.model``; RoundAlreadyOpen when one is."""
    base = (
        registry.get_version(session, body.model, body.base_version)
        if body.base_version is not None
        else _latest_version(session, body.model)
    )
    validation_of(session, body.model)
    if body.deploy is not None:
        check_deploy_task(session, body.deploy.task, base)
    existing = _open_round_row(session, body.model)
    if existing is not None:
        raise RoundAlreadyOpen(
            f"Model {body.model!r} has round {existing.id} open (base version "
            f"{existing.base_version}, {existing.received}/{existing.k} updates); a model has "
            "one open round at a time. Wait for it to close."
        )
    deadline_s = body.deadline_s or settings.federation_round_deadline_s
    return _insert_round(
        session,
        model=body.model,
        base_version=base.version,
        k=body.k or settings.federation_k,
        deadline_at=utcnow() + timedelta(seconds=deadline_s),
        clip=body.clip,
        noise_std=body.noise_std,
        lr=body.lr,
        min_gain=body.min_gain,
        deploy=body.deploy.model_dump(mode="json") if body.deploy else None,
    )


def _insert_round(session: Session, **values: object) -> FederationRoundRow:
    row = FederationRoundRow(
        status=RoundStatus.open.value,
        open_model=values["model"],
        received=0,
        reason="",
        opened_at=utcnow(),
        **values,
    )
    session.add(row)
    session.flush()  # an IntegrityError here: a concurrent request opened one first
    return row


def _trainables_of(
    base: ModelVersionRow, blobs: BlobStore, cache: TrainableCache
) -> dict[str, Trainable]:
    found = cache.get(base.sha256)
    if found is None:
        found = trainables(blobs.path_for(base.sha256).read_bytes())
        cache.put(base.sha256, found)
    return found


def receive(
    session: Session,
    settings: Settings,
    blobs: BlobStore,
    cache: TrainableCache,
    body: ModelUpdate,
) -> tuple[UpdateAccepted, int | None]:
    """Add an update to its model's open round (opening one if none is), storing no
    identity; a key seen before is answered as a duplicate and not counted again.

    Returns the receipt and, when this update completed the round, the round's id: the
    round is then claimed for aggregation in this same transaction."""
    seen = session.get(FederationUpdateRow, body.key)
    if seen is not None:
        joined = session.get_one(FederationRoundRow, seen.round_id)
        return UpdateAccepted(
            round=joined.id, received=joined.received, k=joined.k, duplicate=True
        ), None
    latest = _latest_version(session, body.model)
    validation_of(session, body.model)
    row = _open_round_row(session, body.model)
    if row is None:
        row = _insert_round(
            session,
            model=body.model,
            base_version=latest.version,
            k=settings.federation_k,
            deadline_at=utcnow() + timedelta(seconds=settings.federation_round_deadline_s),
            clip=None,
            noise_std=0.0,
            lr=1.0,
            min_gain=0.0,
            deploy=None,
        )
    if body.base_version != row.base_version:
        raise BaseVersionMismatch(
            f"Round {row.id} of model {body.model!r} trains version {row.base_version}; this "
            f"update is from version {body.base_version}. Train on version {row.base_version} "
            "and upload again.",
            details={"round": row.id, "base_version": row.base_version},
        )
    base = registry.get_version(session, body.model, row.base_version)
    check_update(body, _trainables_of(base, blobs, cache))
    session.add(
        FederationUpdateRow(
            key=body.key,
            round_id=row.id,
            samples=body.samples,
            payload=codec.encode(to_arrays(body)),
        )
    )
    row.received += 1
    ready = None
    if row.received >= row.k:
        row.status = RoundStatus.aggregating.value
        row.open_model = None
        row.claimed_at = utcnow()
        ready = row.id
    session.flush()
    return UpdateAccepted(round=row.id, received=row.received, k=row.k, duplicate=False), ready


def get_round(session: Session, round_id: int) -> FederationRoundRow:
    row = session.get(FederationRoundRow, round_id)
    if row is None:
        raise RoundNotFound(
            f"Round {round_id} does not exist; list rounds with GET /v1/federation/rounds."
        )
    return row


def round_out(row: FederationRoundRow) -> RoundOut:
    metrics = {
        name: value
        for name, value in (("base_auc", row.base_auc), ("auc", row.auc))
        if value is not None
    }
    return RoundOut(
        id=row.id,
        model=row.model,
        base_version=row.base_version,
        status=RoundStatus(row.status),
        k=row.k,
        received=row.received,
        clients=row.clients,
        deadline_at=row.deadline_at,
        clip=row.clip,
        noise_std=row.noise_std,
        lr=row.lr,
        min_gain=row.min_gain,
        deploy=row.deploy,
        metrics=metrics,
        released_version=row.released_version,
        task_version=row.task_version,
        deployment_id=row.deployment_id,
        reason=row.reason,
        opened_at=row.opened_at,
        closed_at=row.closed_at,
    )


def list_page(
    session: Session,
    *,
    model: str | None,
    status: RoundStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[FederationRoundRow], str | None]:
    """Newest first; the cursor is the last id seen."""
    query: Select[FederationRoundRow] = select(FederationRoundRow)
    if model is not None:
        query = query.where(FederationRoundRow.model == model)
    if status is not None:
        query = query.where(FederationRoundRow.status == status.value)
    return keyset_page(
        session, query, FederationRoundRow.id, limit=limit, cursor=cursor, newest_first=True
    )


def model_overview(session: Session, name: str) -> FederatedModelOut:
    """A model's validation set, open round, rounds by status, and AUC per version."""
    registry.versions_of(session, name)  # ModelNotFound for a name never uploaded
    validation = session.get(FederationModelRow, name)
    open_row = session.scalar(
        select(FederationRoundRow.id).where(FederationRoundRow.open_model == name)
    )
    counts = session.execute(
        select(FederationRoundRow.status, func.count())
        .where(FederationRoundRow.model == name)
        .group_by(FederationRoundRow.status)
    )
    evaluations = session.scalars(
        select(FederationEvaluationRow)
        .where(FederationEvaluationRow.model == name)
        .order_by(FederationEvaluationRow.version, FederationEvaluationRow.id)
    )
    return FederatedModelOut(
        name=name,
        validation=validation_out(validation) if validation else None,
        open_round=open_row,
        rounds={status: int(count) for status, count in counts},
        versions=[
            VersionMetric(
                version=e.version,
                auc=e.auc,
                validation_sha256=e.validation_sha256,
                round=e.round_id,
                evaluated_at=e.evaluated_at,
            )
            for e in evaluations
        ],
    )


def delete_payloads(session: Session, round_id: int) -> None:
    """Forget a closed round's deltas; the keys stay so a late retry still counts once."""
    session.execute(
        update(FederationUpdateRow)
        .where(FederationUpdateRow.round_id == round_id)
        .values(payload=None)
    )


def close(
    session: Session, row: FederationRoundRow, status: RoundStatus, reason: str, now: datetime
) -> None:
    row.status = status.value
    row.open_model = None
    row.reason = reason[:1000]
    row.closed_at = now
    delete_payloads(session, row.id)
