"""The metadata store: one SQLAlchemy engine per app, identical on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Constraint names are fixed so that migrations name the same thing on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


WRITE_OPTION = "tandem_write"
# The largest value an INTEGER column holds on PostgreSQL (int4). Every integer a request
# can send to such a column is bounded by it, so it gets a 4xx instead of overflowing the
# bind with a 500.
INT32_MAX = 2**31 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for its backend; nothing connects until first use."""
    # Request handlers run on anyio's thread pool (40 threads): a smaller connection pool
    # makes threads queue for a connection before they queue for the database.
    pooling = {"pool_size": 20, "max_overflow": 30, **kwargs}
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pooling
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # SQLAlchemy emits BEGIN itself (below), so the driver must not.
            dbapi_connection.isolation_level = None
            # WAL lets readers proceed during a write; foreign keys are off by default in SQLite.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Connection) -> None:
            # A transaction that reads and then writes fails outright in WAL mode if another
            # connection wrote in between (SQLITE_BUSY_SNAPSHOT). Write transactions take
            # the write lock up front instead, and wait for it (busy_timeout).
            # Reads start no transaction at all: each statement sees a consistent snapshot
            # of its own, and the hot read paths skip two round trips through SQLAlchemy.
            if connection.get_execution_options().get(WRITE_OPTION, False):
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **pooling)


class Database:
    """The engine and a session factory; sessions commit on success and roll back on error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A transaction. Pass ``write=False`` for read-only work: on SQLite such
        transactions run beside each other instead of queueing for the write lock."""
        session = (self._write_sessions if write else self._sessions)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
