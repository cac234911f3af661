"""The poller lock notices when its PostgreSQL session is gone, and the poller stops.

A network split (or keepalives expiring, or an operator's pg_terminate_backend) ends the
session that holds the advisory lock; a standby then takes it. The old holder must stop
polling rather than go on as a second poller. Tested against the real server by ending the
holder's backend from another session, as the server itself would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from connectors.poller_lock import LockLost, PollerLock, hold, lock_key
from inbox.db import make_engine


@pytest.fixture
def pg(pg_database: str) -> Iterator[Engine]:
    engine = make_engine(pg_database)
    yield engine
    engine.dispose()


def end_holder_session(engine: Engine, name: str) -> int:
    """Terminate the backend holding `name`'s advisory lock; its pid."""
    # pg_locks shows a bigint advisory key as two unsigned halves: classid (high), objid (low).
    unsigned = lock_key(name) & 0xFFFF_FFFF_FFFF_FFFF
    with engine.connect() as conn:
        pid = conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND objsubid = 1 AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid)"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF},
        ).scalar_one()
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        conn.commit()
    return int(pid)


def test_a_live_lock_is_not_lost_and_an_ended_session_is(pg: Engine) -> None:
    first, second = PollerLock(pg, "imap:support:INBOX"), PollerLock(pg, "imap:support:INBOX")
    try:
        assert first.try_acquire()
        assert not second.try_acquire()  # one poller at a time
        assert not first.lost()
        assert not first.lost()  # asking twice changes nothing

        end_holder_session(pg, "imap:support:INBOX")

        assert first.lost() and not first.held
        assert not first.lost()  # lost once; no longer ours to lose
        assert second.try_acquire()  # the standby takes over
    finally:
        first.release()
        second.release()


def test_a_file_lock_is_never_lost(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'parity.db'}")
    lock = PollerLock(engine, "reddit")
    try:
        assert lock.try_acquire()
        assert not lock.lost()
        assert not PollerLock(engine, "reddit").try_acquire()
    finally:
        lock.release()
        engine.dispose()


async def test_hold_stops_the_poller_when_its_lock_is_lost(pg: Engine) -> None:
    lock = PollerLock(pg, "twitter")
    assert lock.try_acquire()
    polling = asyncio.Event()
    cancelled = asyncio.Event()

    async def poll_forever() -> None:
        polling.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        watched = asyncio.create_task(hold(lock, poll_forever(), check_seconds=0.05))
        await asyncio.wait_for(polling.wait(), 10)
        await asyncio.to_thread(end_holder_session, pg, "twitter")
        with pytest.raises(LockLost, match="twitter"):
            await asyncio.wait_for(watched, 30)  # a bound on a hang, not a speed test
        assert cancelled.is_set()
        assert PollerLock(pg, "twitter").try_acquire()  # free for the standby
    finally:
        lock.release()


async def test_a_lock_released_on_purpose_is_not_lost(pg: Engine) -> None:
    """A connector disabled by bad credentials frees the lock and waits: not a crash."""
    lock = PollerLock(pg, "reddit")
    assert lock.try_acquire()

    async def disable_then_wait() -> str:
        await asyncio.to_thread(lock.release)
        await asyncio.sleep(0.3)  # several checks happen meanwhile
        return "stopped"

    await asyncio.wait_for(hold(lock, disable_then_wait(), check_seconds=0.05), 30)
    other = PollerLock(pg, "reddit")
    try:
        assert other.try_acquire()
    finally:
        other.release()
