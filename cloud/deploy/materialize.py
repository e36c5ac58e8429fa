"""The materialised desired state: which version of each task every device should run.

Devices read their desired state on every sync, so it is stored, not computed per request:
``device_tasks`` holds one row per (device, task) and ``devices.desired_rev`` grows with
each change (it is the ETag). It is recomputed incrementally:

- when a deployment changes (created, advanced, paused, rolled back), for its task only:
  one pass over the fleet in keyset-ordered chunks, evaluating that task's live
  deployments (a handful) against each device; only rows that change are written;
- when a device registers or changes its attributes, for that device only: every live
  deployment evaluated against one device.

A request never evaluates deployments. Each pass returns the devices whose state changed,
so the caller nudges exactly those.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from cloud.deploy.buckets import bucket, stage_of
from cloud.deploy.tables import DeploymentRow, DeviceTaskRow
from cloud.deploy.targeting import Matcher, compile_target, target_adapter
from cloud.devices.service import attributes_of
from cloud.devices.tables import DeviceRow, DeviceTagRow
from device_sdk.wire import DeviceAttributes

LIVE_STATES = ("active", "paused")
CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Changed:
    """A device whose desired state changed, and its new revision (for the nudge)."""

    device_id: str
    desired_rev: int


@dataclass(frozen=True)
class _Live:
    row: DeploymentRow
    matches: Matcher
    stages: Sequence[float]

    def place(self, device_id: str, attributes: DeviceAttributes) -> int | None:
        """The device's stage in this deployment, or None when it is not targeted."""
        if not self.matches(device_id, attributes):
            return None
        return stage_of(bucket(self.row.id, device_id), self.stages)


def _live(session: Session, task_name: str | None = None) -> list[_Live]:
    """Live deployments in resolution order: priority, then the most recent first."""
    query = select(DeploymentRow).where(DeploymentRow.state.in_(LIVE_STATES))
    if task_name is not None:
        query = query.where(DeploymentRow.task_name == task_name)
    rows = session.scalars(
        query.order_by(
            DeploymentRow.priority.desc(), DeploymentRow.created_at.desc(), DeploymentRow.id.desc()
        )
    )
    return [
        _Live(row, compile_target(target_adapter.validate_python(row.target)), row.stages)
        for row in rows
    ]


def lock_task(session: Session, task_name: str) -> None:
    """Serialise materialisations of one task across replicas (PostgreSQL; SQLite's write
    transactions are serial already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": task_name})


def lock_live_tasks(session: Session) -> None:
    """Take every live task's lock, in one order. Call at the start of a transaction that
    changes a device and then materialises it: a fleet pass running meanwhile would
    otherwise read the device's old attributes and overwrite the new result (and taking
    the locks after touching the device row could deadlock with that pass)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    names = session.scalars(
        select(DeploymentRow.task_name)
        .where(DeploymentRow.state.in_(LIVE_STATES))
        .group_by(DeploymentRow.task_name)
        .order_by(DeploymentRow.task_name)
    )
    for name in names:
        lock_task(session, name)


def _devices(session: Session, after: int) -> list[tuple[int, str, DeviceAttributes]]:
    rows = session.execute(
        select(
            DeviceRow.seq,
            DeviceRow.device_id,
            DeviceRow.platform,
            DeviceRow.os_version,
            DeviceRow.app_version,
            DeviceRow.model,
            DeviceRow.region,
        )
        .where(DeviceRow.seq > after)
        .order_by(DeviceRow.seq)
        .limit(CHUNK)
    ).all()
    if not rows:
        return []
    tags: dict[int, list[str]] = {}
    for seq, tag in session.execute(
        select(DeviceTagRow.device_seq, DeviceTagRow.tag).where(
            DeviceTagRow.device_seq.between(rows[0].seq, rows[-1].seq)
        )
    ):
        tags.setdefault(seq, []).append(tag)
    # model_construct: these values were validated when stored; skip re-validating 100k rows.
    return [
        (
            r.seq,
            r.device_id,
            DeviceAttributes.model_construct(
                platform=r.platform,
                os_version=r.os_version,
                app_version=r.app_version,
                model=r.model,
                region=r.region,
                tags=tags.get(r.seq, []),
            ),
        )
        for r in rows
    ]


def _winner(live: Iterable[_Live], device_id: str, attributes: DeviceAttributes) -> _Live | None:
    """The first deployment (in resolution order) that targets the device and whose rollout
    has reached the device's stage. A paused deployment keeps what it reached."""
    for deployment in live:
        stage = deployment.place(device_id, attributes)
        if stage is not None and stage <= deployment.row.stage:
            return deployment
    return None


def _assignment(seq: int, task_name: str, winner: _Live) -> dict[str, Any]:
    return {
        "device_seq": seq,
        "task_name": task_name,
        "task_version_id": winner.row.task_version_id,
        "deployment_id": winner.row.id,
    }


def _apply(session: Session, task_name: str, changes: dict[int, _Live | None]) -> dict[int, int]:
    """Write the changed (device, task) rows and bump those devices' revisions."""
    if not changes:
        return {}
    seqs = list(changes)
    for start in range(0, len(seqs), 500):
        session.execute(
            delete(DeviceTaskRow).where(
                DeviceTaskRow.task_name == task_name,
                DeviceTaskRow.device_seq.in_(seqs[start : start + 500]),
            )
        )
    rows = [
        _assignment(seq, task_name, winner) for seq, winner in changes.items() if winner is not None
    ]
    if rows:
        # A Core executemany: a release writes thousands of these, and the ORM's unit of
        # work cost more than the writes themselves.
        session.execute(insert(DeviceTaskRow.__table__), rows)  # type: ignore[arg-type]  # a Table
    revs: dict[int, int] = {}
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        session.execute(
            update(DeviceRow)
            .where(DeviceRow.seq.in_(chunk))
            .values(desired_rev=DeviceRow.desired_rev + 1)
        )
        revs.update(
            session.execute(
                select(DeviceRow.seq, DeviceRow.desired_rev).where(DeviceRow.seq.in_(chunk))
            ).all()
        )
    session.flush()
    return revs


def materialize_task(session: Session, task_name: str) -> list[Changed]:
    """Recompute every device's desired version of ``task_name``; return who changed.

    Also refreshes each live deployment's per-stage count of targeted devices. Call in a
    write transaction; it takes the task's lock first.
    """
    lock_task(session, task_name)
    live = _live(session, task_name)
    current = {
        seq: (version_id, deployment_id)
        for seq, version_id, deployment_id in session.execute(
            select(
                DeviceTaskRow.device_seq, DeviceTaskRow.task_version_id, DeviceTaskRow.deployment_id
            ).where(DeviceTaskRow.task_name == task_name)
        )
    }
    targeted = {d.row.id: [0] * len(d.stages) for d in live}
    changes: dict[int, _Live | None] = {}
    ids: dict[int, str] = {}
    after = 0
    while batch := _devices(session, after):
        after = batch[-1][0]
        for seq, device_id, attributes in batch:
            winner: _Live | None = None
            owned = False
            for deployment in live:
                stage = deployment.place(device_id, attributes)
                if stage is None:
                    continue
                if not owned:
                    # Counted for the first deployment that targets it: the one it will run
                    # once rollouts finish. Gates then wait only for devices they can get.
                    targeted[deployment.row.id][stage] += 1
                    owned = True
                if winner is None and stage <= deployment.row.stage:
                    winner = deployment
            wanted = (winner.row.task_version_id, winner.row.id) if winner else None
            if current.get(seq) != wanted:
                changes[seq] = winner
                ids[seq] = device_id
    revs = _apply(session, task_name, changes)
    for deployment in live:
        deployment.row.targeted = targeted[deployment.row.id]
        deployment.row.materialized_rev = deployment.row.rev
    session.execute(
        update(DeploymentRow)
        .where(DeploymentRow.task_name == task_name, DeploymentRow.state.not_in(LIVE_STATES))
        .values(materialized_rev=DeploymentRow.rev)
    )
    return [Changed(ids[seq], rev) for seq, rev in revs.items()]


def materialize_device(session: Session, seq: int) -> Changed | None:
    """Recompute one device's desired state across all tasks (after it registered or
    changed its attributes); return it if anything changed."""
    device = session.get(DeviceRow, seq)
    if device is None:
        return None
    attributes = attributes_of(device)
    by_task: dict[str, list[_Live]] = {}
    for deployment in _live(session):
        by_task.setdefault(deployment.row.task_name, []).append(deployment)
    current = {
        row.task_name: row
        for row in session.scalars(select(DeviceTaskRow).where(DeviceTaskRow.device_seq == seq))
    }
    changed = False
    for task_name in set(by_task) | set(current):
        winner = _winner(by_task.get(task_name, []), device.device_id, attributes)
        row = current.get(task_name)
        wanted = (winner.row.task_version_id, winner.row.id) if winner else None
        have = (row.task_version_id, row.deployment_id) if row else None
        if have == wanted:
            continue
        changed = True
        if winner is None:
            session.delete(row)
        elif row is None:
            session.add(DeviceTaskRow(**_assignment(seq, task_name, winner)))
        else:
            row.task_version_id = winner.row.task_version_id
            row.deployment_id = winner.row.id
    if not changed:
        return None
    device.desired_rev = device.desired_rev + 1
    session.flush()
    return Changed(device.device_id, device.desired_rev)


def pending_tasks(session: Session) -> list[str]:
    """Tasks with a deployment change not yet reflected in devices' desired state."""
    return list(
        session.scalars(
            select(DeploymentRow.task_name)
            .where(DeploymentRow.materialized_rev < DeploymentRow.rev)
            .group_by(DeploymentRow.task_name)
        )
    )


def fleet_size(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(DeviceRow)) or 0
