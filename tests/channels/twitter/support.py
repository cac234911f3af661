"""Shared pieces of the Twitter tests: the fake X server, settings and a connector pointed at it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from connectors.registry import ConnectorsSettings
from connectors.twitter.auth import credentials
from connectors.twitter.intake import TwitterConnector
from connectors.twitter.settings import TwitterSettings
from inbox.models import Intake, Outbox
from tests.channels.twitter.fake_x import ACCOUNT_ID, CREDENTIALS, FakeX
from tests.support.helpers import child_settings

ROOT = Path(__file__).resolve().parents[3]


def settings_for(fake: FakeX, **overrides: Any) -> TwitterSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "api_base_url": fake.base_url,
        "user_id": ACCOUNT_ID,
        "mentions_poll_seconds": 1,
        "dm_poll_seconds": 1,
    }
    values.update(overrides)
    return TwitterSettings(**values)


def routes(settings: TwitterSettings) -> ConnectorsSettings:
    """[connectors] with this Twitter section: what the worker's ack route is built from."""
    return ConnectorsSettings(twitter=settings)


def connector(engine: Engine, settings: TwitterSettings, **kwargs: Any) -> TwitterConnector:
    creds = credentials(settings, CREDENTIALS)
    assert creds is not None
    kwargs.setdefault("delivery_poll_s", 0.2)
    return TwitterConnector(settings, engine, creds, instance="test", **kwargs)


def intake_keys(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(select(Intake.source_key).where(Intake.channel == "twitter")).scalars()
        )


def intake_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(Intake).where(Intake.channel == "twitter")
            ).scalar_one()
        )


def customer_mentions(fake: FakeX) -> set[str]:
    """What X holds that is a customer's: computed from the fake's world, not from Parity."""
    return {f"tweet:{t['id']}" for t in fake.mentions if t["author_id"] != ACCOUNT_ID}


def customer_dms(fake: FakeX) -> set[str]:
    return {
        f"dm:{e['id']}"
        for e in fake.dm_events
        if e["sender_id"] != ACCOUNT_ID and e.get("event_type") == "MessageCreate"
    }


def write_settings(path: Path, db_url: str, fake: FakeX, extra: str = "") -> Path:
    """A settings.toml for a `parity run --only twitter` child process."""
    path.write_text(
        child_settings(db_url)
        + f"""
[connectors.twitter]
enabled = true
api_base_url = "{fake.base_url}"
user_id = "{ACCOUNT_ID}"
{extra}
""",
        encoding="utf-8",
    )
    return path


def start_daemon(settings_file: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(ROOT)}
    env.pop("PARITY_DATABASE_URL", None)
    handle = log.open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "parity",
            "--settings",
            str(settings_file),
            "run",
            "--only",
            "twitter",
        ],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


async def until(condition: Callable[[], Any], seconds: float = 30.0) -> None:
    """Wait until `condition()` (run in a thread: it may query the database) holds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def send_next(twitter: TwitterConnector) -> tuple[Any, str] | None:
    """One pass of the shared drainer sending at most one due row: that row as stored after
    the attempt and the attempt's outcome, or None when no row was due."""
    report = twitter.delivery.drain_once(max_rows=1)
    if not report.outcomes:
        return None
    [(row_id, outcome)] = report.outcomes.items()
    with twitter.engine.connect() as conn:
        row = conn.execute(select(Outbox).where(Outbox.id == row_id)).one()
    return row, outcome
