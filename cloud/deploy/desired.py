"""A device's desired state, read from the materialised rows: one indexed lookup."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.core.errors import DeviceNotFound
from cloud.deploy.tables import DeviceTaskRow
from cloud.devices.tables import DeviceRow
from cloud.tasks.tables import TaskVersionRow
from device_sdk.wire import DesiredState, DesiredTask, TaskManifest


def current_rev(session: Session, seq: int) -> int:
    rev = session.scalar(select(DeviceRow.desired_rev).where(DeviceRow.seq == seq))
    if rev is None:
        raise DeviceNotFound("This device was removed; register it again.")
    return rev


# Rendered tasks, keyed by what makes them unique: the bundle digest and signature fix
# the manifest. Versions are immutable, so an entry never goes stale.
_RENDERED: dict[tuple[str, str, int], str] = {}
_RENDERED_MAX = 10_000


def render(deployment_id: int, version: TaskVersionRow) -> str:
    """The task's entry of a DesiredState document as JSON, rendered once per process."""
    key = (version.bundle_sha256, version.signature, deployment_id)
    rendered = _RENDERED.get(key)
    if rendered is None:
        if len(_RENDERED) >= _RENDERED_MAX:
            _RENDERED.clear()
        rendered = DesiredTask(
            name=version.name,
            version=version.version,
            deployment_id=deployment_id,
            bundle_sha256=version.bundle_sha256,
            bundle_size=version.bundle_size,
            manifest=TaskManifest.model_validate(version.manifest),
            signature=version.signature,
        ).model_dump_json()
        _RENDERED[key] = rendered
    return rendered


def rendered(bundle_sha256: str, signature: str, deployment_id: int) -> str | None:
    """A task's rendered JSON if some earlier request rendered it, else None."""
    return _RENDERED.get((bundle_sha256, signature, deployment_id))


def desired_state_json(session: Session, seq: int) -> bytes:
    """The DesiredState document as JSON bytes."""
    rev = current_rev(session, seq)
    rows = session.execute(
        select(DeviceTaskRow.deployment_id, TaskVersionRow)
        .join(TaskVersionRow, TaskVersionRow.id == DeviceTaskRow.task_version_id)
        .where(DeviceTaskRow.device_seq == seq)
        .order_by(DeviceTaskRow.task_name)
    )
    tasks = ",".join(render(deployment_id, version) for deployment_id, version in rows)
    return f'{{"rev":{rev},"tasks":[{tasks}]}}'.encode()


def desired_state(session: Session, seq: int) -> DesiredState:
    return DesiredState.model_validate_json(desired_state_json(session, seq))


def etag(rev: int) -> str:
    return f'"{rev}"'
