"""What crosses the network for federated learning: the model update a device uploads
after training on its own data, and the cloud's receipt. Both sides import this module.

An update carries deltas (trained - base) for tensors named exactly as the base ONNX
model's initializers: whole dense tensors, and only the touched rows of embedding tables.
It carries nothing that names the device or its user: no device id, no user id, no
timestamps, no embedding of the user."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
# An ONNX initializer name.
PARAM_NAME_PATTERN = r"^[A-Za-z0-9_.:/-]{1,128}$"
KEY_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
MAX_DENSE_VALUES = 262_144
MAX_SPARSE_ROWS = 4_096
MAX_ROW_WIDTH = 512
MAX_SAMPLES = 1_000_000
MAX_DENSE_TENSORS = 64
MAX_SPARSE_TABLES = 16
MAX_DIMS = 4
MAX_DIM_SIZE = 65_536
MAX_ROW_ID = 2**31 - 1
# Values beyond this are almost surely a unit mistake, and squares of them overflow float32.
MAX_ABS_VALUE = 1e6

Number = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
Dim = Annotated[int, Field(ge=1, le=MAX_DIM_SIZE)]
RowId = Annotated[int, Field(ge=0, le=MAX_ROW_ID)]
Row = Annotated[list[Number], Field(min_length=1, max_length=MAX_ROW_WIDTH)]
Count = Annotated[int, Field(ge=1, le=MAX_SAMPLES)]


class DenseDelta(BaseModel):
    """The delta of a whole trainable tensor: ``values`` row-major, ``prod(shape)`` of
    them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=PARAM_NAME_PATTERN)
    shape: list[Dim] = Field(min_length=1, max_length=MAX_DIMS)
    values: list[Number] = Field(min_length=1, max_length=MAX_DENSE_VALUES)

    @model_validator(mode="after")
    def _values_fill_shape(self) -> DenseDelta:
        expected = math.prod(self.shape)
        if len(self.values) != expected:
            raise ValueError(
                f"dense delta '{self.name}' has {len(self.values)} values; "
                f"its shape {self.shape} needs {expected}."
            )
        return self


class SparseDelta(BaseModel):
    """The delta of the touched rows of an embedding table: ``rows[i]`` is row
    ``ids[i]``'s delta; ``counts[i]`` (optional) how many local samples touched it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=PARAM_NAME_PATTERN)
    ids: list[RowId] = Field(min_length=1, max_length=MAX_SPARSE_ROWS)
    rows: list[Row] = Field(min_length=1, max_length=MAX_SPARSE_ROWS)
    counts: list[Count] | None = Field(
        default=None,
        description="Per-row local sample counts; when absent, each row counts the "
        "update's samples.",
    )

    @field_validator("ids")
    @classmethod
    def _unique_ids(cls, ids: list[int]) -> list[int]:
        if len(set(ids)) != len(ids):
            raise ValueError("sparse ids must be unique.")
        return ids

    @model_validator(mode="after")
    def _rows_match_ids(self) -> SparseDelta:
        if len(self.rows) != len(self.ids):
            raise ValueError(
                f"sparse delta '{self.name}' has {len(self.ids)} ids but {len(self.rows)} rows."
            )
        if len({len(row) for row in self.rows}) != 1:
            raise ValueError(f"sparse delta '{self.name}': every row must have the same width.")
        if self.counts is not None and len(self.counts) != len(self.ids):
            raise ValueError(
                f"sparse delta '{self.name}' has {len(self.ids)} ids but {len(self.counts)} counts."
            )
        return self

    @property
    def width(self) -> int:
        """The width of every row."""
        return len(self.rows[0])


class ModelUpdate(BaseModel):
    """What a device uploads after local training on model ``model`` version
    ``base_version``: deltas from ``samples`` local examples. ``key`` (a lowercase UUID)
    makes a retried upload count once."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY_PATTERN)
    model: str = Field(pattern=MODEL_NAME_PATTERN)
    base_version: int = Field(ge=1, le=2**31 - 1)
    samples: int = Field(ge=1, le=MAX_SAMPLES)
    dense: list[DenseDelta] = Field(default_factory=list, max_length=MAX_DENSE_TENSORS)
    sparse: list[SparseDelta] = Field(default_factory=list, max_length=MAX_SPARSE_TABLES)

    @model_validator(mode="after")
    def _consistent(self) -> ModelUpdate:
        dense_names = [d.name for d in self.dense]
        sparse_names = [s.name for s in self.sparse]
        if len(set(dense_names)) != len(dense_names):
            raise ValueError("dense delta names must be unique.")
        if len(set(sparse_names)) != len(sparse_names):
            raise ValueError("sparse delta names must be unique.")
        both = sorted(set(dense_names) & set(sparse_names))
        if both:
            raise ValueError(f"{both} appear as both dense and sparse deltas.")
        if not dense_names and not sparse_names:
            raise ValueError("an update needs at least one dense or sparse delta.")
        dense_values = sum(len(d.values) for d in self.dense)
        if dense_values > MAX_DENSE_VALUES:
            raise ValueError(
                f"the update has {dense_values} dense values; at most {MAX_DENSE_VALUES}."
            )
        sparse_rows = sum(len(s.ids) for s in self.sparse)
        if sparse_rows > MAX_SPARSE_ROWS:
            raise ValueError(
                f"the update has {sparse_rows} sparse rows; at most {MAX_SPARSE_ROWS}."
            )
        return self


class UpdateAccepted(BaseModel):
    """The cloud's receipt: the open ``round`` the update joined, how many updates it has
    ``received`` so far (this one included), its minimum ``k``, and whether this ``key``
    was received before (a duplicate counts once)."""

    round: int
    received: int
    k: int
    duplicate: bool
