"""Model registry payloads."""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from cloud.core.errors import InvalidInput

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=MODEL_NAME_PATTERN)
]
# Free text, on several lines if need be: every control character but tab, LF and CR (which
# browsers send for a newline) is refused. A NUL in particular cannot go into PostgreSQL text.
DESCRIPTION_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
ModelDescription = Annotated[str, StringConstraints(max_length=500, pattern=DESCRIPTION_PATTERN)]


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
        metrics[key] = _finite_float(key, number)
    return metrics


def _finite_float(key: str, number: Any) -> float:
    problem = InvalidInput(f"metrics[{key!r}] must be a finite number that fits in a float.")
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise problem
    try:
        # JSON integers are unbounded: one past float range raises rather than becoming inf.
        converted = float(number)
    except OverflowError:
        raise problem from None
    if not math.isfinite(converted):
        raise problem
    return converted
