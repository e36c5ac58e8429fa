"""Items devices uploaded, one row per device and idempotency key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.core.db import Base, UTCDateTime, utcnow


class UploadRow(Base):
    """One uploaded item. A retried item (same device, same key) is stored once.

    The key is unique per device, not globally: a device cannot block another's items by
    sending their keys first. Removing a device removes its uploads.
    """

    __tablename__ = "uploads"
    __table_args__ = (
        UniqueConstraint("device_seq", "key", name="uq_uploads_device_seq_key"),
        Index("ix_uploads_channel_id", "channel", "id"),
    )

    # id orders items for keyset pagination, in the order they were stored.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_seq: Mapped[int] = mapped_column(ForeignKey("devices.seq", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(36))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
