"""routers: edge/cloud routers, trained versions, observations, decision tallies

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("feature_spec", sa.JSON(), nullable=False),
        sa.Column("budget", sa.Float(), nullable=False),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routers")),
        sa.UniqueConstraint("name", name=op.f("uq_routers_name")),
    )
    op.create_table(
        "router_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("router_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("onnx_sha256", sa.String(length=64), nullable=False),
        sa.Column("onnx_size", sa.BigInteger(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("training", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["router_id"],
            ["routers.id"],
            name=op.f("fk_router_versions_router_id_routers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["weights_sha256"],
            ["blobs.sha256"],
            name=op.f("fk_router_versions_weights_sha256_blobs"),
        ),
        sa.ForeignKeyConstraint(
            ["onnx_sha256"], ["blobs.sha256"], name=op.f("fk_router_versions_onnx_sha256_blobs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_router_versions")),
        sa.UniqueConstraint("router_id", "version", name="uq_router_versions_router_id_version"),
    )
    op.create_table(
        "router_observations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("router_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("features", sa.JSON(), nullable=True),
        sa.Column("edge", sa.JSON(), nullable=False),
        sa.Column("cloud", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["router_id"],
            ["routers.id"],
            name=op.f("fk_router_observations_router_id_routers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_router_observations")),
    )
    with op.batch_alter_table("router_observations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_router_observations_router_id_id", ["router_id", "id"], unique=False
        )
    op.create_table(
        "router_tallies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("router_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("cloud", sa.Integer(), nullable=False),
        sa.Column("histogram", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["router_id"],
            ["routers.id"],
            name=op.f("fk_router_tallies_router_id_routers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_router_tallies")),
    )
    with op.batch_alter_table("router_tallies", schema=None) as batch_op:
        batch_op.create_index("ix_router_tallies_router_id_at", ["router_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("router_tallies", schema=None) as batch_op:
        batch_op.drop_index("ix_router_tallies_router_id_at")
    op.drop_table("router_tallies")
    with op.batch_alter_table("router_observations", schema=None) as batch_op:
        batch_op.drop_index("ix_router_observations_router_id_id")
    op.drop_table("router_observations")
    op.drop_table("router_versions")
    op.drop_table("routers")
