"""A crash made deterministic by the outside world: the database refuses a connector's intake
commit (a lock held by the test) until the test has killed the connector with SIGKILL.
Shared by the connectors' crash tests (Twitter/X, Telegram)."""

from __future__ import annotations

import sqlite3
import time

import psycopg
from sqlalchemy.engine import make_url


class WriteBlocker:
    """Holds the database's write lock on the intake table for as long as the test wants."""

    def __init__(self, db_url: str) -> None:
        self.url = make_url(db_url)
        self.sqlite: sqlite3.Connection | None = None
        self.pg: psycopg.Connection | None = None

    def _pg_dsn(self) -> str:
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def lock(self) -> None:
        if self.url.get_backend_name() == "sqlite":
            self.sqlite = sqlite3.connect(
                self.url.database or "", check_same_thread=False, isolation_level=None
            )
            self.sqlite.execute("BEGIN IMMEDIATE")
        else:
            self.pg = psycopg.connect(self._pg_dsn())
            self.pg.execute("LOCK TABLE intake IN EXCLUSIVE MODE")

    def wait_for_blocked_insert(self, timeout: float = 30.0) -> None:
        """Until the child sits in its intake commit (PostgreSQL shows it waiting)."""
        if self.url.get_backend_name() == "sqlite":
            time.sleep(1.0)  # SQLite cannot show a waiter; the lock holds either way
            return
        deadline = time.monotonic() + timeout
        with psycopg.connect(self._pg_dsn(), autocommit=True) as watcher:
            while time.monotonic() < deadline:
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE 'INSERT INTO intake%'"
                ).fetchone()
                if waiting and waiting[0]:
                    return
                time.sleep(0.05)
        raise AssertionError("the child never reached its intake commit")

    def release(self) -> None:
        if self.sqlite is not None:
            self.sqlite.execute("ROLLBACK")
            self.sqlite.close()
            self.sqlite = None
        if self.pg is not None:
            self.pg.rollback()
            self.pg.close()
            self.pg = None
