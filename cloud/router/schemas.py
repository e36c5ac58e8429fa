"""Router payloads: configuration, observations, route requests and answers, statistics."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from device_sdk.router_wire import METRIC_NAME_PATTERN, MetricSpec, Share
from device_sdk.text_features import FeatureSpec

ROUTER_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
RouterName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=ROUTER_NAME_PATTERN)
]
DESCRIPTION_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
MAX_TEXT_CHARS = 100_000
MAX_FEATURES = 1024
MAX_OBSERVATIONS = 1000
MAX_ROUTE_ITEMS = 1000
# No NUL: PostgreSQL text cannot hold one. Every other character, hostile or not, is text.
RequestText = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS, pattern=r"^[^\x00]*$")]
Score = Annotated[float, Field(allow_inf_nan=False, ge=-1e12, le=1e12)]
FeatureValue = Annotated[float, Field(allow_inf_nan=False, ge=-1e12, le=1e12)]
FeatureVector = Annotated[list[FeatureValue], Field(max_length=MAX_FEATURES)]


class CreateRouter(BaseModel):
    """A new router: its metrics (weights sum to 1), its budget (share of requests allowed
    to the cloud), the window over which the budget holds, and how many plain features
    each request carries (0: text only)."""

    model_config = ConfigDict(extra="forbid")

    name: RouterName
    metrics: list[MetricSpec] = Field(min_length=1, max_length=16)
    budget: Share = 0.3
    window: int = Field(default=1000, ge=10, le=100_000)
    n_features: int = Field(default=0, ge=0, le=MAX_FEATURES)
    feature_spec: FeatureSpec = FeatureSpec()
    description: Annotated[str, StringConstraints(max_length=500, pattern=DESCRIPTION_PATTERN)] = ""

    @model_validator(mode="after")
    def _check_metrics(self) -> CreateRouter:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be distinct; got {names}")
        total = sum(m.weight for m in self.metrics)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"metric weights must sum to 1; they sum to {total:.6g}")
        return self


class UpdateRouter(BaseModel):
    """Change the budget or its window; the controller of every replica follows."""

    model_config = ConfigDict(extra="forbid")

    budget: Share | None = None
    window: int | None = Field(default=None, ge=10, le=100_000)


class Observation(BaseModel):
    """A logged request: its text and/or plain features, and per metric the score the edge
    model and the cloud model got (higher is better)."""

    model_config = ConfigDict(extra="forbid")

    text: RequestText | None = None
    features: FeatureVector | None = None
    edge: dict[Annotated[str, StringConstraints(pattern=METRIC_NAME_PATTERN)], Score]
    cloud: dict[Annotated[str, StringConstraints(pattern=METRIC_NAME_PATTERN)], Score]


class ObservationBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Observation] = Field(min_length=1, max_length=MAX_OBSERVATIONS)


class ObservationsAccepted(BaseModel):
    accepted: int
    total: int


class TrainRequest(BaseModel):
    """Train a new version on the router's latest ``max_observations`` observations."""

    model_config = ConfigDict(extra="forbid")

    max_observations: int = Field(default=50_000, ge=10, le=100_000)
    l2: float = Field(default=3e-5, ge=0.0, le=10.0, allow_inf_nan=False)
    epochs: int = Field(default=300, ge=1, le=2000)


class RouteItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: RequestText | None = None
    features: FeatureVector | None = None


class RouteRequest(BaseModel):
    """Route one request (``text`` and/or ``features``) or a batch (``items``) with
    router ``router`` (its latest version unless ``version`` is given)."""

    model_config = ConfigDict(extra="forbid")

    router: RouterName
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    text: RequestText | None = None
    features: FeatureVector | None = None
    items: list[RouteItem] | None = Field(default=None, min_length=1, max_length=MAX_ROUTE_ITEMS)
    key_tokens: int = Field(default=5, ge=0, le=50)

    @model_validator(mode="after")
    def _one_shape(self) -> RouteRequest:
        single = self.text is not None or self.features is not None
        if self.items is not None and single:
            raise ValueError("send either text/features (one request) or items (a batch), not both")
        if self.items is None and not single:
            raise ValueError("send text and/or features (one request), or items (a batch)")
        return self


class KeyTokenOut(BaseModel):
    token: str
    push: float = Field(description="Push on the metric's logit; negative favours the cloud.")


class RouteDecision(BaseModel):
    """Where one request goes. ``prs`` is the Pareto relative superiority, ``d`` each
    metric's probability that the edge is at least as good, ``key_tokens`` the terms that
    pushed each metric hardest; ``capped`` says the budget's window cap kept a request on
    the edge although its PRS was under the threshold."""

    target: str
    prs: float
    d: dict[str, float]
    key_tokens: dict[str, list[KeyTokenOut]]
    capped: bool


class RouteResponse(BaseModel):
    router: str
    version: int
    threshold: float
    budget: float
    decision: RouteDecision | None = None
    items: list[RouteDecision] | None = None


class RouterVersionOut(BaseModel):
    version: int
    alpha: float
    onnx_sha256: str
    onnx_size: int
    training: dict[str, Any]
    created_at: datetime


class SharePoint(BaseModel):
    """Decisions in one time bucket: requests, cloud calls and their share vs the budget."""

    start: datetime
    requests: int
    cloud: int
    share: float
    budget: float


class RouterStats(BaseModel):
    """Recent decisions (the last ``hours``): totals, cloud share per bucket against the
    budget, the PRS histogram (``bins`` equal bins over [0, 1]), and this replica's live
    controller: its threshold and cloud share over its window."""

    hours: int
    requests: int
    cloud: int
    share: float
    budget: float
    over_time: list[SharePoint]
    prs_histogram: list[int]
    bins: int
    threshold: float | None
    window_share: float | None
    observations: int


class RouterOut(BaseModel):
    name: str
    description: str
    metrics: list[MetricSpec]
    n_features: int
    feature_spec: FeatureSpec
    budget: float
    window: int
    created_at: datetime
    updated_at: datetime
    versions: list[RouterVersionOut]


class RouterDetail(RouterOut):
    stats: RouterStats


class RouterList(BaseModel):
    items: list[RouterOut]
