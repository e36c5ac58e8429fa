"""Deployments: create them, steer them (pause, resume, advance, roll back), watch them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from cloud.core.db import utcnow
from cloud.core.errors import Conflict, DeploymentNotFound
from cloud.core.pagination import keyset_page
from cloud.deploy.gates import StageHealth, Verdict, judge
from cloud.deploy.schemas import (
    Action,
    CreateDeployment,
    DeploymentOut,
    DeploymentState,
    Gates,
    StageProgress,
)
from cloud.deploy.tables import DeploymentRow, TaskStatusRow
from cloud.deploy.targeting import describe, target_adapter, target_json
from cloud.tasks.service import get_task_version
from cloud.tasks.tables import TaskVersionRow

MAX_PAGE = 200


def create(session: Session, body: CreateDeployment) -> DeploymentRow:
    """Record a deployment of an existing task version; devices follow once materialised."""
    version = get_task_version(session, body.task, body.version)
    row = DeploymentRow(
        task_name=body.task,
        task_version_id=version.id,
        target=target_json(body.target),
        stages=body.stages,
        gates=body.gates.model_dump() if body.gates else None,
        priority=body.priority,
        state=DeploymentState.active.value,
        stage=0,
        stage_started_at=utcnow(),
        targeted=[0] * len(body.stages),
    )
    session.add(row)
    session.flush()
    return row


def get(session: Session, deployment_id: int) -> DeploymentRow:
    row = session.get(DeploymentRow, deployment_id)
    if row is None:
        raise DeploymentNotFound(
            f"Deployment {deployment_id} does not exist; list them with GET /v1/deployments."
        )
    return row


def _bump(row: DeploymentRow, now: datetime, reason: str) -> None:
    row.rev += 1
    row.updated_at = now
    row.state_reason = reason


def act(session: Session, deployment_id: int, action: Action) -> DeploymentRow:
    """Apply a manual action, or explain with a 409 why it does not apply now."""
    # Locked for the transaction: an automatic rollback committing between this read and
    # the write would otherwise be overwritten (a paused deployment is live again).
    row = session.get(DeploymentRow, deployment_id, with_for_update=True)
    if row is None:
        row = get(session, deployment_id)
    now = utcnow()
    state = DeploymentState(row.state)
    label = f"Deployment {row.id} ({row.task_name})"
    if state is DeploymentState.rolled_back:
        raise Conflict(
            f"{label} was rolled back ({row.state_reason}); create a new deployment instead."
        )
    if action is Action.pause:
        if state is DeploymentState.paused:
            raise Conflict(f"{label} is already paused; resume it to continue.")
        row.state = DeploymentState.paused.value
        row.updated_at, row.state_reason = now, "paused by an admin"
    elif action is Action.resume:
        if state is DeploymentState.active:
            raise Conflict(f"{label} is not paused.")
        row.state = DeploymentState.active.value
        row.updated_at, row.state_reason = now, "resumed by an admin"
    elif action is Action.advance:
        if row.stage >= len(row.stages) - 1:
            raise Conflict(f"{label} is at its final stage ({row.stages[-1]:g} %).")
        row.stage += 1
        row.stage_started_at = now
        _bump(row, now, f"advanced to stage {row.stage} by an admin")
    else:
        row.state = DeploymentState.rolled_back.value
        _bump(row, now, "rolled back by an admin")
    session.flush()
    return row


def stage_health(session: Session, row: DeploymentRow) -> StageHealth:
    counts = dict(
        session.execute(
            select(TaskStatusRow.state, func.count())
            .where(TaskStatusRow.deployment_id == row.id, TaskStatusRow.stage == row.stage)
            .group_by(TaskStatusRow.state)
        ).all()
    )
    targeted = row.targeted[row.stage] if row.stage < len(row.targeted) else 0
    return StageHealth(
        targeted=targeted, active=counts.get("active", 0), failed=counts.get("failed", 0)
    )


def apply_gates(session: Session, deployment_id: int) -> bool:
    """Advance or roll back ``deployment_id`` if its gates say so; True if it changed.

    The update is conditional on the stage and state it judged, so replicas judging the
    same deployment at once cannot advance it twice.
    """
    row = session.get(DeploymentRow, deployment_id)
    if row is None or row.state != DeploymentState.active.value or row.gates is None:
        return False
    if row.materialized_rev != row.rev:
        # Its devices and per-stage counts are not worked out yet: with nobody counted as
        # targeted, an empty stage would look healthy and advance.
        return False
    now = utcnow()
    verdict, reason = judge(
        Gates.model_validate(row.gates),
        stage_health(session, row),
        stage=row.stage,
        last_stage=len(row.stages) - 1,
        since=row.stage_started_at,
        now=now,
    )
    if verdict is Verdict.hold:
        return False
    values: dict[str, object] = {
        "rev": DeploymentRow.rev + 1,
        "updated_at": now,
        "state_reason": reason,
    }
    if verdict is Verdict.advance:
        values |= {"stage": row.stage + 1, "stage_started_at": now}
    else:
        values |= {"state": DeploymentState.rolled_back.value}
    result = session.execute(
        update(DeploymentRow)
        .where(
            DeploymentRow.id == row.id,
            DeploymentRow.stage == row.stage,
            DeploymentRow.state == DeploymentState.active.value,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.expire(row)
    return bool(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE


def gated_deployments(session: Session) -> list[int]:
    return list(
        session.scalars(
            select(DeploymentRow.id).where(
                DeploymentRow.state == DeploymentState.active.value,
                DeploymentRow.gates.is_not(None),
            )
        )
    )


def progress(session: Session, row: DeploymentRow) -> list[StageProgress]:
    counts: dict[tuple[int, str], int] = {
        (stage, state): n
        for stage, state, n in session.execute(
            select(TaskStatusRow.stage, TaskStatusRow.state, func.count())
            .where(TaskStatusRow.deployment_id == row.id)
            .group_by(TaskStatusRow.stage, TaskStatusRow.state)
        )
        if stage is not None
    }
    return [
        StageProgress(
            stage=i,
            percent=percent,
            targeted=row.targeted[i] if i < len(row.targeted) else 0,
            downloaded=counts.get((i, "downloaded"), 0),
            active=counts.get((i, "active"), 0),
            failed=counts.get((i, "failed"), 0),
            rolled_back=counts.get((i, "rolled_back"), 0),
        )
        for i, percent in enumerate(row.stages)
    ]


def to_out(session: Session, row: DeploymentRow) -> DeploymentOut:
    version = session.get(TaskVersionRow, row.task_version_id)
    assert version is not None  # a foreign key guarantees it
    return DeploymentOut(
        id=row.id,
        task=row.task_name,
        version=version.version,
        target=row.target,
        target_description=describe(target_adapter.validate_python(row.target)),
        stages=row.stages,
        gates=Gates.model_validate(row.gates) if row.gates else None,
        priority=row.priority,
        state=DeploymentState(row.state),
        state_reason=row.state_reason,
        stage=row.stage,
        stage_started_at=row.stage_started_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        materialized=row.materialized_rev >= row.rev,
        progress=progress(session, row),
    )


def list_page(
    session: Session,
    *,
    task: str | None,
    state: DeploymentState | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[DeploymentRow], str | None]:
    """Newest first; the cursor is the last id seen."""
    query: Select[DeploymentRow] = select(DeploymentRow)
    if task is not None:
        query = query.where(DeploymentRow.task_name == task)
    if state is not None:
        query = query.where(DeploymentRow.state == state.value)
    return keyset_page(
        session, query, DeploymentRow.id, limit=limit, cursor=cursor, newest_first=True
    )


def live_tasks(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(DeploymentRow.task_name)
            .where(DeploymentRow.state.in_(("active", "paused")))
            .group_by(DeploymentRow.task_name)
        )
    )


def gated(session: Session, deployment_ids: set[int]) -> set[int]:
    """Those of ``deployment_ids`` whose gates may act (active, with gates)."""
    if not deployment_ids:
        return set()
    return set(
        session.scalars(
            select(DeploymentRow.id).where(
                DeploymentRow.id.in_(deployment_ids),
                DeploymentRow.state == DeploymentState.active.value,
                DeploymentRow.gates.is_not(None),
            )
        )
    )
