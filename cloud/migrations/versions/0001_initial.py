"""initial schema: keys, devices, blobs, model versions

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("bootstrap", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_admin_keys_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_admin_keys_token_hash")),
    )
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.Column("device_readable", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_blobs")),
    )
    op.create_table(
        "enrollment_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_devices", sa.Integer(), nullable=True),
        sa.Column("devices_enrolled", sa.Integer(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollment_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_enrollment_keys_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_enrollment_keys_token_hash")),
    )
    op.create_table(
        "devices",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("enrollment_key_id", sa.Integer(), nullable=True),
        sa.Column("platform", sa.String(length=32), nullable=True),
        sa.Column("os_version", sa.String(length=32), nullable=True),
        sa.Column("app_version", sa.String(length=32), nullable=True),
        sa.Column("model", sa.String(length=64), nullable=True),
        sa.Column("region", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrollment_key_id"],
            ["enrollment_keys.id"],
            name=op.f("fk_devices_enrollment_key_id_enrollment_keys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_devices")),
        sa.UniqueConstraint("device_id", name=op.f("uq_devices_device_id")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_devices_token_hash")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_app_version"), ["app_version"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_last_seen"), ["last_seen"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_platform"), ["platform"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_region"), ["region"], unique=False)

    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("opset", sa.Integer(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sha256"], ["blobs.sha256"], name=op.f("fk_model_versions_sha256_blobs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_versions_name"), ["name"], unique=False)

    op.create_table(
        "device_tags",
        sa.Column("device_seq", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_seq"],
            ["devices.seq"],
            name=op.f("fk_device_tags_device_seq_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_seq", "tag", name=op.f("pk_device_tags")),
    )
    with op.batch_alter_table("device_tags", schema=None) as batch_op:
        batch_op.create_index("ix_device_tags_tag_seq", ["tag", "device_seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("device_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_device_tags_tag_seq")

    op.drop_table("device_tags")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_name"))

    op.drop_table("model_versions")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_region"))
        batch_op.drop_index(batch_op.f("ix_devices_platform"))
        batch_op.drop_index(batch_op.f("ix_devices_last_seen"))
        batch_op.drop_index(batch_op.f("ix_devices_app_version"))

    op.drop_table("devices")
    op.drop_table("enrollment_keys")
    op.drop_table("blobs")
    op.drop_table("admin_keys")
