"""Engines and transactions for SQLite (the embedded default) and PostgreSQL.

SQLite runs in WAL mode with full sync, so a commit is durable when it returns, and every
write transaction starts with BEGIN IMMEDIATE: a deferred transaction that upgrades to a
write lock can fail with "database is locked" after doing its work, which would turn a
brief wait into a lost retry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.dml import Insert

from inbox.secrets import Secret


class StorageUnavailable(Exception):
    """The store refused a write for now (locked, read-only, gone): the source should retry."""


# [database] sqlite_cache_mb's default (SQLite's own), for engines made without settings.
SQLITE_CACHE_MB = 2


def make_engine(
    url: str | Secret,
    *,
    busy_timeout_ms: int = 5000,
    keepalive_s: int = 30,
    pool_size: int = 5,
    sqlite_cache_mb: int = SQLITE_CACHE_MB,
) -> Engine:
    raw = url.reveal() if isinstance(url, Secret) else url
    parsed = make_url(raw)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=10,
        )
        _sqlite_pragmas(engine, busy_timeout_ms, sqlite_cache_mb)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # libpq keepalives: a host that vanished releases its advisory locks in about
        # keepalive_s * 2 seconds instead of the kernel's two hours.
        connect_args: dict[str, Any] = {
            "keepalives": 1,
            "keepalives_idle": keepalive_s,
            "keepalives_interval": max(1, keepalive_s // 3),
            "keepalives_count": 3,
            "connect_timeout": 10,
            "application_name": f"parity-{os.getpid()}",
            # The advisory lock lives in the server's backend: only the server's own
            # keepalives notice that a poller's host vanished and end that backend (and
            # its lock). Client keepalives above only let us notice a vanished server.
            "options": (
                f"-c tcp_keepalives_idle={keepalive_s} "
                f"-c tcp_keepalives_interval={max(1, keepalive_s // 3)} "
                "-c tcp_keepalives_count=3"
            ),
        }
        return create_engine(
            parsed,
            connect_args=connect_args,
            pool_size=pool_size,
            max_overflow=10,
            pool_pre_ping=True,
        )
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def _sqlite_pragmas(engine: Engine, busy_timeout_ms: int, cache_mb: int) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see module doc).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # Negative: KiB rather than pages ([database] sqlite_cache_mb).
        cursor.execute(f"PRAGMA cache_size=-{int(cache_mb) * 1024}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")  # a WAL reader: a snapshot that blocks no writer
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


# Execution option of connections that only read (see `read`).
_READ_ONLY = "parity_read_only"


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A connection for reading only.

    On SQLite every other transaction begins IMMEDIATE and so holds the write lock; a
    listing of the queue done that way would make intake wait behind it (and answer 451
    after the busy timeout). A read transaction begins deferred instead, and WAL lets it
    run beside the writer. On PostgreSQL this is a plain connection.
    """
    with engine.connect() as conn:
        conn.execution_options(**{_READ_ONLY: True})
        yield conn


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def insert_ignore(conn: Connection, table: Any, index: Sequence[str]) -> Insert:
    # `table` is a Table or a mapped class; both dialects' insert() accept either.
    """INSERT ... ON CONFLICT (index) DO NOTHING, for either dialect."""
    if is_sqlite(conn):
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(index))
    return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(index))


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction; storage refusals surface as StorageUnavailable."""
    try:
        with engine.begin() as conn:
            yield conn
    except OperationalError as exc:
        raise StorageUnavailable(str(exc.orig)) from exc
    except DBAPIError as exc:
        if _is_refusal(exc):
            raise StorageUnavailable(str(exc.orig)) from exc
        raise


def _is_refusal(exc: DBAPIError) -> bool:
    # PostgreSQL: insufficient privilege, read-only transaction, admin shutdown, cannot connect.
    code = getattr(exc.orig, "sqlstate", None) or ""
    return code in {"42501", "25006", "57P01", "57P02", "57P03", "08006", "08001", "08003"}


def lock_for_threading(conn: Connection) -> None:
    """Serialise the case-assignment step across processes.

    Two messages from one person normalised at once by two workers must not both open a
    new case. SQLite already serialises writers (BEGIN IMMEDIATE); PostgreSQL takes a
    transaction-scoped advisory lock.
    """
    if not is_sqlite(conn):
        conn.execute(text("SELECT pg_advisory_xact_lock(7365012001)"))
