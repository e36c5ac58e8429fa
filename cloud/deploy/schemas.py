"""Deployment payloads: a task version, a policy (targeting, stages, gates), its progress."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloud.core.db import INT32_MAX
from cloud.deploy.buckets import validate_stages
from cloud.deploy.targeting import Everyone, Target
from device_sdk.wire import TaskName


class Gates(BaseModel):
    """When a rollout moves on by itself, and when it gives up.

    Advance to the next stage once at least ``min_healthy`` devices of the current stage
    (or all of them, if fewer) report `active` and ``min_soak_s`` seconds have passed.
    Roll back when, among at least ``min_reports`` reports in the current stage, the share
    of `failed` exceeds ``max_failure_rate``.
    """

    model_config = ConfigDict(extra="forbid")

    min_healthy: Annotated[int, Field(ge=0, le=10_000_000)] = 1
    min_soak_s: Annotated[float, Field(ge=0, le=30 * 86400)] = 0
    max_failure_rate: Annotated[float, Field(gt=0, le=1)] | None = None
    min_reports: Annotated[int, Field(ge=1, le=10_000_000)] = 5


class CreateDeployment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: TaskName
    version: Annotated[int, Field(ge=1, le=INT32_MAX)]
    target: Target = Field(default_factory=lambda: Everyone(everyone=True))
    stages: list[float] = Field(
        default_factory=lambda: [100.0],
        description="Cumulative percentages of the targeted devices, e.g. [1, 10, 50, 100].",
    )
    gates: Gates | None = Field(
        default=None, description="Automatic advance and rollback; omit to advance by hand."
    )
    priority: Annotated[int, Field(ge=-1000, le=1000)] = Field(
        default=0,
        description="Among deployments of one task that reach a device, the highest priority "
        "wins, then the most recent.",
    )

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: list[float]) -> list[float]:
        return list(validate_stages(value))


class DeploymentState(StrEnum):
    active = "active"
    paused = "paused"
    rolled_back = "rolled_back"


class Action(StrEnum):
    pause = "pause"
    resume = "resume"
    advance = "advance"
    rollback = "rollback"


class StageProgress(BaseModel):
    stage: int
    percent: float
    targeted: int = Field(description="Devices the targeting reaches in this stage's slice.")
    downloaded: int
    active: int
    failed: int
    rolled_back: int


class DeploymentOut(BaseModel):
    id: int
    task: str
    version: int
    target: dict[str, Any]
    target_description: str
    stages: list[float]
    gates: Gates | None
    priority: int
    state: DeploymentState
    state_reason: str
    stage: int
    stage_started_at: datetime
    created_at: datetime
    updated_at: datetime
    materialized: bool = Field(description="Devices' desired state reflects the latest change.")
    progress: list[StageProgress]


class DeploymentPage(BaseModel):
    items: list[DeploymentOut]
    next_cursor: str | None


class StatusAccepted(BaseModel):
    accepted: int
