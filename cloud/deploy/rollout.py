"""Moving rollouts forward: re-materialise after a change, nudge devices, and a per-replica
sweeper that applies time-based gates and finishes work a crashed replica left undone."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from cloud.core.context import CloudContext
from cloud.deploy import service
from cloud.deploy.materialize import Changed, materialize_task, pending_tasks
from cloud.deploy.nudges import send_nudges

log = logging.getLogger("tandem.deploy")
# Targeted counts also drift as devices register or change attributes; refresh them now and then.
RECOUNT_EVERY_S = 300.0


def _materialize(context: CloudContext, task_name: str) -> list[Changed]:
    with context.db.session() as session:
        return materialize_task(session, task_name)


async def rematerialize(context: CloudContext, task_name: str) -> int:
    """Bring every device's desired state of ``task_name`` up to date and nudge the
    devices whose state changed; returns how many changed."""
    try:
        changed = await run_in_threadpool(_materialize, context, task_name)
    except IntegrityError:
        # A device was removed while the pass ran. The change itself is committed and
        # still unmaterialised, so the sweeper applies it on its next round.
        log.warning(
            "materialisation raced a device removal; the sweeper retries", extra={"task": task_name}
        )
        return 0
    await send_nudges(context.broker, changed)
    return len(changed)


def _gate_pass(context: CloudContext, deployment_ids: list[int] | None) -> set[str]:
    """Apply gates; return the tasks whose deployments moved."""
    moved: set[str] = set()
    with context.db.session(write=False) as session:
        ids = deployment_ids if deployment_ids is not None else service.gated_deployments(session)
    for deployment_id in ids:
        with context.db.session() as session:
            if service.apply_gates(session, deployment_id):
                moved.add(service.get(session, deployment_id).task_name)
    return moved


async def apply_gates(context: CloudContext, deployment_ids: list[int] | None = None) -> None:
    """Judge gates (of the given deployments, or all gated ones) and roll out the result."""
    for task_name in await run_in_threadpool(_gate_pass, context, deployment_ids):
        await rematerialize(context, task_name)


def _pending(context: CloudContext) -> list[str]:
    with context.db.session(write=False) as session:
        return pending_tasks(session)


def _live_tasks(context: CloudContext) -> list[str]:
    with context.db.session(write=False) as session:
        return service.live_tasks(session)


async def sweep_once(context: CloudContext, *, recount: bool = False) -> None:
    await apply_gates(context)
    tasks = set(await run_in_threadpool(_pending, context))
    if recount:
        tasks |= set(await run_in_threadpool(_live_tasks, context))
    for task_name in sorted(tasks):
        await rematerialize(context, task_name)


class Sweeper:
    """A background loop in every replica; all its updates are conditional, so replicas
    sweeping at the same moment do the work once."""

    def __init__(self, context: CloudContext) -> None:
        self.context = context
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deploy-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_recount = loop.time()
        while True:
            await asyncio.sleep(self.context.settings.deploy_sweep_s)
            recount = loop.time() - last_recount >= RECOUNT_EVERY_S
            try:
                await sweep_once(self.context, recount=recount)
            except Exception:
                log.exception("deployment sweep failed; retrying next interval")
            else:
                if recount:
                    last_recount = loop.time()
