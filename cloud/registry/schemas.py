"""Model registry payloads."""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from cloud.core.errors import InvalidInput

ModelName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$"),
]


class Target(StrEnum):
    """Where a model runs: on the cloud's serving path, or shipped to devices."""

    cloud = "cloud"
    device = "device"


class TensorSpec(BaseModel):
    name: str
    dtype: str
    shape: list[int | str | None] | None = Field(
        description="Dimensions: a number, a symbolic name (e.g. 'batch'), or null when unknown."
    )


class ModelVersionOut(BaseModel):
    name: str
    version: int
    target: Target
    sha256: str
    size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int | None
    metrics: dict[str, float]
    description: str
    created_at: datetime
    download_url: str


class ModelSummary(BaseModel):
    name: str
    target: Target
    latest_version: int
    versions: int
    updated_at: datetime


class ModelList(BaseModel):
    items: list[ModelSummary]


class ModelDetail(BaseModel):
    name: str
    target: Target
    versions: list[ModelVersionOut]


def parse_metrics(raw: str | None) -> dict[str, float]:
    """The optional `metrics` form field: a JSON object of name -> number."""
    if raw is None or not raw.strip():
        return {}
    try:
        value: Any = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput('metrics must be a JSON object such as {"auc": 0.78}.') from exc
    if not isinstance(value, dict) or len(value) > 32:
        raise InvalidInput(
            'metrics must be a JSON object of at most 32 entries, e.g. {"auc": 0.78}.'
        )
    metrics: dict[str, float] = {}
    for key, number in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise InvalidInput("metrics names must be strings of 1-64 characters.")
        if (
            isinstance(number, bool)
            or not isinstance(number, int | float)
            or not math.isfinite(number)
        ):
            raise InvalidInput(f"metrics[{key!r}] must be a finite number.")
        metrics[key] = float(number)
    return metrics
