"""Pipelines over HTTP: an admin runs specs over events, as a device would have."""

from __future__ import annotations

from fastapi import APIRouter

from cloud.core.deps import Admin, Context
from cloud.pipelines import service
from cloud.pipelines.schemas import PipelineRunRequest, PipelineRunResult

router = APIRouter(tags=["pipelines"])


@router.post("/v1/pipelines/run")
def run_pipelines(body: PipelineRunRequest, _admin: Admin, context: Context) -> PipelineRunResult:
    """Run `specs` (1 to 32 pipeline specs, compiled together as a device compiles its
    tasks' specs) over `events` given inline (at most 10,000 `{id, type, ts, attrs}`
    objects, in order) or over the `uploads` a device stored on the `events` channel
    (`device_id`, up to `limit` items after `cursor`, in the order they arrived; at most
    50,000 events). Returns each feature's last value with its type and TTL, every
    trigger firing with its matched events, the engine's counters and, for uploads, the
    `next_cursor` to continue from. Nothing is stored. An invalid spec is answered 422
    `invalid_pipeline_spec` with every problem's path in `details`."""
    return service.run(context.db, body)
