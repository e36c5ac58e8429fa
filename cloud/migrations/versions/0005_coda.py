"""coda: sample pools and their anonymous samples

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coda_pools",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("retrievals", sa.BigInteger(), nullable=False),
        sa.Column("returned", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coda_pools")),
        sa.UniqueConstraint("name", name=op.f("uq_coda_pools_name")),
    )
    op.create_table(
        "coda_samples",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("label", sa.Float(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["coda_pools.id"],
            name=op.f("fk_coda_samples_pool_id_coda_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coda_samples")),
    )
    with op.batch_alter_table("coda_samples", schema=None) as batch_op:
        batch_op.create_index("ix_coda_samples_pool_id_id", ["pool_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("coda_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_coda_samples_pool_id_id")
    op.drop_table("coda_samples")
    op.drop_table("coda_pools")
