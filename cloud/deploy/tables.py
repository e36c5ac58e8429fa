"""Deployments, each device's materialised desired state, and what devices report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.core.db import Base, UTCDateTime, utcnow


class DeploymentRow(Base):
    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_task_state", "task_name", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_name: Mapped[str] = mapped_column(String(64))
    task_version_id: Mapped[int] = mapped_column(ForeignKey("task_versions.id"))
    target: Mapped[dict[str, Any]] = mapped_column(JSON)
    stages: Mapped[list[float]] = mapped_column(JSON)
    gates: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # active | paused | rolled_back
    state: Mapped[str] = mapped_column(String(16), default="active", index=True)
    state_reason: Mapped[str] = mapped_column(String(500), default="")
    stage: Mapped[int] = mapped_column(Integer, default=0)
    stage_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # rev grows with every change that can move devices; devices reflect it once
    # materialized_rev catches up (the sweeper retries if a replica died in between).
    rev: Mapped[int] = mapped_column(Integer, default=1)
    materialized_rev: Mapped[int] = mapped_column(Integer, default=0)
    # Devices matching the targeting, per stage, as of the last materialisation.
    targeted: Mapped[list[int]] = mapped_column(JSON, default=list)


class DeviceTaskRow(Base):
    """The materialised desired state: which version of each task a device should run."""

    __tablename__ = "device_tasks"

    device_seq: Mapped[int] = mapped_column(
        ForeignKey("devices.seq", ondelete="CASCADE"), primary_key=True
    )
    task_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_version_id: Mapped[int] = mapped_column(ForeignKey("task_versions.id"))
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)


class TaskStatusRow(Base):
    """The latest state a device reported for each version of a task: a rolled-back version
    keeps its `rolled_back` row while the device runs another."""

    __tablename__ = "task_status"
    __table_args__ = (Index("ix_task_status_deployment", "deployment_id", "stage", "state"),)

    device_seq: Mapped[int] = mapped_column(
        ForeignKey("devices.seq", ondelete="CASCADE"), primary_key=True
    )
    task_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), nullable=True
    )
    stage: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
