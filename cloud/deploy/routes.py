"""Deployments over HTTP: release a task version to a fleet under a policy, and steer it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from starlette.concurrency import run_in_threadpool

from cloud.core.deps import Admin, Context, ReadSession
from cloud.deploy import service
from cloud.deploy.rollout import rematerialize
from cloud.deploy.schemas import (
    Action,
    CreateDeployment,
    DeploymentOut,
    DeploymentPage,
    DeploymentState,
)
from cloud.events.publisher import publish_event

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])
DeploymentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _create(context: Context, body: CreateDeployment) -> tuple[int, str]:
    with context.db.session() as session:
        row = service.create(session, body)
        return row.id, row.task_name


def _act(context: Context, deployment_id: int, action: Action) -> str:
    with context.db.session() as session:
        return service.act(session, deployment_id, action).task_name


def _read(context: Context, deployment_id: int) -> DeploymentOut:
    with context.db.session(write=False) as session:
        return service.to_out(session, service.get(session, deployment_id))


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_deployment(
    _admin: Admin, context: Context, body: CreateDeployment
) -> DeploymentOut:
    """Release a published task version to the devices its `target` selects, in `stages`
    (cumulative percentages; a device's place is a stable hash of its id and the deployment's,
    so raising a stage keeps the devices already in). With `gates`, the rollout advances and
    rolls back by itself. Devices that register later and match get it too. Answers once
    every device's desired state is updated and the devices concerned are nudged."""
    deployment_id, task_name = await run_in_threadpool(_create, context, body)
    await rematerialize(context, task_name)
    await publish_event(
        context.broker, "deployment.created", {"deployment_id": deployment_id, "task": task_name}
    )
    return await run_in_threadpool(_read, context, deployment_id)


@router.get("")
def list_deployments(
    _admin: Admin,
    session: ReadSession,
    task: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")] = None,
    state: DeploymentState | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> DeploymentPage:
    """Deployments, newest first, optionally of one task or in one state, with per-stage
    progress. Pass `next_cursor` back as `cursor` for the next page."""
    rows, next_cursor = service.list_page(
        session, task=task, state=state, limit=limit, cursor=cursor
    )
    return DeploymentPage(items=[service.to_out(session, r) for r in rows], next_cursor=next_cursor)


@router.get("/{deployment_id}")
def read_deployment(
    deployment_id: DeploymentId, _admin: Admin, session: ReadSession
) -> DeploymentOut:
    """One deployment: its policy, state, current stage and, per stage, how many devices
    are targeted, downloaded, active, failed and rolled back."""
    return service.to_out(session, service.get(session, deployment_id))


@router.post("/{deployment_id}/{action}")
async def steer_deployment(
    deployment_id: DeploymentId, action: Action, _admin: Admin, context: Context
) -> DeploymentOut:
    """`pause` (hold the current stage), `resume`, `advance` (to the next stage now) or
    `rollback` (devices return to the next deployment of the task, or to none). A rolled
    back deployment cannot be resumed: create a new one."""
    task_name = await run_in_threadpool(_act, context, deployment_id, action)
    await rematerialize(context, task_name)
    await publish_event(
        context.broker,
        f"deployment.{action.value}",
        {"deployment_id": deployment_id, "task": task_name},
    )
    return await run_in_threadpool(_read, context, deployment_id)
