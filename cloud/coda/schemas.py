"""CoDA payloads: pools, sample batches, statistics. Retrieval's own payloads are on the
wire (``device_sdk.coda_wire``), since devices send and read them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from device_sdk.coda_wire import (
    MAX_ABS_VALUE,
    MAX_DIM,
    MAX_FEATURE_NUMBERS,
    POOL_NAME_PATTERN,
    Embedding,
    FeatureValue,
)

MAX_INGEST = 2000
FEATURE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
MAX_FEATURE_KEYS = 32
DESCRIPTION_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
PoolName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=POOL_NAME_PATTERN)]
Label = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]


def check_features(features: dict[str, Any]) -> dict[str, Any]:
    """Refuse features that are not ``{name: number or list of numbers}`` within bounds."""
    if len(features) > MAX_FEATURE_KEYS:
        raise ValueError(f"a sample may have at most {MAX_FEATURE_KEYS} features.")
    numbers = 0
    for name, value in features.items():
        if not re.fullmatch(FEATURE_NAME_PATTERN, name):
            raise ValueError(
                f"feature name {name[:70]!r} must match {FEATURE_NAME_PATTERN} "
                "(letters, digits, '_', '.', '-'; at most 64 characters)."
            )
        numbers += len(value) if isinstance(value, list) else 1
    if numbers > MAX_FEATURE_NUMBERS:
        raise ValueError(
            f"a sample's features may hold at most {MAX_FEATURE_NUMBERS} numbers; "
            f"these hold {numbers}."
        )
    return features


class CreatePool(BaseModel):
    """A new pool whose samples all carry an embedding of ``dim`` numbers."""

    model_config = ConfigDict(extra="forbid")

    name: PoolName
    dim: int = Field(ge=1, le=MAX_DIM)
    description: Annotated[str, StringConstraints(max_length=500, pattern=DESCRIPTION_PATTERN)] = ""


class IngestSample(BaseModel):
    """One anonymous sample: ``features`` (a name -> number or list of numbers), the
    ``label`` a model learns, and its ``embedding`` (the pool's ``dim`` numbers)."""

    model_config = ConfigDict(extra="forbid")

    features: dict[str, FeatureValue] = Field(max_length=64)
    label: Label
    embedding: Embedding

    @field_validator("features")
    @classmethod
    def _bounded(cls, features: dict[str, Any]) -> dict[str, Any]:
        return check_features(features)


class IngestBatch(BaseModel):
    """Up to 2,000 samples, stored all or none."""

    model_config = ConfigDict(extra="forbid")

    samples: list[IngestSample] = Field(min_length=1, max_length=MAX_INGEST)


class IngestAccepted(BaseModel):
    """How many samples were stored and the pool's size after them. They reach retrieval
    with the next index snapshot, built in the background."""

    accepted: int
    pool_size: int


class SnapshotOut(BaseModel):
    """The index snapshot this replica answers from."""

    version: int
    samples: int
    kind: str = Field(description="'exact' (flat inner product) or 'hnsw'.")
    built_at: datetime
    build_seconds: float


class PoolOut(BaseModel):
    """A pool and its statistics: samples stored, the snapshot serving queries, and how
    often devices retrieved from it (counted without identities)."""

    name: str
    description: str
    dim: int
    samples: int
    retrievals: int
    samples_returned: int
    snapshot: SnapshotOut | None
    pending_samples: int = Field(description="Stored samples the snapshot does not yet hold.")
    created_at: datetime


class PoolList(BaseModel):
    items: list[PoolOut]
