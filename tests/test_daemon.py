"""`parity run`: signals, --only, restarts with backoff, disabled connectors, the HTTP listener,
and `parity connectors status --json`, with real processes, sockets and both databases."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from inbox.db import make_engine
from inbox.models import ConnectorState, Intake
from inbox.web.routes import ROUTES
from parity.cli import connector_status
from parity.daemon import Daemon, availability, restart_delay
from parity.settings import Settings, parse
from tests.support.helpers import ingest
from tests.support.smtp_support import (
    DOMAINS,
    REPO,
    STOP_WITHIN_S,
    DaemonThread,
    ParityProcess,
    daemon_settings,
    free_port,
    port_open,
    running,
    wait_for,
)

MAIL = (
    b"From: Ann Example <ann@example.org>\r\n"
    b"To: help@support.example.com\r\n"
    b"Subject: Locked out\r\n"
    b"Message-ID: <daemon-1@example.org>\r\n"
    b"\r\n"
    b"I cannot log in.\r\n"
)


def settings_for(db_url: str, **sections: dict[str, Any]) -> Settings:
    connectors: dict[str, Any] = {
        "smtp": {"port": free_port(), "support_domains": DOMAINS},
        "web": {"port": free_port()},
    }
    for name, values in sections.items():
        connectors.setdefault(name, {}).update(values)
    return parse(
        {
            "database": {"url": db_url, "url_env": "PARITY_TEST_NO_SUCH_VARIABLE"},
            "connectors": connectors,
        }
    )


def send(port: int, raw: bytes = MAIL) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        assert not client.sendmail("ann@example.org", ["help@support.example.com"], raw)


def states(db_url: str) -> dict[str, Any]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            # Connectors only: the normalizer's heartbeat rows (parity/workers.py) are not one.
            return {
                r.connector: r
                for r in conn.execute(
                    select(ConnectorState).where(ConnectorState.connector != "normalizer")
                )
            }
    finally:
        engine.dispose()


def status(db_url: str, settings: Settings) -> dict[str, dict[str, Any]]:
    engine = make_engine(db_url)
    try:
        return {s["name"]: s for s in connector_status(settings, engine)}
    finally:
        engine.dispose()


def cli(settings_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "parity", "--settings", str(settings_path), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- pure rules, as tables -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("crashes", "first", "cap", "delay"),
    [
        (1, 1.0, 60.0, 1.0),
        (2, 1.0, 60.0, 2.0),
        (3, 1.0, 60.0, 4.0),
        (6, 1.0, 60.0, 32.0),
        (7, 1.0, 60.0, 60.0),  # 64 is over the cap
        (50, 1.0, 60.0, 60.0),  # and stays there, with no overflow
        (1, 0.05, 0.2, 0.05),
        (4, 0.05, 0.2, 0.2),
    ],
)
def test_restart_delay_doubles_up_to_the_cap(crashes, first, cap, delay):
    assert restart_delay(crashes, first, cap) == pytest.approx(delay)


SECRET = "tw-bearer-value-never-shown"


@pytest.mark.parametrize(
    ("name", "section", "environ", "reason"),
    [
        ("smtp", {}, {}, None),
        ("web", {}, {}, None),
        ("smtp", {"enabled": False}, {}, "disabled in settings"),
        ("imap", {}, {}, "disabled in settings"),  # off by default
        ("imap", {"enabled": True}, {}, "connectors.imap.accounts"),
        (
            "imap",
            {
                "enabled": True,
                "accounts": [
                    {"name": "a", "host": "h", "username": "u", "password_env": "IMAP_A_PW"}
                ],
            },
            {},
            "environment variable not set: IMAP_A_PW",
        ),
        (
            "twilio",
            {"enabled": True, "public_url": "https://x.example"},
            {"TWILIO_ACCOUNT_SID": "AC1"},
            "missing environment variable TWILIO_AUTH_TOKEN",
        ),
        ("twilio", {"enabled": True}, {}, "missing setting connectors.twilio.public_url"),
        (
            "twitter",
            {"enabled": True, "user_id": "42"},
            {"TWITTER_BEARER_TOKEN": SECRET},
            "TWITTER_CONSUMER_KEY, TWITTER_CONSUMER_SECRET, "
            "TWITTER_ACCESS_TOKEN, TWITTER_ACCESS_TOKEN_SECRET",
        ),
        ("reddit", {"enabled": True}, {}, "REDDIT_CLIENT_ID"),
        (
            "twilio",
            {"enabled": True, "public_url": "https://x.example"},
            {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "tok1"},
            None,  # configured: it runs (issue 8)
        ),
    ],
)
def test_availability_names_what_is_missing_and_never_a_value(name, section, environ, reason):
    settings = parse({"connectors": {name: section}})
    ok, why = availability(settings, name, environ)
    if reason is None:
        assert (ok, why) == (True, None)
    else:
        assert not ok and why is not None and reason in why, why
        assert SECRET not in why


# --- signals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_stops_cleanly_on_a_signal(db_url, tmp_path, sig):
    settings, smtp_port, web_port = daemon_settings(tmp_path, db_url)
    parity = ParityProcess.run(settings, log_path=tmp_path / "parity.log")
    with running(parity):
        parity.wait_for_port(smtp_port)
        parity.wait_for_port(web_port)
        code, health = healthz(web_port)
        assert code == 200
        assert {k: health[k] for k in ("status", "connectors")} == {
            "status": "ok",
            "connectors": {"smtp": True, "web": True},
        }
        # The manager audit's field: no cases yet, so no ratio and no breach.
        assert health["parity"]["breach"] is False and health["parity"]["ratio"] is None
        send(smtp_port)
        wait_for(lambda: {"smtp", "web"} <= set(states(db_url)), message="heartbeat")
        assert all(r.running for r in states(db_url).values())
        parity.signal(sig)
        assert parity.wait(timeout=STOP_WITHIN_S) == 0, parity.log()
    assert "Traceback" not in parity.log()
    assert {n: r.running for n, r in states(db_url).items()} == {"smtp": False, "web": False}
    assert not port_open(smtp_port) and not port_open(web_port)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert len(conn.execute(select(Intake.id)).all()) == 1
    finally:
        engine.dispose()


# --- --only, disabled connectors, status -----------------------------------------------------


def test_only_runs_what_is_named_and_missing_credentials_disable_without_stopping_smtp(
    db_url, tmp_path
):
    settings, smtp_port, web_port = daemon_settings(
        tmp_path,
        db_url,
        extra={
            "connectors.imap": {"enabled": True},
            "connectors.twilio": {"enabled": True, "public_url": "https://parity.example"},
            "connectors.twitter": {"enabled": True, "user_id": "42"},
            "connectors.reddit": {"enabled": True, "subreddits": ["ourproduct"]},
        },
    )
    env = {"TWITTER_BEARER_TOKEN": SECRET, "TWILIO_AUTH_TOKEN": "", "TWILIO_ACCOUNT_SID": ""}
    argv = [sys.executable, "-m", "parity", "--settings", str(settings), "run", "--only"]
    argv += ["smtp", "imap", "twilio", "twitter", "reddit"]
    parity = ParityProcess(argv, tmp_path / "parity.log", env=env)
    with running(parity):
        parity.wait_for_port(smtp_port)
        send(smtp_port)
        # The success shows at the next heartbeat (every 5 s).
        wait_for(
            lambda: "smtp" in (st := states(db_url)) and st["smtp"].last_success_at,
            timeout=15,
            message="heartbeat after the mail",
        )
        # web is enabled in settings but not named, and nothing named needs HTTP.
        assert not port_open(web_port)
        result = cli(settings, "connectors", "status", "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + parity.log()
        listed = {s["name"]: s for s in json.loads(result.stdout)}
        assert list(listed) == [
            "smtp",
            "imap",
            "twilio",
            "twitter",
            "reddit",
            "meta",
            "telegram",
            "webform",
            "web",
        ]
        for entry in listed.values():
            assert set(entry) >= {
                "name",
                "enabled",
                "disabled_reason",
                "running",
                "last_success_at",
                "backlog",
                "last_error",
            }
        smtp = listed["smtp"]
        assert (smtp["enabled"], smtp["running"], smtp["disabled_reason"]) == (True, True, None)
        assert smtp["last_success_at"] is not None and smtp["last_error"] is None
        assert listed["web"]["enabled"] is True and listed["web"]["running"] is False
        reasons = {n: listed[n]["disabled_reason"] for n in ("imap", "twilio", "twitter", "reddit")}
        assert "connectors.imap.accounts" in reasons["imap"]
        assert "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN" in reasons["twilio"]
        assert "TWITTER_CONSUMER_KEY" in reasons["twitter"]
        assert "TWITTER_BEARER_TOKEN" not in reasons["twitter"]  # that one is set
        assert "REDDIT_CLIENT_ID" in reasons["reddit"]
        assert all(not listed[n]["enabled"] and not listed[n]["running"] for n in reasons)
        # The healthcheck command of the compose file: 0 for a running connector, else 1.
        assert cli(settings, "connectors", "check", "smtp").returncode == 0
        failed = cli(settings, "connectors", "check", "smtp", "web", env=env)
        assert failed.returncode == 1 and "web: not running" in failed.stderr
        parity.signal(signal.SIGTERM)
        assert parity.wait() == 0
    assert set(states(db_url)) == {"smtp"}
    log = parity.log()
    assert "not running: imap: no accounts" in log and "reddit: missing" in log


def test_only_naming_nothing_runnable_exits_78_and_says_why(db_url, tmp_path):
    settings, _, _ = daemon_settings(tmp_path, db_url, extra={"connectors.imap": {"enabled": True}})
    parity = ParityProcess.run(settings, "--only", "imap", log_path=tmp_path / "parity.log")
    assert parity.wait(timeout=60) == 78
    assert "nothing to run: imap: no accounts" in parity.log()


def test_status_reports_backlog_last_success_and_a_stopped_instance(db_url):
    settings = settings_for(db_url, web={"enabled": False})
    smtp_port = settings.connectors.smtp.port
    with DaemonThread(Daemon(settings, heartbeat_s=0.2)) as run:
        wait_for(lambda: port_open(smtp_port), message="smtp listening")
        send(smtp_port)
        wait_for(lambda: status(db_url, settings)["smtp"]["last_success_at"], message="success")
        assert status(db_url, settings)["smtp"]["running"] is True
        # The worker normalizes the mail once intake has been quiet for a moment.
        wait_for(lambda: status(db_url, settings)["smtp"]["backlog"] == 0, message="normalized")
        assert run.stop() == 0
    engine = make_engine(db_url)
    try:
        for n in range(3):  # stored by a connector but not yet normalized: the backlog
            ingest(engine, MAIL + b"%d\r\n" % n, connector="smtp")
    finally:
        engine.dispose()
    smtp = status(db_url, settings)["smtp"]
    assert (smtp["running"], smtp["backlog"], smtp["last_error"]) == (False, 3, None)
    assert smtp["last_success_at"] is not None
    (instance,) = smtp["instances"]
    assert instance["details"]["listening"] == f"127.0.0.1:{smtp_port}"


# --- the HTTP listener -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "listener"),
    [
        ({}, True),  # web is enabled by default
        ({"web": {"enabled": False}}, False),
        # Twilio needs the listener, but cannot run without its public URL: still none.
        ({"web": {"enabled": False}, "twilio": {"enabled": True}}, False),
        # Configured Twilio brings the listener up even with the inbox switched off.
        (
            {
                "web": {"enabled": False},
                "twilio": {
                    "enabled": True,
                    "public_url": "https://support.example.com",
                    "from_number": "+14155550100",
                },
            },
            True,
        ),
    ],
)
def test_the_http_listener_runs_only_for_a_connector_that_needs_it(
    db_url, sections, listener, monkeypatch
):
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC0123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token-0123")
    settings = settings_for(db_url, **sections)
    daemon = Daemon(settings)
    try:
        daemon.build()
        assert ("web" in daemon.supervised) is listener
        assert "smtp" in daemon.supervised
        if listener and "public_url" in sections.get("twilio", {}):
            routes = daemon.supervised["web"].connector.app[ROUTES]  # type: ignore[attr-defined]
            assert ("POST", "/twilio/voice/menu") in routes
            assert routes[("POST", "/twilio/sms")].auth == "signature"
            assert {"outbox-sms", "outbox-voice", "twilio"} <= set(daemon.supervised)
    finally:
        daemon.engine.dispose()


# --- a crashing connector ------------------------------------------------------------------------


def test_a_crashing_connector_is_restarted_with_capped_backoff_and_the_others_run_on(db_url):
    settings = settings_for(db_url)
    smtp_port, web_port = settings.connectors.smtp.port, settings.connectors.web.port
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", smtp_port))
    blocker.listen()  # the SMTP port is taken: every start of the connector fails
    daemon = Daemon(settings, restart_first_s=0.05, restart_cap_s=0.2, heartbeat_s=0.2)
    try:
        with DaemonThread(daemon):
            entry = wait_for(lambda: daemon.supervised.get("smtp"), message="built")
            wait_for(lambda: entry.restarts >= 6, message="restarts")
            # Doubling from 0.05 s reaches the 0.2 s cap by the third wait, and stays there.
            assert entry.extra["next_restart_in_s"] <= 0.2 * 1.2
            wait_for(lambda: port_open(web_port), message="web listening")
            code, body = healthz(web_port)
            assert (code, body["status"], body["connectors"]) == (
                503,
                "degraded",
                {"smtp": False, "web": True},
            )

            def smtp_status() -> dict[str, Any] | None:
                smtp = status(db_url, settings)["smtp"]
                return smtp if smtp["restarts"] >= 6 else None

            smtp = wait_for(smtp_status, message="status shows the restarts")
            assert smtp["running"] is False
            assert re.search(r"crashed: OSError: .*address already in use", smtp["last_error"])
            assert status(db_url, settings)["web"]["running"] is True
            # The port comes free: the next restart serves mail.
            blocker.close()
            wait_for(lambda: entry.running and port_open(smtp_port), message="smtp restarted")
            send(smtp_port)
            restarts = entry.restarts
            assert healthz(web_port)[0] == 200
        assert status(db_url, settings)["smtp"]["instances"][0]["restarts"] == restarts >= 6
    finally:
        blocker.close()


# --- the first-run hint (issue 7) ----------------------------------------------------------------


def test_run_prints_the_inbox_url_and_how_to_make_the_first_user(db_url):
    from tests.support.inbox_helpers import make_user

    settings = settings_for(db_url)
    daemon = Daemon(settings)
    try:
        daemon.build()
        port = settings.connectors.web.port
        hint = daemon.web_hint()
        assert hint[0].startswith(f"Agent inbox: http://{settings.connectors.web.host}:{port}/")
        assert "parity users add NAME --role admin" in hint[1]
        make_user(daemon.engine, "root", "admin")
        assert len(daemon.web_hint()) == 1  # once a user exists, only the URL
    finally:
        daemon.engine.dispose()
    no_web = Daemon(settings_for(db_url, web={"enabled": False}))
    try:
        no_web.build()
        assert no_web.web_hint() == []
    finally:
        no_web.engine.dispose()


# --- the start-up banner: said once the ports are bound (issue 24) -------------------------------


def _banner(process: ParityProcess) -> str:
    process.wait_for_log("Parity: ", timeout=60)
    return next(line for line in process.log().splitlines() if line.startswith("Parity: "))


def test_the_banner_comes_after_the_ports_are_bound_and_its_hint_runs(tmp_path, sqlite_template):
    db = tmp_path / "parity.db"
    shutil.copy(sqlite_template, db)
    settings, smtp_port, web_port = daemon_settings(tmp_path, f"sqlite:///{db}")
    process = ParityProcess.run(settings, log_path=tmp_path / "run.log")
    try:
        banner = _banner(process)
        # Said only once bound: both ports answer at the moment the line is there.
        assert port_open(smtp_port) and port_open(web_port)
        assert f"SMTP on 127.0.0.1:{smtp_port}" in banner and "not running" not in banner
        process.wait_for_log("Create the first one with: ")
        hint = re.search(r"Create the first one with: (\S+) users add NAME", process.log())
        assert hint, process.log()
        command = hint.group(1)
        # The hint is a command that exists from where `parity run` was started.
        found = shutil.which(command) or (REPO / command if (REPO / command).exists() else None)
        assert found and os.access(found, os.X_OK), command
    finally:
        process.kill()


def test_a_taken_port_is_not_announced_as_served(tmp_path, sqlite_template):
    db = tmp_path / "parity.db"
    shutil.copy(sqlite_template, db)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    settings, _smtp, web_port = daemon_settings(tmp_path, f"sqlite:///{db}", smtp_port=taken)
    process = ParityProcess.run(settings, log_path=tmp_path / "run.log")
    try:
        banner = _banner(process)
        assert "SMTP on" not in banner, banner
        assert re.search(r"not running: smtp: crashed: OSError: .*address already in use", banner)
        assert f"web on http://127.0.0.1:{web_port}/" in banner and port_open(web_port)
    finally:
        process.kill()
        blocker.close()
