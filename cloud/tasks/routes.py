"""Task bundles over HTTP: publish a packed task, read its versions, download bundles."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Path, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cloud.auth.principal import DevicePrincipal
from cloud.blobs.routes import serve_blob
from cloud.core.db import INT32_MAX
from cloud.core.deps import Admin, Context, CurrentPrincipal, ReadSession
from cloud.events.publisher import publish_event
from cloud.tasks import service
from cloud.tasks.schemas import TaskDetail, TaskList, TaskVersionOut

router = APIRouter(tags=["tasks"])
NamePath = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
# Compressed uploads are capped by TANDEM_MAX_UPLOAD_BYTES; what they inflate to, by this.
UNPACKED_PER_UPLOADED = 4


@router.post("/v1/tasks", status_code=status.HTTP_201_CREATED)
async def publish_task(
    _admin: Admin,
    context: Context,
    bundle: Annotated[UploadFile, File(description="The .tar.gz made by `tandem task pack`.")],
) -> TaskVersionOut:
    """Publish a task bundle as the immutable version its manifest names. The bundle is
    checked (422 `invalid_bundle`), stored by digest, and its manifest is signed with the
    platform key; a version that is already published gets 409 `task_version_exists`."""
    data = await bundle.read()
    row = await run_in_threadpool(
        lambda: service.publish_task(
            context.db,
            context.blobs,
            context.platform_key,
            data=data,
            max_unpacked_bytes=UNPACKED_PER_UPLOADED * context.settings.max_upload_bytes,
        )
    )
    await publish_event(
        context.broker,
        "task.published",
        {"name": row.name, "version": row.version, "bundle_sha256": row.bundle_sha256},
    )
    return service.to_out(row)


@router.get("/v1/tasks")
def list_tasks(_admin: Admin, session: ReadSession) -> TaskList:
    """Every published task name with its latest version, version count and last publish."""
    return TaskList(items=service.list_tasks(session))


@router.get("/v1/tasks/{name}")
def read_task(name: NamePath, _admin: Admin, session: ReadSession) -> TaskDetail:
    """A task and all its published versions, oldest first."""
    rows = service.versions_of(session, name)
    return TaskDetail(name=name, versions=[service.to_out(r) for r in rows])


@router.get("/v1/tasks/{name}/versions/{version}")
def read_task_version(
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=INT32_MAX)],
    _admin: Admin,
    session: ReadSession,
) -> TaskVersionOut:
    """One published version of a task: signed manifest, signature, bundle digest and URL."""
    return service.to_out(service.get_task_version(session, name, version))


@router.get("/v1/bundles/{sha256}", response_class=StreamingResponse)
def download_bundle(
    sha256: str, request: Request, principal: CurrentPrincipal, context: Context
) -> Response:
    """Download a published task bundle (.tar.gz) by its sha256, as an admin or a device.
    A device gets only bundles of its own desired state. Supports `Range` (to resume) and
    `If-None-Match`; responses are immutable and cacheable. Other digests get 404."""
    key = (principal.seq if isinstance(principal, DevicePrincipal) else 0, sha256)
    if key not in context.readable_bundles:
        # A short read: no transaction stays open while the bytes stream out.
        with context.db.session(write=False) as session:
            service.readable_bundle(session, sha256, principal)
        context.remember_readable(*key)
    return serve_blob(request, context, sha256, service.BUNDLE_MEDIA_TYPE)
