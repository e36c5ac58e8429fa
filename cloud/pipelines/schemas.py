"""Payloads of a pipeline run: the specs, the events (inline or stored uploads), the outputs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from device_sdk.wire import ONE_LINE_PATTERN

MAX_SPECS = 32
MAX_INLINE_EVENTS = 10_000
MAX_EVENTS = 50_000
"""The most events one run processes, inline or read from uploads."""
MAX_UPLOAD_ITEMS_READ = 1000


class UploadSelection(BaseModel):
    """Stored items of the ``events`` channel of one device, in the order they arrived:
    ``limit`` items after ``cursor`` (a ``next_cursor`` of a previous run or listing)."""

    model_config = ConfigDict(extra="forbid")

    device_id: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=ONE_LINE_PATTERN)
    ]
    limit: Annotated[int, Field(ge=1, le=MAX_UPLOAD_ITEMS_READ)] = 100
    cursor: Annotated[str, StringConstraints(max_length=200)] | None = None


class PipelineRunRequest(BaseModel):
    """The specs to run together (as a device runs its tasks' specs) and exactly one source
    of events: ``events`` inline ({id, type, ts, attrs} objects, in order) or ``uploads``."""

    model_config = ConfigDict(extra="forbid")

    specs: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_SPECS)]
    events: Annotated[list[Any], Field(max_length=MAX_INLINE_EVENTS)] | None = None
    uploads: UploadSelection | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PipelineRunRequest:
        if (self.events is None) == (self.uploads is None):
            raise ValueError("give exactly one of events (inline) or uploads (stored batches)")
        return self


class FeatureOut(BaseModel):
    value: Any
    type: str
    ttl_s: float | None


class FiringOut(BaseModel):
    trigger: str
    key: str | int | float | None
    events: list[dict[str, Any]]


class PipelineRunResult(BaseModel):
    """What the specs produced: each feature's last value, every firing in order, the
    engine's counters (``invalid``, ``duplicates``, ``late`` events...), how many events
    were read and, for uploads, the cursor to continue from (null: none left)."""

    features: dict[str, FeatureOut]
    firings: list[FiringOut]
    stats: dict[str, int]
    events_read: int
    upload_items_read: int = 0
    skipped_items: int = 0
    next_cursor: str | None = None
