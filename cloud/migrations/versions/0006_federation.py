"""federation: rounds, anonymous updates, validation sets and evaluations

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_rounds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("open_model", sa.String(length=64), nullable=True),
        sa.Column("base_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("received", sa.Integer(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("clip", sa.Float(), nullable=True),
        sa.Column("noise_std", sa.Float(), nullable=False),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("min_gain", sa.Float(), nullable=False),
        sa.Column("deploy", sa.JSON(), nullable=True),
        sa.Column("clients", sa.Integer(), nullable=True),
        sa.Column("base_auc", sa.Float(), nullable=True),
        sa.Column("auc", sa.Float(), nullable=True),
        sa.Column("released_version", sa.Integer(), nullable=True),
        sa.Column("task_version", sa.Integer(), nullable=True),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_rounds")),
        sa.UniqueConstraint("open_model", name=op.f("uq_federation_rounds_open_model")),
    )
    with op.batch_alter_table("federation_rounds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_federation_rounds_model"), ["model"], unique=False)
        batch_op.create_index(batch_op.f("ix_federation_rounds_status"), ["status"], unique=False)
    # Keyed by the upload's random key and, on SQLite, without a rowid: rows keep no order.
    op.create_table(
        "federation_updates",
        sa.Column("key", sa.String(length=36), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["federation_rounds.id"],
            name=op.f("fk_federation_updates_round_id_federation_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_federation_updates")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("federation_updates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_federation_updates_round_id"), ["round_id"], unique=False
        )
    op.create_table(
        "federation_models",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("validation_sha256", sa.String(length=64), nullable=False),
        sa.Column("validation_rows", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["validation_sha256"],
            ["blobs.sha256"],
            name=op.f("fk_federation_models_validation_sha256_blobs"),
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_federation_models")),
    )
    op.create_table(
        "federation_evaluations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("validation_sha256", sa.String(length=64), nullable=False),
        sa.Column("auc", sa.Float(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_evaluations")),
        sa.UniqueConstraint(
            "model", "version", "validation_sha256", name="uq_federation_evaluations_version"
        ),
    )
    with op.batch_alter_table("federation_evaluations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_federation_evaluations_model"), ["model"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("federation_evaluations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_federation_evaluations_model"))
    op.drop_table("federation_evaluations")
    op.drop_table("federation_models")
    with op.batch_alter_table("federation_updates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_federation_updates_round_id"))
    op.drop_table("federation_updates")
    with op.batch_alter_table("federation_rounds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_federation_rounds_status"))
        batch_op.drop_index(batch_op.f("ix_federation_rounds_model"))
    op.drop_table("federation_rounds")
