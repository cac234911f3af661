"""The Twitter connector inside the daemon: status, pause on 402, disable on 401."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from parity import daemon
from parity.settings import load
from tests.channels.twitter.fake_x import CREDENTIALS
from tests.channels.twitter.support import ROOT, until, write_settings


def status_json(settings_file) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **CREDENTIALS}
    env.pop("PARITY_DATABASE_URL", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "parity",
            "--settings",
            str(settings_file),
            "connectors",
            "status",
            "--json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


async def test_status_json_shows_the_rate_limit_budget_and_a_credits_pause(
    db_url, fake, tmp_path, monkeypatch
):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    file = write_settings(
        tmp_path / "settings.toml", db_url, fake, "mentions_poll_seconds = 60\ndm_poll_seconds = 1"
    )
    # The credits run out once the first mentions page was served.
    fake.inject(
        "/dm_events",
        402,
        "errors/402_credits_depleted.json",
        when=lambda _query: any(s.path.endswith("/mentions") for s in fake.seen),
    )
    parity = daemon.Daemon(load(file), only=["twitter"])
    task = asyncio.create_task(parity.run())
    try:
        await until(lambda: "twitter" in parity.supervised)
        twitter = parity.supervised["twitter"].connector
        await until(lambda: twitter.health.details.get("state") == "paused")
        await until(lambda: "mentions" in twitter.health.details["rate_limits"])
        await asyncio.to_thread(parity._write_states)
        status = await asyncio.to_thread(status_json, file)
    finally:
        parity.stop.set()
        await asyncio.wait_for(task, 20)

    [entry] = [s for s in status if s["name"] == "twitter"]
    assert entry["enabled"] is True and entry["disabled_reason"] is None
    [instance] = entry["instances"]
    details = instance["details"]
    mentions_window = details["rate_limits"]["mentions"]
    assert mentions_window["limit"] == 450
    assert mentions_window["remaining"] == 449
    assert mentions_window["reset_at"].endswith("Z")
    assert details["rate_limits"]["dm_events"]["limit"] == 300
    assert details["state"] == "paused"
    assert "credits depleted" in details["reason"]
    assert "does not have any credits" in details["reason"]
    assert details["paused_until"] is not None
    assert "credits" in entry["last_error"]
    assert details["streams"]["dms"]["state"] == "paused"
    assert parity.supervised["twitter"].restarts == 0


async def test_an_auth_failure_disables_the_connector_without_a_restart_loop(
    db_url, fake, tmp_path, monkeypatch
):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # X no longer accepts our token secret (revoked, rotated): every signature fails.
    fake.credentials["TWITTER_ACCESS_TOKEN_SECRET"] = "rotated-elsewhere"
    file = write_settings(tmp_path / "settings.toml", db_url, fake)
    parity = daemon.Daemon(load(file), only=["twitter"])
    task = asyncio.create_task(parity.run())
    try:
        await until(lambda: "twitter" in parity.supervised)
        twitter = parity.supervised["twitter"].connector
        await until(lambda: twitter.health.details.get("state") == "disabled")
        await asyncio.sleep(0.5)  # a request already under way may still come back
        asked = len(fake.seen)
        assert asked <= 3  # at most one per stream and one send
        await asyncio.sleep(2.5)  # more than two poll intervals
        assert len(fake.seen) == asked  # nobody knocks again with the same bad credentials
        entry = parity.supervised["twitter"]
        assert entry.restarts == 0 and entry.running
    finally:
        parity.stop.set()
        await asyncio.wait_for(task, 20)
    assert all(s.status == 401 for s in fake.seen)
    details = twitter.health.details
    assert "authentication failed" in details["reason"]
    assert "TWITTER_CONSUMER_KEY" in details["reason"]
    assert "authentication failed" in (twitter.health.last_error or "")


@pytest.mark.parametrize(
    ("user_id", "unset", "why"),
    [
        ("", (), "user_id is empty"),
        ("@ParityDesk", (), "not a numeric X user id"),
        (
            "1412345678901234567",
            ("TWITTER_CONSUMER_SECRET", "TWITTER_ACCESS_TOKEN"),
            "TWITTER_CONSUMER_SECRET, TWITTER_ACCESS_TOKEN",
        ),
        ("1412345678901234567", (), None),
    ],
)
def test_availability_says_why_the_connector_cannot_run(monkeypatch, user_id, unset, why):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in unset:
        monkeypatch.delenv(name)
    from parity.settings import parse

    settings = parse({"connectors": {"twitter": {"enabled": True, "user_id": user_id}}})
    enabled, reason = daemon.availability(settings, "twitter")
    assert enabled is (why is None)
    if why is not None:
        assert reason is not None and why in reason
    settings = parse({"connectors": {"twitter": {"enabled": False, "user_id": user_id}}})
    assert daemon.availability(settings, "twitter") == (False, "disabled in settings")
