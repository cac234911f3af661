"""Reddit inside `parity run`, and what `parity connectors status --json` then says."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from inbox.db import make_engine
from inbox.models import Case, Intake, Outbox
from parity import cli, daemon
from parity.settings import SettingsError, load, parse
from tests.channels.reddit.reddit_fake import FakeReddit
from tests.channels.reddit.reddit_support import EVERYTHING, KEYWORDS
from tests.support.helpers import child_settings

REDDIT_ENV = ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_USERNAME", "REDDIT_PASSWORD")


def test_missing_credentials_disable_reddit_with_the_reason(monkeypatch):
    for name in REDDIT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDDIT_USERNAME", "AcmeCloudSupport")
    settings = parse({"connectors": {"reddit": {"enabled": True, "subreddits": ["AcmeCloud"]}}})
    assert daemon.availability(settings, "reddit") == (
        False,
        "missing environment variable(s) REDDIT_CLIENT_ID, REDDIT_CLIENT_SECRET, REDDIT_PASSWORD",
    )
    assert daemon.availability(parse({}), "reddit") == (False, "disabled in settings")


@pytest.mark.parametrize(
    "url", ["http://oauth.reddit.com", "ftp://127.0.0.1", "http://10.0.0.5:8080"]
)
def test_credentials_never_travel_in_plain_http_off_this_machine(url):
    with pytest.raises(SettingsError, match="https"):
        parse({"connectors": {"reddit": {"oauth_url": url}}})


def test_subreddit_names_are_checked():
    settings = parse({"connectors": {"reddit": {"subreddits": ["r/AcmeCloud", "/r/Acme_Help"]}}})
    assert settings.connectors.reddit.subreddits == ["AcmeCloud", "Acme_Help"]
    with pytest.raises(SettingsError, match="not a subreddit name"):
        parse({"connectors": {"reddit": {"subreddits": ["acme/../../api"]}}})


def write_settings(path: Path, db_url: str, fake: FakeReddit) -> Path:
    keywords = ", ".join(json.dumps(k) for k in KEYWORDS)
    path.write_text(
        child_settings(db_url)
        + f"""
[connectors.reddit]
enabled = true
oauth_url = "{fake.url}"
reddit_url = "{fake.url}"
subreddits = ["AcmeCloud"]
keywords = [{keywords}]
initial_lookback_hours = 0
outbox_poll_seconds = 0.2
""",
        encoding="utf-8",
    )
    return path


async def run_until(d: daemon.Daemon, done, within_s: float = 30.0) -> None:
    task = asyncio.create_task(d.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not await asyncio.to_thread(done):
            assert loop.time() < deadline, "the daemon did not get there in time"
            assert not task.done(), task
            await asyncio.sleep(0.2)
    finally:
        d.stop.set()
        await asyncio.wait_for(task, 30)


def status_of(path: Path, capsys) -> dict[str, Any]:
    capsys.readouterr()
    assert cli.main(["--settings", str(path), "connectors", "status", "--json"]) == 0
    return next(c for c in json.loads(capsys.readouterr().out) if c["name"] == "reddit")


async def test_the_daemon_polls_acknowledges_and_shows_the_rate_budget(
    db_url, tmp_path, monkeypatch, capsys
):
    with FakeReddit() as fake:
        for name, value in fake.environ().items():
            monkeypatch.setenv(name, value)
        path = write_settings(tmp_path / "settings.toml", db_url, fake)
        d = daemon.Daemon(load(path), only=["reddit"])
        engine = make_engine(db_url)
        quiet: list[int] = []

        def settled() -> bool:
            # Everything stored and cased, every case's acknowledgement decided and sent,
            # and no request to Reddit for a second.
            with engine.connect() as conn:
                done = conn.execute(
                    select(func.count()).select_from(Intake).where(Intake.state == "done")
                ).scalar_one()
                undecided = conn.execute(
                    select(func.count()).select_from(Case).where(Case.ack_state.is_(None))
                ).scalar_one()
                waiting = conn.execute(
                    select(func.count()).select_from(Outbox).where(Outbox.state != "sent")
                ).scalar_one()
            quiet.append(len(fake.hits))
            return (
                done == len(EVERYTHING)
                and undecided == 0
                and waiting == 0
                and len(quiet) > 5
                and quiet[-1] == quiet[-6]
            )

        await run_until(d, settled)
        engine.dispose()
        status = status_of(path, capsys)

    assert status["enabled"] is True and status["disabled_reason"] is None
    (instance,) = status["instances"]
    assert instance["restarts"] == 0
    details = instance["details"]
    assert details["account"] == "AcmeCloudSupport"
    # The budget as Reddit (the fake) last counted it.
    assert details["rate_limit"]["used"] == fake.used
    assert details["rate_limit"]["remaining"] == fake.budget - fake.used
    assert details["rate_limit"]["too_many_requests"] == 0
    assert set(details["sources"]) == {"inbox", "r/acmecloud/new", "r/acmecloud/comments"}
    assert details["sources"]["inbox"]["checkpoint"]["newest"] == "t4_2kq8v1f"
    assert details["outbox"] == {"sent": len(fake.posted) + len(fake.composed)}
    assert fake.token_requests == 1


async def test_refused_credentials_show_as_disabled_in_status(
    db_url, tmp_path, monkeypatch, capsys
):
    with FakeReddit() as fake:
        for name, value in fake.environ(REDDIT_PASSWORD="not the password").items():
            monkeypatch.setenv(name, value)
        path = write_settings(tmp_path / "settings.toml", db_url, fake)
        d = daemon.Daemon(load(path), only=["reddit"])
        connector = None

        def disabled() -> bool:
            nonlocal connector
            entry = d.supervised.get("reddit")
            connector = entry.connector if entry else None
            return bool(getattr(connector, "disabled_reason", None))

        await run_until(d, disabled)
        await asyncio.sleep(0)
        status = status_of(path, capsys)
        assert fake.token_requests == 1  # asked once, then stopped asking

    assert status["enabled"] is False
    assert "authentication failed: invalid_grant" in status["disabled_reason"]
    assert "restart" in status["disabled_reason"]
    (instance,) = status["instances"]
    assert instance["restarts"] == 0
