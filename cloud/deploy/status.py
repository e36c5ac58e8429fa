"""Status reports from devices: the latest state of each task, placed in its rollout stage.

Reports are written in batches (see ``status_writer``): a handful of set-based queries and
one upsert for any number of devices, rather than several round trips per report.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from cloud.auth.principal import DevicePrincipal
from cloud.core.db import utcnow
from cloud.core.errors import DeviceNotFound, TandemError, UnknownTaskVersion
from cloud.deploy.buckets import bucket, stage_of
from cloud.deploy.tables import DeploymentRow, DeviceTaskRow, TaskStatusRow
from cloud.devices.tables import DeviceRow
from cloud.tasks.tables import TaskVersionRow
from device_sdk.wire import StatusReport

Item = tuple[DevicePrincipal, Sequence[StatusReport]]


def _version_ids(session: Session, items: Sequence[Item]) -> dict[tuple[str, int], int]:
    names = {r.task for _, reports in items for r in reports}
    rows = session.execute(
        select(TaskVersionRow.name, TaskVersionRow.version, TaskVersionRow.id).where(
            TaskVersionRow.name.in_(names)
        )
    )
    return {(name, version): id_ for name, version, id_ in rows}


def record_batch(
    session: Session, items: Sequence[Item]
) -> tuple[list[TandemError | None], set[int]]:
    """Store every item's reports as its tasks' latest states.

    Returns, per item, None or the error that refuses it (an item is all or nothing), and
    the deployments the stored reports concern.
    """
    versions = _version_ids(session, items)
    errors: list[TandemError | None] = []
    accepted: list[Item] = []
    for device, reports in items:
        unknown = next((r for r in reports if (r.task, r.version) not in versions), None)
        if unknown is None:
            errors.append(None)
            accepted.append((device, reports))
        else:
            errors.append(
                UnknownTaskVersion(
                    f"Task {unknown.task!r} has no published version {unknown.version}; report "
                    "only versions received through the desired state."
                )
            )
    if not accepted:
        return errors, set()
    seqs = {device.seq for device, _ in accepted}
    # A device removed while its report was in flight: refuse that report alone, so the
    # rest of the batch still commits (a foreign key would otherwise fail all of it).
    alive = set(session.scalars(select(DeviceRow.seq).where(DeviceRow.seq.in_(seqs))))
    if alive != seqs:
        for index, (device, _reports) in enumerate(items):
            if errors[index] is None and device.seq not in alive:
                errors[index] = DeviceNotFound("This device was removed; register it again.")
        accepted = [(device, reports) for device, reports in accepted if device.seq in alive]
        seqs = alive
    desired = {
        (seq, task): (version_id, deployment_id)
        for seq, task, version_id, deployment_id in session.execute(
            select(
                DeviceTaskRow.device_seq,
                DeviceTaskRow.task_name,
                DeviceTaskRow.task_version_id,
                DeviceTaskRow.deployment_id,
            ).where(DeviceTaskRow.device_seq.in_(seqs))
        )
    }
    # What each device last reported, and for which deployment: a device may report on a
    # deployment it was sent before (e.g. `rolled_back` from it), never on any other.
    reported = {
        (seq, task, version): deployment_id
        for seq, task, version, deployment_id in session.execute(
            select(
                TaskStatusRow.device_seq,
                TaskStatusRow.task_name,
                TaskStatusRow.version,
                TaskStatusRow.deployment_id,
            ).where(TaskStatusRow.device_seq.in_(seqs))
        )
    }
    candidates = {deployment_id for _, deployment_id in desired.values()} | {
        d for d in reported.values() if d is not None
    }
    deployments = {
        row.id: row
        for row in session.scalars(select(DeploymentRow).where(DeploymentRow.id.in_(candidates)))
    }
    now = utcnow()
    latest: dict[tuple[int, str, int], dict[str, Any]] = {}
    touched: set[int] = set()
    for device, reports in accepted:
        for report in reports:
            version_id = versions[(report.task, report.version)]
            deployment = _deployment_for(
                desired, reported, deployments, device.seq, report, version_id
            )
            stage = None
            if deployment is not None:
                stage = stage_of(bucket(deployment.id, device.device_id), deployment.stages)
                touched.add(deployment.id)
            latest[(device.seq, report.task, report.version)] = {
                "device_seq": device.seq,
                "task_name": report.task,
                "version": report.version,
                "deployment_id": deployment.id if deployment else None,
                "stage": stage,
                "state": report.state.value,
                "reason": report.reason or "",
                "updated_at": now,
            }
    if latest:
        _upsert(session, list(latest.values()))
    return errors, touched


def _deployment_for(
    desired: dict[tuple[int, str], tuple[int, int]],
    reported: dict[tuple[int, str, int], int | None],
    deployments: dict[int, DeploymentRow],
    seq: int,
    report: StatusReport,
    version_id: int,
) -> DeploymentRow | None:
    """The deployment the report is about: the one that sends the device this version now,
    or the one it sent before (a version the device rolled back from is no longer desired).
    A deployment the device was never sent is ignored, whatever the report names: reports
    feed gates, and a device must not steer a rollout it is not part of."""
    want = desired.get((seq, report.task))
    if want is not None and want[0] == version_id:
        candidate: int | None = want[1]
    else:
        candidate = reported.get((seq, report.task, report.version))
    row = deployments.get(candidate) if candidate is not None else None
    return row if row is not None and row.task_version_id == version_id else None


@functools.cache
def _upsert_statement(dialect: str) -> Executable:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # The table, not the mapped class: a Core executemany, without the ORM's bulk-insert
    # bookkeeping (a release writes thousands of these within a second).
    statement = insert(TaskStatusRow.__table__)  # type: ignore[arg-type]  # a Table
    updated = {
        column: statement.excluded[column]
        for column in ("deployment_id", "stage", "state", "reason", "updated_at")
    }
    return statement.on_conflict_do_update(
        index_elements=["device_seq", "task_name", "version"], set_=updated
    )


def _upsert(session: Session, rows: list[dict[str, Any]]) -> None:
    session.execute(_upsert_statement(session.get_bind().dialect.name), rows)


def record(session: Session, device: DevicePrincipal, reports: Sequence[StatusReport]) -> set[int]:
    """Store one device's reports; raises the error that refuses them."""
    (error,), touched = record_batch(session, [(device, reports)])
    if error is not None:
        raise error
    return touched
