"""Alembic environment: runs migrations on the engine the caller handed over."""

from __future__ import annotations

from alembic import context

from cloud.core.db import WRITE_OPTION
from cloud.tables import metadata

config = context.config
# A write transaction: on SQLite the whole migration commits or rolls back as one.
engine = config.attributes["engine"].execution_options(**{WRITE_OPTION: True})

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
