"""Real crashes: `parity run --only twitter` killed with SIGKILL, then a restart.

The crash points are made deterministic by the outside world, never by patching Parity:
the database refuses the commit for a while (a lock held by the test), or the fake X server
takes a tweet and never answers.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select

from inbox.models import Outbox, OutboxAttempt
from normalizer.intake import load_checkpoint
from tests.channels.twitter.fake_x import ACCOUNT_ID, backlog
from tests.channels.twitter.support import (
    connector,
    customer_mentions,
    intake_count,
    intake_keys,
    settings_for,
    start_daemon,
    until,
    write_settings,
)
from tests.support.crash import WriteBlocker

QUIET = "mentions_poll_seconds = 3600\ndm_poll_seconds = 3600"


async def test_a_crash_between_fetch_and_commit_fetches_again_and_never_doubles(
    db_url, engine, fake, tmp_path: Path
):
    fake.mentions, fake.dm_events = [], []
    backlog(fake, 250)  # three pages
    blocker = WriteBlocker(db_url)
    locked = threading.Event()

    def before_page(query: dict[str, str]) -> None:
        # Page one is committed by now (pages are read one after the other). From page two
        # on, the database refuses the commit until the child has been killed.
        if query.get("pagination_token") and not locked.is_set():
            blocker.lock()
            locked.set()

    fake.before.append(("/mentions", before_page))
    child = start_daemon(
        write_settings(tmp_path / "settings.toml", db_url, fake, QUIET), tmp_path / "child.log"
    )
    try:
        assert await asyncio.to_thread(locked.wait, 60), (tmp_path / "child.log").read_text()
        await until(
            lambda: any(s.query.get("pagination_token") for s in fake.requests("/mentions"))
        )
        await asyncio.to_thread(blocker.wait_for_blocked_insert)
        child.kill()  # SIGKILL: page two was fetched, its commit never happened
        await asyncio.to_thread(child.wait, 30)
    finally:
        if child.poll() is None:
            child.kill()
        await asyncio.to_thread(blocker.release)

    assert intake_count(engine) == 100
    saved = load_checkpoint(engine, "twitter", f"mentions:{ACCOUNT_ID}")
    assert saved is not None
    page_two = saved["round"]["next_token"]

    # The restart reads page two again (same token), and the whole backlog is there once.
    await connector(engine, settings_for(fake)).poll_mentions(asyncio.Event())
    fetched = [s for s in fake.requests("/mentions") if s.query.get("pagination_token") == page_two]
    assert len(fetched) == 2
    keys = intake_keys(engine)
    assert len(keys) == len(set(keys)) == 250
    assert set(keys) == customer_mentions(fake)


async def test_a_process_killed_while_sending_leaves_the_row_unknown_until_found_at_x(
    db_url, engine, fake, tmp_path: Path
):
    fake.mentions = [t for t in fake.mentions if t["id"] == "2123706672739255506"]
    fake.dm_events = []
    fake.hold_posts = True  # X creates the tweet; the answer never leaves
    child = start_daemon(
        write_settings(tmp_path / "settings.toml", db_url, fake, QUIET), tmp_path / "child.log"
    )
    try:
        assert await asyncio.to_thread(fake.post_received.wait, 60), (
            tmp_path / "child.log"
        ).read_text()
        child.kill()
        await asyncio.to_thread(child.wait, 30)
    finally:
        if child.poll() is None:
            child.kill()
    [row] = _outbox(engine)
    assert row.state == "sending"
    assert len(fake.posted_tweets) == 1
    fake.hold_posts = False

    restarted = connector(
        engine,
        settings_for(fake, mentions_poll_seconds=3600, dm_poll_seconds=3600),
        lock_retry_s=0.2,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(restarted.run(stop))
    try:
        await until(lambda: _outbox(engine)[0].state == "sent", seconds=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    [row] = _outbox(engine)
    assert row.provider_id == fake.posted_tweets[0]["id"]
    assert len(fake.posted_tweets) == 1  # found, not posted twice
    with engine.connect() as conn:
        outcomes = list(
            conn.execute(
                select(OutboxAttempt.outcome)
                .where(OutboxAttempt.outbox_id == row.id)
                .order_by(OutboxAttempt.id)
            ).scalars()
        )
    assert outcomes == ["unknown", "sent"]


def _outbox(engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Outbox).order_by(Outbox.id)))
