"""Routers, their immutable trained versions, logged observations and decision tallies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.core.db import Base, UTCDateTime, utcnow


class RouterRow(Base):
    """A named router: its quality metrics (name, weight, tolerance), whether it takes
    plain features, the featurizer, and the cloud budget its controller holds."""

    __tablename__ = "routers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    n_features: Mapped[int] = mapped_column(Integer, default=0)
    feature_spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    budget: Mapped[float] = mapped_column(Float)
    window: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RouterVersionRow(Base):
    """One training run's result, never changed: weights (.npz) and ONNX export by digest,
    the calibrated threshold, and what the training saw."""

    __tablename__ = "router_versions"
    __table_args__ = (
        UniqueConstraint("router_id", "version", name="uq_router_versions_router_id_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    weights_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    onnx_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    onnx_size: Mapped[int] = mapped_column(BigInteger)
    alpha: Mapped[float] = mapped_column(Float)
    # Budget the alpha was calibrated for, observations used, and per-metric figures.
    training: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RouterObservationRow(Base):
    """A logged request with each metric's edge and cloud score (lists in metric order)."""

    __tablename__ = "router_observations"
    __table_args__ = (Index("ix_router_observations_router_id_id", "router_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id", ondelete="CASCADE"))
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    features: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    edge: Mapped[list[float]] = mapped_column(JSON)
    cloud: Mapped[list[float]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RouterTallyRow(Base):
    """Decisions taken together (one route call, or one device report): how many, how many
    went to the cloud, and their PRS histogram. Append-only, so replicas never contend."""

    __tablename__ = "router_tallies"
    __table_args__ = (Index("ix_router_tallies_router_id_at", "router_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    requests: Mapped[int] = mapped_column(Integer)
    cloud: Mapped[int] = mapped_column(Integer)
    histogram: Mapped[list[int]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
