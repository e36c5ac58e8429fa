"""What crosses the network for routing on the device: the router a device downloads, and
the decisions it reports back so the cloud counts them against the budget."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from device_sdk.text_features import FeatureSpec

MAX_REPORTED_DECISIONS = 1000
METRIC_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class MetricSpec(BaseModel):
    """A quality metric: its ``weight`` in the PRS (weights sum to 1), and the
    ``tolerance`` by which the edge's score may trail the cloud's and still count as
    at least as good."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=METRIC_NAME_PATTERN)
    weight: float = Field(gt=0.0, le=1.0, allow_inf_nan=False)
    tolerance: float = Field(default=0.0, ge=0.0, le=1e6, allow_inf_nan=False)


class RouterExport(BaseModel):
    """A trained router version as a device needs it to route locally: the ONNX file (by
    digest, at ``download_url``), how to featurize a text, the metrics, and the threshold
    the cloud currently publishes for the budget."""

    name: str
    version: int
    metrics: list[MetricSpec]
    feature_spec: FeatureSpec
    n_features: int
    budget: Share
    window: int
    threshold: float
    onnx_sha256: str
    onnx_size: int
    download_url: str


class ReportedDecision(BaseModel):
    """One decision a device took locally: the request's PRS and whether it went to the
    cloud."""

    model_config = ConfigDict(extra="forbid")

    prs: Share
    cloud: bool


class DecisionReport(BaseModel):
    """Decisions a device took with router ``version``, in the order it took them."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1)
    decisions: list[ReportedDecision] = Field(min_length=1, max_length=MAX_REPORTED_DECISIONS)


class DecisionReceipt(BaseModel):
    """The cloud counted ``accepted`` decisions; ``threshold`` is its current alpha."""

    accepted: int
    threshold: float
