"""tasks, deployments, desired state, status

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("bundle_sha256", sa.String(length=64), nullable=False),
        sa.Column("bundle_size", sa.BigInteger(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bundle_sha256"], ["blobs.sha256"], name=op.f("fk_task_versions_bundle_sha256_blobs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_versions")),
        sa.UniqueConstraint("name", "version", name="uq_task_versions_name_version"),
    )
    with op.batch_alter_table("task_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_versions_name"), ["name"], unique=False)

    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_name", sa.String(length=64), nullable=False),
        sa.Column("task_version_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("gates", sa.JSON(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.String(length=500), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("stage_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rev", sa.Integer(), nullable=False),
        sa.Column("materialized_rev", sa.Integer(), nullable=False),
        sa.Column("targeted", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_version_id"],
            ["task_versions.id"],
            name=op.f("fk_deployments_task_version_id_task_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployments_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_deployments_state"), ["state"], unique=False)
        batch_op.create_index("ix_deployments_task_state", ["task_name", "state"], unique=False)

    op.create_table(
        "device_tasks",
        sa.Column("device_seq", sa.Integer(), nullable=False),
        sa.Column("task_name", sa.String(length=64), nullable=False),
        sa.Column("task_version_id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_device_tasks_deployment_id_deployments"),
        ),
        sa.ForeignKeyConstraint(
            ["device_seq"],
            ["devices.seq"],
            name=op.f("fk_device_tasks_device_seq_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_version_id"],
            ["task_versions.id"],
            name=op.f("fk_device_tasks_task_version_id_task_versions"),
        ),
        sa.PrimaryKeyConstraint("device_seq", "task_name", name=op.f("pk_device_tasks")),
    )
    with op.batch_alter_table("device_tasks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_tasks_deployment_id"), ["deployment_id"], unique=False
        )

    op.create_table(
        "task_status",
        sa.Column("device_seq", sa.Integer(), nullable=False),
        sa.Column("task_name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("stage", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_task_status_deployment_id_deployments"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["device_seq"],
            ["devices.seq"],
            name=op.f("fk_task_status_device_seq_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_seq", "task_name", "version", name=op.f("pk_task_status")),
    )
    with op.batch_alter_table("task_status", schema=None) as batch_op:
        batch_op.create_index(
            "ix_task_status_deployment", ["deployment_id", "stage", "state"], unique=False
        )

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("desired_rev", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("desired_rev")

    with op.batch_alter_table("task_status", schema=None) as batch_op:
        batch_op.drop_index("ix_task_status_deployment")

    op.drop_table("task_status")
    with op.batch_alter_table("device_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_tasks_deployment_id"))

    op.drop_table("device_tasks")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index("ix_deployments_task_state")
        batch_op.drop_index(batch_op.f("ix_deployments_state"))
        batch_op.drop_index(batch_op.f("ix_deployments_created_at"))

    op.drop_table("deployments")
    with op.batch_alter_table("task_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_versions_name"))

    op.drop_table("task_versions")
