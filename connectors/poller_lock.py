"""One instance per polling connector: a PostgreSQL advisory lock, or a file lock for SQLite.

Two pollers of one account would fetch everything twice (harmless: intake is idempotent) but
also send every acknowledgement twice, which is not. Holding the lock also tells its owner
that any outbox row of its channel still marked "sending" belongs to a process that died.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a connector name."""
    digest = hashlib.sha256(f"parity-poller:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PollerLock:
    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._conn: Connection | None = None
        self._file: IO[bytes] | None = None
        self.held = False

    def _lock_path(self) -> Path | None:
        database = make_url(str(self.engine.url)).database or ""
        if not database or database == ":memory:":
            return None
        return Path(f"{database}.{self.name}.lock")

    def try_acquire(self) -> bool:
        if self.held:
            return True
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect()
            try:
                got = bool(
                    conn.execute(
                        text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.name)}
                    ).scalar()
                )
                conn.commit()  # the lock is the session's, not the transaction's
            except Exception:
                conn.close()
                raise
            if not got:
                conn.close()
                return False
            self._conn = conn
        else:
            path = self._lock_path()
            if path is not None:
                handle = path.open("ab")
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    handle.close()
                    return False
                with contextlib.suppress(OSError):
                    handle.truncate(0)
                    handle.write(f"{os.getpid()}\n".encode())
                    handle.flush()
                self._file = handle
        self.held = True
        return True

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.name)}
                )
                self._conn.commit()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        self.held = False
