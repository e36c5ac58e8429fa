"""Schema migrations: from empty, back down, concurrently, and in step with the tables."""

from __future__ import annotations

import threading

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from cloud.core.db import make_engine
from cloud.migrations import alembic_config, current_revision, head_revision, upgrade
from cloud.tables import metadata


def test_upgrade_from_empty_reaches_head(database_url: str) -> None:
    """An empty database upgrades to the head revision with every table present."""
    engine = make_engine(database_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_migrations_match_the_table_definitions(database_url: str) -> None:
    """After upgrading, Alembic finds no difference between the schema and the tables."""
    engine = make_engine(database_url)
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    """Every migration can be undone, and the schema rebuilt afterwards."""
    engine = make_engine(database_url)
    upgrade(engine)
    command.downgrade(alembic_config(engine), "base")
    assert current_revision(engine) is None
    assert [t for t in inspect(engine).get_table_names() if t in metadata.tables] == []
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    engine.dispose()


def test_upgrade_is_idempotent(database_url: str) -> None:
    """Upgrading an up-to-date database changes nothing and does not fail."""
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    engine.dispose()


def test_concurrent_upgrades_do_not_race(database_url: str) -> None:
    """Four replicas upgrading one empty database at once all succeed (the lock serialises them)."""
    errors: list[BaseException] = []

    def run() -> None:
        engine = make_engine(database_url)
        try:
            upgrade(engine)
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
