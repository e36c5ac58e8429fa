"""Federation payloads for admins: rounds, their outcome, validation sets, metric history.
What devices send and read is on the wire (``device_sdk.federation_wire``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloud.core.db import INT32_MAX
from cloud.deploy.buckets import validate_stages
from cloud.deploy.schemas import Gates
from cloud.deploy.targeting import Everyone, Target
from device_sdk.federation_wire import MODEL_NAME_PATTERN
from device_sdk.wire import TaskName

ModelName = Annotated[str, Field(min_length=1, max_length=64, pattern=MODEL_NAME_PATTERN)]
MAX_DEADLINE_S = 365 * 86_400.0


class RoundStatus(StrEnum):
    """``open`` collects updates; ``aggregating`` has k and is being combined and judged;
    ``released`` made a new model version; ``rejected`` was not better; ``discarded`` missed
    k by its deadline (its updates deleted); ``failed`` could not be aggregated."""

    open = "open"
    aggregating = "aggregating"
    released = "released"
    rejected = "rejected"
    discarded = "discarded"
    failed = "failed"


class DeployPolicy(BaseModel):
    """How the released version rolls out: as in ``POST /v1/deployments``, less the task."""

    model_config = ConfigDict(extra="forbid")

    target: Target = Field(default_factory=lambda: Everyone(everyone=True))
    stages: list[float] = Field(default_factory=lambda: [100.0])
    gates: Gates | None = None
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: list[float]) -> list[float]:
        return list(validate_stages(value))


class DeployAfterRelease(BaseModel):
    """After a release: publish ``task``'s next version with the new model file in place of
    the base one, and deploy it under ``policy``."""

    model_config = ConfigDict(extra="forbid")

    task: TaskName
    policy: DeployPolicy = Field(default_factory=DeployPolicy)


class CreateRound(BaseModel):
    """Open a round for ``model``: it aggregates once ``k`` updates arrive, or is discarded
    at ``deadline_s`` with fewer. The candidate (base + ``lr`` x aggregate) is released when
    its validation AUC beats the base's by at least ``min_gain``."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName
    base_version: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = Field(
        default=None, description="The version devices train on; the latest when omitted."
    )
    k: Annotated[int, Field(ge=2, le=100_000)] | None = Field(
        default=None, description="Updates needed; TANDEM_FEDERATION_K when omitted."
    )
    deadline_s: Annotated[float, Field(gt=0, le=MAX_DEADLINE_S)] | None = Field(
        default=None, description="Seconds to collect k updates; the server default when omitted."
    )
    clip: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] | None = Field(
        default=None, description="Central L2 clipping of each update before averaging."
    )
    noise_std: Annotated[float, Field(ge=0, le=1e3, allow_inf_nan=False)] = Field(
        default=0.0, description="Gaussian noise on the aggregate (times clip / clients)."
    )
    lr: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 1.0
    min_gain: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    deploy: DeployAfterRelease | None = None


class RoundOut(BaseModel):
    """A round: its settings, how many updates it holds, and what came of it."""

    id: int
    model: str
    base_version: int
    status: RoundStatus
    k: int
    received: int
    clients: int | None = Field(description="Updates combined by the aggregation.")
    deadline_at: datetime
    clip: float | None
    noise_std: float
    lr: float
    min_gain: float
    deploy: dict[str, Any] | None
    metrics: dict[str, float] = Field(
        description="`base_auc` (the base version) and `auc` (the candidate) once evaluated."
    )
    released_version: int | None
    task_version: int | None
    deployment_id: int | None
    reason: str
    opened_at: datetime
    closed_at: datetime | None


class RoundPage(BaseModel):
    items: list[RoundOut]
    next_cursor: str | None


class ValidationSetOut(BaseModel):
    """A model's cloud validation set."""

    model: str
    sha256: str
    rows: int
    updated_at: datetime


class VersionMetric(BaseModel):
    """One version's AUC on a validation set."""

    version: int
    auc: float
    validation_sha256: str
    round: int | None = Field(description="The round that evaluated it.")
    evaluated_at: datetime


class FederatedModelOut(BaseModel):
    """A model's federation: its validation set, the open round, and AUC per version."""

    name: str
    validation: ValidationSetOut | None
    open_round: int | None
    rounds: dict[str, int] = Field(description="Rounds by status.")
    versions: list[VersionMetric]
