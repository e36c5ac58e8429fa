"""Shipping a released version: the task's next version with the new model file in place
of the old one, published and deployed through the ordinary task and deployment services."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.core.context import CloudContext
from cloud.deploy import service as deployments
from cloud.deploy.schemas import CreateDeployment
from cloud.federation.errors import InvalidDeployTarget
from cloud.federation.schemas import DeployAfterRelease
from cloud.registry.tables import ModelVersionRow
from cloud.tasks import service as tasks
from cloud.tasks.tables import TaskVersionRow
from device_sdk import bundle
from device_sdk.wire import FileDigest, TaskManifest

# What a republished bundle may inflate to, as for uploads (cloud/tasks/routes.py).
UNPACKED_PER_UPLOADED = 4


def _model_file(session: Session, manifest: TaskManifest, model: ModelVersionRow) -> str | None:
    """The bundle path holding a version of ``model``: by digest, else by the name the
    task's code uses for it."""
    digests = set(
        session.scalars(select(ModelVersionRow.sha256).where(ModelVersionRow.name == model.name))
    )
    for ref in manifest.models:
        digest = manifest.files.get(ref.file)
        if digest is not None and digest.sha256 in digests:
            return ref.file
    for ref in manifest.models:
        if ref.name == model.name:
            return ref.file
    return None


def _latest_task(session: Session, task: str) -> TaskVersionRow:
    return tasks.versions_of(session, task)[-1]


def check_deploy_task(session: Session, task: str, model: ModelVersionRow) -> None:
    """Refuse a deploy section whose task does not carry ``model`` (InvalidDeployTarget)."""
    latest = _latest_task(session, task)
    manifest = TaskManifest.model_validate(latest.manifest)
    if _model_file(session, manifest, model) is None:
        raise InvalidDeployTarget(
            f"Task {task!r} version {latest.version} ships no version of model "
            f"{model.name!r} (no model file with its digest, none named {model.name!r}); "
            "name a task that does, or leave `deploy` out."
        )


def publish_and_deploy(
    context: CloudContext, deploy: DeployAfterRelease, model: ModelVersionRow, data: bytes
) -> tuple[int, int]:
    """Publish ``deploy.task``'s next version with ``data`` as its model file and create
    its deployment; returns (task version, deployment id)."""
    with context.db.session(write=False) as session:
        latest = _latest_task(session, deploy.task)
        manifest = TaskManifest.model_validate(latest.manifest)
        path = _model_file(session, manifest, model)
    if path is None:
        raise InvalidDeployTarget(
            f"Task {deploy.task!r} version {latest.version} no longer ships model {model.name!r}."
        )
    old = bundle.read(
        context.blobs.path_for(latest.bundle_sha256).read_bytes(),
        max_unpacked_bytes=UNPACKED_PER_UPLOADED * context.settings.max_upload_bytes,
    )
    files = {**old.files, path: data}
    next_manifest = TaskManifest.model_validate(
        {
            **manifest.model_dump(mode="json"),
            "version": latest.version + 1,
            "files": {
                **manifest.model_dump(mode="json")["files"],
                path: FileDigest(
                    sha256=hashlib.sha256(data).hexdigest(), size=len(data)
                ).model_dump(),
            },
        }
    )
    published = tasks.publish_task(
        context.db,
        context.blobs,
        context.platform_key,
        data=bundle.build(next_manifest, files),
        max_unpacked_bytes=UNPACKED_PER_UPLOADED * context.settings.max_upload_bytes,
    )
    policy = deploy.policy
    with context.db.session() as session:
        row = deployments.create(
            session,
            CreateDeployment(
                task=deploy.task,
                version=published.version,
                target=policy.target,
                stages=policy.stages,
                gates=policy.gates,
                priority=policy.priority,
            ),
        )
        return published.version, row.id
