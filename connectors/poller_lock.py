"""One instance per polling connector: a PostgreSQL advisory lock, or a file lock for SQLite.

Two pollers of one account would fetch everything twice (harmless: intake is idempotent) but
also send every acknowledgement twice, which is not. Holding the lock also tells its owner
that any outbox row of its channel still marked "sending" belongs to a process that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


class LockLost(RuntimeError):
    """The poller lock's database session ended under us: another instance may poll now."""


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

    def lost(self) -> bool:
        """Whether the lock was ours and no longer is.

        A PostgreSQL advisory lock lives as long as its session. When the server ends that
        session (a network split, keepalives expiring, an operator's pg_terminate_backend),
        a standby takes the lock while this process, unaware, would go on polling and
        sending: two pollers, and every acknowledgement twice. A live session still holds
        its lock (only an unlock or the session's end frees it), so one round trip answers.
        A file lock (SQLite) belongs to this process until it exits, and is never lost.
        """
        if not self.held or self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.rollback()
            return False
        except Exception as exc:
            log.error("poller lock %s: its database session ended: %s", self.name, exc)
            with contextlib.suppress(Exception):
                self._conn.invalidate()
                self._conn.close()
            self._conn = None
            self.held = False
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


async def hold(lock: PollerLock, work: Awaitable[Any], check_seconds: float) -> None:
    """Run `work` (the polling) while `lock` stays ours; check every `check_seconds`.

    When the lock is found lost, the work is cancelled and LockLost raised: the daemon
    restarts the connector, which stands by until it can take the lock again. A lock the
    work released on purpose (a connector disabled by bad credentials frees it for a
    standby) is not "lost": the work goes on, unwatched.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=check_seconds)
            if done:
                break
            if await asyncio.to_thread(lock.lost):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise LockLost(f"lost the {lock.name} poller lock: its database session ended")
        task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
