"""Publishing tasks: each bundle becomes one immutable, signed version of its task.

The bundle's own manifest names the task and its version, so publishing never picks a
version number: a (name, version) published once is refused ever after, and a device that
pinned a version always gets the same bytes.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.auth.principal import DevicePrincipal, Principal
from cloud.blobs.service import readable_blob, record_blob
from cloud.blobs.tables import BlobRow
from cloud.core.blobstore import BlobStore, InvalidDigest, is_sha256
from cloud.core.db import Database
from cloud.core.errors import (
    BlobNotFound,
    InvalidPipelineSpec,
    InvalidTaskBundle,
    TaskNotFound,
    TaskVersionExists,
    TaskVersionNotFound,
)
from cloud.core.signing import PlatformKey
from cloud.deploy.tables import DeviceTaskRow
from cloud.tasks.schemas import TaskSummary, TaskVersionOut
from cloud.tasks.tables import TaskVersionRow
from device_sdk import InvalidBundle, bundle
from device_sdk.wire import TaskManifest
from pipelines import problems_of as pipeline_problems

BUNDLE_MEDIA_TYPE = "application/gzip"
_GUNZIP_CHUNK = 1 << 20


def to_out(row: TaskVersionRow) -> TaskVersionOut:
    return TaskVersionOut(
        name=row.name,
        version=row.version,
        bundle_sha256=row.bundle_sha256,
        bundle_size=row.bundle_size,
        manifest=TaskManifest.model_validate(row.manifest),
        signature=row.signature,
        created_at=row.created_at,
        bundle_url=f"/v1/bundles/{row.bundle_sha256}",
    )


def publish_task(
    db: Database,
    blobs: BlobStore,
    platform_key: PlatformKey,
    *,
    data: bytes,
    max_unpacked_bytes: int,
) -> TaskVersionRow:
    """Check ``data`` as a bundle, store it by digest, sign its manifest, record the version.

    The version row and the blob's index entry commit in one transaction: on any failure
    no version exists and a stored file is an unreadable orphan. A (name, version) that is
    already published, or that a concurrent publish takes first, raises TaskVersionExists.
    """
    manifest = _read_bundle(data, max_unpacked_bytes)
    try:
        with db.session() as session:
            _refuse_published(session, manifest.name, manifest.version)
            stored = blobs.write_bytes(data)
            record_blob(
                session,
                stored.sha256,
                stored.size,
                device_readable=True,
                media_type=BUNDLE_MEDIA_TYPE,
            )
            row = TaskVersionRow(
                name=manifest.name,
                version=manifest.version,
                bundle_sha256=stored.sha256,
                bundle_size=stored.size,
                manifest=manifest.model_dump(mode="json"),
                signature=platform_key.sign(manifest.canonical_bytes()),
            )
            session.add(row)
            session.flush()
            return row
    except IntegrityError:
        # A concurrent publish of this (name, version) committed between our check and ours.
        with db.session() as session:
            _refuse_published(session, manifest.name, manifest.version)
        raise


def _read_bundle(data: bytes, max_unpacked_bytes: int) -> TaskManifest:
    try:
        manifest = bundle.read(data, max_unpacked_bytes=max_unpacked_bytes).manifest
    except InvalidBundle as exc:
        raise InvalidTaskBundle(str(exc)) from exc
    if manifest.pipeline is not None:
        # Devices would disable an invalid pipeline; refuse it here, every problem named.
        problems = pipeline_problems(manifest.pipeline)
        if problems:
            raise InvalidPipelineSpec(
                f"Task {manifest.name!r} version {manifest.version}: the manifest's pipeline "
                f"is invalid: {'; '.join(problems)}. Fix manifest.json and publish again.",
                details=[f"pipeline.{problem}" for problem in problems],
            )
    return manifest


def _refuse_published(session: Session, name: str, version: int) -> None:
    versions = published_versions(session, name)
    if version in versions:
        raise TaskVersionExists(
            f"Task {name!r} version {version} is published and versions are immutable; "
            f"raise `version` in manifest.json (the latest is {versions[-1]})."
        )


def published_versions(session: Session, name: str) -> list[int]:
    """The published version numbers of task ``name``, ascending (empty when none)."""
    return list(
        session.scalars(
            select(TaskVersionRow.version)
            .where(TaskVersionRow.name == name)
            .order_by(TaskVersionRow.version)
        )
    )


def list_tasks(session: Session) -> list[TaskSummary]:
    """Every task name with its latest version, version count and last publish."""
    rows = session.execute(
        select(
            TaskVersionRow.name,
            func.max(TaskVersionRow.version),
            func.count(),
            func.max(TaskVersionRow.created_at),
        )
        .group_by(TaskVersionRow.name)
        .order_by(TaskVersionRow.name)
    )
    return [
        TaskSummary(name=name, latest_version=latest, versions=count, updated_at=updated)
        for name, latest, count, updated in rows
    ]


def versions_of(session: Session, name: str) -> list[TaskVersionRow]:
    """All versions of task ``name``, oldest first; TaskNotFound when there are none."""
    rows = list(
        session.scalars(
            select(TaskVersionRow)
            .where(TaskVersionRow.name == name)
            .order_by(TaskVersionRow.version)
        )
    )
    if not rows:
        raise TaskNotFound(
            f"No task named {name!r}; publish one with `tandem task publish` (POST /v1/tasks)."
        )
    return rows


def get_task_version(session: Session, name: str, version: int) -> TaskVersionRow:
    """One published version; TaskVersionNotFound lists the versions that exist."""
    row = session.scalar(
        select(TaskVersionRow).where(TaskVersionRow.name == name, TaskVersionRow.version == version)
    )
    if row is None:
        published = ", ".join(str(r.version) for r in versions_of(session, name))
        raise TaskVersionNotFound(
            f"Task {name!r} has no version {version}; published versions are {published}."
        )
    return row


def readable_bundle(session: Session, sha256: str, principal: Principal) -> BlobRow:
    """The blob of a published bundle, if ``principal`` may read it; other blobs are 404."""
    if not is_sha256(sha256):
        raise InvalidDigest(
            f"{sha256[:80]!r} is not a sha256 digest (64 lowercase hex characters)."
        )
    query = select(TaskVersionRow.id).where(TaskVersionRow.bundle_sha256 == sha256)
    if isinstance(principal, DevicePrincipal):
        # A device reads only its own state: bundles its desired state names.
        query = query.join(
            DeviceTaskRow,
            (DeviceTaskRow.task_version_id == TaskVersionRow.id)
            & (DeviceTaskRow.device_seq == principal.seq),
        )
    published = session.scalar(query.limit(1))
    if published is None:
        raise BlobNotFound(
            f"No task bundle with sha256 {sha256} is published; "
            "GET /v1/tasks/{name} lists each version's bundle_sha256."
        )
    return readable_blob(session, sha256, principal)
