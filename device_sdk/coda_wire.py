"""What crosses the network for CoDA sample retrieval: a device's anonymous query
embeddings, and the pool samples the cloud sends back. Both sides import this module."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

POOL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_DIM = 1024
MAX_QUERIES = 32
MAX_K = 200
MAX_RANDOM = 1000
MAX_FEATURE_NUMBERS = 4096
# Values beyond this are almost surely a unit mistake, and squares of them overflow float32.
MAX_ABS_VALUE = 1e6

Number = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
Embedding = Annotated[list[Number], Field(min_length=1, max_length=MAX_DIM)]
FeatureValue = Number | Annotated[list[Number], Field(max_length=MAX_FEATURE_NUMBERS)]


class RetrieveRequest(BaseModel):
    """Anonymous query embeddings that summarise a device's local data (not the data).

    The cloud answers each query with its ``k`` nearest pool samples, de-duplicated
    across queries, and adds ``random`` samples drawn uniformly from the pool."""

    model_config = ConfigDict(extra="forbid")

    pool: str = Field(pattern=POOL_NAME_PATTERN)
    queries: list[Embedding] = Field(min_length=1, max_length=MAX_QUERIES)
    k: int = Field(default=50, ge=1, le=MAX_K)
    random: int = Field(default=0, ge=0, le=MAX_RANDOM)

    @field_validator("queries")
    @classmethod
    def _same_length(cls, queries: list[list[float]]) -> list[list[float]]:
        if len({len(q) for q in queries}) != 1:
            raise ValueError("every query embedding must have the same length.")
        return queries


class PoolSample(BaseModel):
    """One anonymous pool sample: what a model reads, its label, its embedding, and (for a
    retrieved sample) its best similarity to any query."""

    id: int
    features: dict[str, FeatureValue]
    label: float
    embedding: list[float]
    score: float | None = None


class RetrieveResponse(BaseModel):
    """The nearest samples (best first, de-duplicated, at most the cloud's cap) and the
    random ones; ``snapshot_version`` names the index snapshot that answered."""

    pool: str
    snapshot_version: int
    pool_size: int
    samples: list[PoolSample]
    random_samples: list[PoolSample]
    capped: bool = Field(description="True when the cloud's cap cut the nearest samples.")
