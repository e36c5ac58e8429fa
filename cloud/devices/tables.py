"""Registered devices and their tags (a table of its own so tag filters use an index)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.core.db import Base, UTCDateTime, utcnow


class DeviceRow(Base):
    __tablename__ = "devices"

    # seq orders devices for keyset pagination; device_id is the public identifier.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(36), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    enrollment_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollment_keys.id", ondelete="SET NULL"), nullable=True
    )
    platform: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    os_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    app_version: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    region: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # Grows whenever the device's desired state changes; it is the ETag of that state.
    desired_rev: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    tags: Mapped[list[DeviceTagRow]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="DeviceTagRow.tag"
    )


class DeviceTagRow(Base):
    __tablename__ = "device_tags"
    __table_args__ = (Index("ix_device_tags_tag_seq", "tag", "device_seq"),)

    device_seq: Mapped[int] = mapped_column(
        ForeignKey("devices.seq", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
