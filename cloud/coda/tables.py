"""Sample pools and their anonymous samples. Nothing here names a device or a user."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.core.db import Base, UTCDateTime, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
SampleId = BigInteger().with_variant(Integer(), "sqlite")


class CodaPoolRow(Base):
    """A named pool: the length of its embeddings, how many samples it holds, and how
    often devices have retrieved from it (counts only, no identities)."""

    __tablename__ = "coda_pools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    dim: Mapped[int] = mapped_column(Integer)
    samples: Mapped[int] = mapped_column(BigInteger, default=0)
    retrievals: Mapped[int] = mapped_column(BigInteger, default=0)
    returned: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CodaSampleRow(Base):
    """One anonymous sample: features (JSON numbers), label, embedding (float32 bytes)."""

    __tablename__ = "coda_samples"
    __table_args__ = (Index("ix_coda_samples_pool_id_id", "pool_id", "id"),)

    id: Mapped[int] = mapped_column(SampleId, primary_key=True, autoincrement=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("coda_pools.id", ondelete="CASCADE"))
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    label: Mapped[float] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
