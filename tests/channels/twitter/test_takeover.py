"""Two `parity run --only twitter` instances on one store: one polls, the other stands by.

The active one is killed with SIGKILL; the standby takes the poller lock within its
`standby_retry_seconds` and goes on, with every mention stored once and no reply doubled.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from inbox.models import ConnectorState, Intake, Message, Outbox
from tests.channels.twitter.fake_x import backlog
from tests.channels.twitter.support import (
    customer_mentions,
    intake_keys,
    start_daemon,
    until,
    write_settings,
)

# The dead instance's normalizer may hold leased, unfiled input: a short lease (the default
# is 120 s) lets the survivor file it within the test's wait.
FAST = (
    "mentions_poll_seconds = 1\ndm_poll_seconds = 3600\nstandby_retry_seconds = 1\n"
    "[normalizer]\nlease_seconds = 5"
)


def _outbox(engine: Any) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(Outbox.state).where(Outbox.channel == "twitter")).scalars())


def _sent(engine: Any) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(Outbox)
                .where(Outbox.channel == "twitter", Outbox.state == "sent")
            ).scalar_one()
        )


def _pending(engine: Any) -> int:
    """Stored input the normalizer has not filed yet."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(Intake).where(Intake.state == "pending")
            ).scalar_one()
        )


def _roles(engine: Any, pids: set[int]) -> dict[str, int]:
    """The state each live child reports ("running" or "standby"), by its pid."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(ConnectorState.instance, ConnectorState.details).where(
                ConnectorState.connector == "twitter"
            )
        ).all()
    roles: dict[str, int] = {}
    for instance, details in rows:
        pid = int(instance.rsplit(":", 1)[1])
        if pid in pids:
            roles[(details or {}).get("state", "")] = pid
    return roles


async def test_the_standby_takes_over_after_a_sigkill_nothing_lost_or_doubled(
    db_url, engine, fake, tmp_path: Path
):
    fake.mentions, fake.dm_events = [], []
    backlog(fake, 30)
    settings = write_settings(tmp_path / "settings.toml", db_url, fake, FAST)
    children = [start_daemon(settings, tmp_path / f"child{i}.log") for i in range(2)]
    pids = {c.pid for c in children}

    def logs() -> str:
        return "\n".join(p.read_text() for p in sorted(tmp_path.glob("child*.log")))

    step = "first backlog stored"
    try:
        await until(lambda: set(intake_keys(engine)) == customer_mentions(fake), seconds=60)
        step = "one running, one standby"
        await until(lambda: {"running", "standby"} <= set(_roles(engine, pids)), seconds=30)
        active = _roles(engine, pids)["running"]
        [killed] = [c for c in children if c.pid == active]
        killed.kill()  # SIGKILL: no release, no goodbye; the store frees its lock
        await asyncio.to_thread(killed.wait, 30)
        # New mentions arrive while only the standby is left.
        step = "second backlog stored"
        backlog(fake, 20, start=datetime(2026, 11, 20, 6, 0, tzinfo=UTC))
        await until(lambda: set(intake_keys(engine)) == customer_mentions(fake), seconds=60)
        step = "survivor running"
        survivor = ({c.pid for c in children} - {active}).pop()
        await until(lambda: _roles(engine, {survivor}).get("running") == survivor, seconds=30)
        # Acknowledgements finish going out from the survivor.
        # Every input filed first: the outbox can drain while later mentions still wait for
        # the normalizer (a run saw 40 of 50 filed), and those would queue more replies.
        step = "everything normalized"
        await until(lambda: _pending(engine) == 0, seconds=60)
        step = "the outbox drained"
        await until(lambda: _outbox(engine) and not _outbox(engine) & {"queued", "sending"})
    except AssertionError as exc:
        raise AssertionError(f"{step}: {exc}\n{logs()}") from exc
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            await asyncio.to_thread(child.wait, 30)

    keys = intake_keys(engine)
    assert len(keys) == len(set(keys)) == len(customer_mentions(fake)) == 50
    with engine.connect() as conn:
        messages = conn.execute(
            select(func.count())
            .select_from(Message)
            .where(Message.channel == "twitter", Message.direction == "inbound")
        ).scalar_one()
    assert messages == 50
    replies = Counter(
        ref["id"]
        for tweet in fake.posted_tweets
        for ref in tweet.get("referenced_tweets", [])
        if ref["type"] == "replied_to"
    )
    assert replies and max(replies.values()) == 1, replies  # no mention answered twice
    # Every acknowledgement the outbox says went out reached X exactly once.
    assert len(fake.posted_tweets) == _sent(engine)
