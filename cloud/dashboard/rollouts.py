"""Read queries for deployments: pages of them, and their per-stage progress in one query.

Progress is ``COUNT(*) ... GROUP BY deployment, stage, state`` over ``task_status`` for every
deployment on the page at once, answered by the ``(deployment_id, stage, state)`` index.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.core.pagination import decode_cursor, encode_cursor
from cloud.deploy.tables import DeploymentRow, TaskStatusRow
from cloud.deploy.targeting import describe, target_adapter
from cloud.tasks.tables import TaskVersionRow

DEPLOYMENT_PAGE = 25
IN_PROGRESS_SHOWN = 20
TASK_VERSION_CHOICES = 200
STATES = ("downloaded", "active", "failed", "rolled_back")
LIVE_STATES = ("active", "paused")


@dataclass(frozen=True)
class Stage:
    stage: int
    percent: float
    targeted: int
    downloaded: int
    active: int
    failed: int
    rolled_back: int


@dataclass(frozen=True)
class Deployment:
    id: int
    task: str
    version: int
    state: str
    state_reason: str
    stage: int
    stages: list[Stage]
    target: str
    gates: dict[str, Any] | None
    priority: int
    created_at: datetime
    updated_at: datetime

    @property
    def health(self) -> str:
        """ "failing", "ok" or "waiting", from the reports of the current stage."""
        current = self.stages[self.stage] if self.stage < len(self.stages) else None
        if current is None or current.active + current.failed == 0:
            return "waiting"
        return "failing" if current.failed > current.active else "ok"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "state_reason": self.state_reason or "created",
            "stage": self.stage,
            "health": self.health,
            "stages": [s.__dict__ for s in self.stages],
        }


def progress(session: Session, ids: Iterable[int]) -> dict[int, Counter[tuple[int, str]]]:
    """Per deployment, the count of devices in each (stage, state)."""
    wanted = list(ids)
    counts: dict[int, Counter[tuple[int, str]]] = {i: Counter() for i in wanted}
    if not wanted:
        return counts
    for deployment_id, stage, state, n in session.execute(
        select(TaskStatusRow.deployment_id, TaskStatusRow.stage, TaskStatusRow.state, func.count())
        .where(TaskStatusRow.deployment_id.in_(wanted))
        .group_by(TaskStatusRow.deployment_id, TaskStatusRow.stage, TaskStatusRow.state)
    ):
        if deployment_id is not None and stage is not None:
            counts[deployment_id][(stage, state)] = n
    return counts


def _view(row: DeploymentRow, version: int, counts: Counter[tuple[int, str]]) -> Deployment:
    try:
        target = describe(target_adapter.validate_python(row.target))
    except ValueError:
        target = "(unreadable target)"
    return Deployment(
        id=row.id,
        task=row.task_name,
        version=version,
        state=row.state,
        state_reason=row.state_reason,
        stage=row.stage,
        stages=[
            Stage(
                stage=i,
                percent=percent,
                targeted=row.targeted[i] if i < len(row.targeted) else 0,
                downloaded=counts[(i, "downloaded")],
                active=counts[(i, "active")],
                failed=counts[(i, "failed")],
                rolled_back=counts[(i, "rolled_back")],
            )
            for i, percent in enumerate(row.stages)
        ],
        target=target,
        gates=row.gates,
        priority=row.priority,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _views(session: Session, rows: list[tuple[DeploymentRow, int]]) -> list[Deployment]:
    counts = progress(session, (row.id for row, _ in rows))
    return [_view(row, version, counts[row.id]) for row, version in rows]


def _with_versions(session: Session, query: Any) -> list[tuple[DeploymentRow, int]]:
    return [
        (row, version)
        for row, version in session.execute(
            query.add_columns(TaskVersionRow.version).join(
                TaskVersionRow, TaskVersionRow.id == DeploymentRow.task_version_id
            )
        )
    ]


def page(
    session: Session,
    *,
    state: str | None,
    task: str | None,
    cursor: str | None,
    limit: int = DEPLOYMENT_PAGE,
) -> tuple[list[Deployment], str | None]:
    """Newest first; the cursor is the last id shown."""
    query = select(DeploymentRow)
    if state:
        query = query.where(DeploymentRow.state == state)
    if task:
        query = query.where(DeploymentRow.task_name == task)
    if cursor:
        query = query.where(DeploymentRow.id < decode_cursor(cursor))
    rows = _with_versions(session, query.order_by(DeploymentRow.id.desc()).limit(limit + 1))
    next_cursor = encode_cursor(rows[limit - 1][0].id) if len(rows) > limit else None
    return _views(session, rows[:limit]), next_cursor


def in_progress(session: Session, limit: int = IN_PROGRESS_SHOWN) -> list[Deployment]:
    """The newest releases still live (active or paused)."""
    query = (
        select(DeploymentRow)
        .where(DeploymentRow.state.in_(LIVE_STATES))
        .order_by(DeploymentRow.id.desc())
        .limit(limit)
    )
    return _views(session, _with_versions(session, query))


def by_ids(session: Session, ids: list[int]) -> list[Deployment]:
    query = select(DeploymentRow).where(DeploymentRow.id.in_(ids)).order_by(DeploymentRow.id.desc())
    return _views(session, _with_versions(session, query))


def one(session: Session, deployment_id: int) -> Deployment | None:
    found = by_ids(session, [deployment_id])
    return found[0] if found else None


def state_counts(session: Session) -> dict[str, int]:
    return {
        state: n
        for state, n in session.execute(
            select(DeploymentRow.state, func.count()).group_by(DeploymentRow.state)
        )
    }


def task_versions(session: Session, limit: int = TASK_VERSION_CHOICES) -> list[tuple[str, int]]:
    """The newest published task versions, for the create form's choice."""
    return [
        (name, version)
        for name, version in session.execute(
            select(TaskVersionRow.name, TaskVersionRow.version)
            .order_by(TaskVersionRow.id.desc())
            .limit(limit)
        )
    ]
