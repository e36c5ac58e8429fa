"""Status reports from devices: the latest state of each task, placed in its rollout stage."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.auth.principal import DevicePrincipal
from cloud.core.db import utcnow
from cloud.core.errors import UnknownTaskVersion
from cloud.deploy.buckets import bucket, stage_of
from cloud.deploy.tables import DeploymentRow, DeviceTaskRow, TaskStatusRow
from cloud.tasks.tables import TaskVersionRow
from device_sdk.wire import StatusReport


def _deployment_for(
    session: Session, device: DevicePrincipal, report: StatusReport, version_id: int
) -> DeploymentRow | None:
    """The deployment the report is about: the one that sent the device this version, or
    the one the device names (a version it rolled back from is no longer desired)."""
    desired = session.get(DeviceTaskRow, (device.seq, report.task))
    candidate = desired.deployment_id if desired and desired.task_version_id == version_id else None
    candidate = candidate or report.deployment_id
    if candidate is None:
        return None
    row = session.get(DeploymentRow, candidate)
    return row if row is not None and row.task_version_id == version_id else None


def record(session: Session, device: DevicePrincipal, reports: list[StatusReport]) -> set[int]:
    """Store each report as the task's latest state; return the deployments they concern."""
    touched: set[int] = set()
    for report in reports:
        version_id = session.scalar(
            select(TaskVersionRow.id).where(
                TaskVersionRow.name == report.task, TaskVersionRow.version == report.version
            )
        )
        if version_id is None:
            raise UnknownTaskVersion(
                f"Task {report.task!r} has no published version {report.version}; report only "
                "versions received through the desired state."
            )
        deployment = _deployment_for(session, device, report, version_id)
        stage = (
            stage_of(bucket(deployment.id, device.device_id), deployment.stages)
            if deployment is not None
            else None
        )
        row = session.get(TaskStatusRow, (device.seq, report.task))
        if row is None:
            row = TaskStatusRow(device_seq=device.seq, task_name=report.task)
            session.add(row)
        row.version = report.version
        row.deployment_id = deployment.id if deployment else None
        row.stage = stage
        row.state = report.state.value
        row.reason = report.reason or ""
        row.updated_at = utcnow()
        if deployment is not None:
            touched.add(deployment.id)
    session.flush()
    return touched
