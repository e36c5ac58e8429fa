"""Rounds, their anonymous updates, validation sets and evaluations.

No table here names a device, a token, an address, or when an update arrived."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.core.db import Base, UTCDateTime, utcnow


class FederationRoundRow(Base):
    """One round of a model: its settings, how many updates it holds, and its outcome.

    ``open_model`` is the model's name while the round is open and NULL afterwards: its
    unique constraint allows one open round per model on every database."""

    __tablename__ = "federation_rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    open_model: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    base_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    k: Mapped[int] = mapped_column(Integer)
    received: Mapped[int] = mapped_column(Integer, default=0)
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime)
    clip: Mapped[float | None] = mapped_column(Float, nullable=True)
    noise_std: Mapped[float] = mapped_column(Float, default=0.0)
    lr: Mapped[float] = mapped_column(Float, default=1.0)
    min_gain: Mapped[float] = mapped_column(Float, default=0.0)
    deploy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    clients: Mapped[int | None] = mapped_column(Integer, nullable=True)
    base_auc: Mapped[float | None] = mapped_column(Float, nullable=True)
    auc: Mapped[float | None] = mapped_column(Float, nullable=True)
    released_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    task_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deployment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(String(1000), default="")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When aggregation was claimed (a stale claim is retried) and when the round ended.
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FederationUpdateRow(Base):
    """One anonymous update: the round it joined, its idempotency key (a random UUID the
    device drew for this upload), its sample count and its deltas (.npz bytes; NULL once
    the round is over). Keyed by the random key, and on SQLite without a rowid, so rows
    keep no arrival order."""

    __tablename__ = "federation_updates"
    __table_args__ = ({"sqlite_with_rowid": False},)

    key: Mapped[str] = mapped_column(String(36), primary_key=True)
    round_id: Mapped[int] = mapped_column(
        ForeignKey("federation_rounds.id", ondelete="CASCADE"), index=True
    )
    samples: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class FederationModelRow(Base):
    """A model's cloud validation set (an .npz in the blob store) and its size."""

    __tablename__ = "federation_models"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    validation_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    validation_rows: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FederationEvaluationRow(Base):
    """A model version's AUC on a validation set (by digest)."""

    __tablename__ = "federation_evaluations"
    __table_args__ = (
        UniqueConstraint(
            "model", "version", "validation_sha256", name="uq_federation_evaluations_version"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    validation_sha256: Mapped[str] = mapped_column(String(64))
    auc: Mapped[float] = mapped_column(Float)
    round_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
