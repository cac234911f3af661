"""The IMAP connector against a real Dovecot: drain, store before archive, never lose or double.

Store-touching tests run on SQLite and PostgreSQL (the `engine` and `db_url` fixtures).
Expected figures come from the test's own view of the mailbox (its own IMAP session and the
messages it appended), never from the connector's reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, func, select

from connectors.imap.intake import (
    ImapConnector,
    backoff_delay,
    idle_outcome,
    is_credential_failure,
    quota_status,
    received_time,
    server_path,
    server_text,
    size_batches,
    source_key,
    split_by_checkpoint,
)
from connectors.imap.settings import ImapAccount, ImapSettings
from connectors.registry import ConnectorsSettings, parser_table
from connectors.smtp.server import SmtpConnector
from connectors.smtp.settings import SmtpSettings
from inbox import queries
from inbox.config import DatabaseSettings, StoreSettings
from inbox.models import Blob, Checkpoint, DeadLetter, Intake, Message, Receipt
from normalizer.intake import CheckpointUpdate, IntakeWriter, RawInput, load_checkpoint, store
from normalizer.worker import Normalizer
from parity.cli import connector_status
from parity.daemon import Daemon, availability
from parity.settings import Settings, parse
from tests.support.dns_server import test_mail_auth
from tests.support.dovecot import (
    CAPABILITIES_WITHOUT_MOVE,
    Certificates,
    Dovecot,
    Mailbox,
    TokenEndpoint,
    make_certificates,
    make_mail,
)
from tests.support.helpers import normalize
from tests.support.smtp_support import STOP_WITHIN_S

ARCHIVE = "Parity.Archived"  # "Parity/Archived" in settings, spelled with Dovecot's "."
SUPPORT = "help@support.example.com"
ROOT = Path(__file__).resolve().parents[3]


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def tokens() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
def dovecot(certs: Certificates, tokens: TokenEndpoint) -> Iterator[Dovecot]:
    server = Dovecot(certs, tokens)
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def dovecot_without_move(certs: Certificates, tokens: TokenEndpoint) -> Iterator[Dovecot]:
    server = Dovecot(certs, tokens, capabilities=CAPABILITIES_WITHOUT_MOVE)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def own_dovecot(certs: Certificates, tokens: TokenEndpoint) -> Iterator[Dovecot]:
    """A server of this test's own, for tests that restart it."""
    server = Dovecot(certs, tokens)
    server.start()
    yield server
    server.remove()


# --- helpers ---------------------------------------------------------------------------------


def account(
    mailbox: Mailbox, name: str = "support", env: str = "PARITY_TEST_IMAP", **changes: Any
) -> ImapAccount:
    values: dict[str, Any] = {
        "name": name,
        "host": "127.0.0.1",
        "port": mailbox.server.imap_port,
        "tls": "none",
        "username": mailbox.user,
        "password_env": env,
        "address": SUPPORT,
    }
    values.update(changes)
    return ImapAccount(**values)


def imap_settings(*accounts: ImapAccount, **changes: Any) -> ImapSettings:
    return ImapSettings(enabled=True, accounts=list(accounts), **changes)


async def drive(
    connector: ImapConnector,
    done: Callable[[], bool],
    *,
    within: float = 60.0,
    during: Callable[[], Any] | None = None,
) -> None:
    """Run the connector until `done()` holds; fail with its status if it never does."""
    stop = asyncio.Event()
    task = asyncio.create_task(connector.run(stop))
    deadline = time.monotonic() + within
    try:
        while not done():
            if task.done():
                task.result()
                pytest.fail("the connector returned without being stopped")
            if time.monotonic() > deadline:
                pytest.fail(f"not done after {within} s: {json.dumps(connector.health.details)}")
            if during is not None:
                await during()
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def drained(connector: ImapConnector, *names: str) -> Callable[[], bool]:
    """True once every named account (all by default) finished a round with nothing left."""

    def check() -> bool:
        accounts = connector.health.details["accounts"]
        return all(
            all(
                f["backlog"] == 0 and f["last_round_at"] is not None
                for f in accounts[name]["folders"].values()
            )
            for name in (names or accounts)
        )

    return check


_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


def stored_message_ids(engine: Engine, connector: str = "imap") -> list[str]:
    """The Message-ID of every intake row of `connector`, one entry per row."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Blob.data)
            .join(Intake, Intake.raw_sha256 == Blob.sha256)
            .where(Intake.connector == connector)
        ).scalars()
        found = []
        for raw in rows:
            match = _MESSAGE_ID.search(raw)
            found.append(match.group(1).decode() if match else "")
        return found


def count(engine: Engine, model: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def expected_ids(messages: list[bytes]) -> list[str]:
    found = []
    for raw in messages:
        match = _MESSAGE_ID.search(raw)
        assert match is not None
        found.append(match.group(1).decode())
    return found


def seen_flags(mailbox: Mailbox, folder: str) -> int:
    with mailbox.session() as client:
        client.select_folder(folder, readonly=True)
        return len(client.search(["SEEN"]))


# --- pure pieces, by tables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("found", "last", "above", "below"),
    [
        ([], 0, [], []),
        ([1, 2, 3], 0, [1, 2, 3], []),
        # `UID 11:*` on a folder whose newest UID is 10 still answers 10.
        ([10], 10, [], [10]),
        ([7], 10, [], [7]),
        ([12, 11, 11, 13], 10, [11, 12, 13], []),
        ([3, 15, 9], 9, [15], [3, 9]),
    ],
)
def test_split_by_checkpoint(found, last, above, below):
    assert split_by_checkpoint(found, last) == (above, below)


@pytest.mark.parametrize(
    ("sizes", "max_count", "max_bytes", "batches"),
    [
        ([], 10, 100, []),
        ([(1, 10), (2, 10), (3, 10)], 2, 1000, [[1, 2], [3]]),
        ([(1, 60), (2, 60), (3, 10)], 10, 100, [[1], [2, 3]]),
        # One message over the byte cap still gets fetched, alone.
        ([(1, 10), (2, 500), (3, 10)], 10, 100, [[1], [2], [3]]),
        ([(5, 1)] * 1, 1, 1, [[5]]),
    ],
)
def test_size_batches(sizes, max_count, max_bytes, batches):
    assert size_batches(sizes, max_count, max_bytes) == batches


@pytest.mark.parametrize(
    ("path", "delimiter", "wire"),
    [
        ("Parity/Archived", ".", "Parity.Archived"),
        ("Parity/Archived", "/", "Parity/Archived"),
        ("INBOX", ".", "INBOX"),
        ("Support/Billing/2026", ".", "Support.Billing.2026"),
        ("Parity/Archived", None, "Parity/Archived"),
    ],
)
def test_server_path(path, delimiter, wire):
    assert server_path(path, delimiter) == wire


@pytest.mark.parametrize(
    ("message", "credentials"),
    [
        ("[AUTHENTICATIONFAILED] Authentication failed.", True),
        ("b'[AUTHENTICATIONFAILED] Invalid credentials (Failure)'", True),
        ("[AUTHORIZATIONFAILED] Not allowed", True),
        ("[EXPIRED] Password expired", True),
        ("LOGIN failed.", True),
        ("[UNAVAILABLE] Temporary authentication failure. [host:2026-11-21]", False),
        ("[SERVERBUG] Internal error occurred", False),
        ("[LIMIT] Too many simultaneous connections", False),
        ("[INUSE] Mailbox in use", False),
    ],
)
def test_login_failures_are_classified(message, credentials):
    assert is_credential_failure(message) is credentials


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 40])
def test_backoff_grows_exponentially_within_jitter_bounds(attempt):
    ceiling = min(300.0, 2.0**attempt)
    low = backoff_delay(attempt, 1.0, 300.0, rand=lambda: 0.0)
    high = backoff_delay(attempt, 1.0, 300.0, rand=lambda: 1.0)
    assert (low, high) == (ceiling / 2, ceiling)


class _Quota:
    def __init__(self, resource: str, usage: int, limit: int) -> None:
        self.quota_root, self.resource, self.usage, self.limit = (
            "User quota",
            resource,
            usage,
            limit,
        )


@pytest.mark.parametrize(
    ("quotas", "percent", "warning"),
    [
        ([_Quota("STORAGE", 57, 1048576)], 0.0, False),
        ([_Quota("STORAGE", 79, 100)], 79.0, False),
        ([_Quota("STORAGE", 80, 100)], 80.0, True),
        # The fullest resource counts: the message count can bounce mail first.
        ([_Quota("STORAGE", 10, 100), _Quota("MESSAGE", 950, 1000)], 95.0, True),
        ([_Quota("STORAGE", 5, 0)], 0.0, False),  # a limit of 0 means none, not "full"
    ],
)
def test_quota_status(quotas, percent, warning):
    status = quota_status(quotas, 80)
    assert status is not None
    assert (status["percent"], status["warning"]) == (percent, warning)
    assert status["resources"][quotas[0].resource]["usage"] == quotas[0].usage


def test_no_quota_resources_is_no_status():
    assert quota_status([], 80) is None


@pytest.mark.parametrize(
    ("responses", "outcome"),
    [
        ([], ""),
        ([(b"OK", b"Still here")], ""),
        ([(3, b"EXISTS")], "new"),
        ([(1, b"RECENT"), (4, b"EXISTS")], "new"),
        ([(2, b"EXPUNGE")], ""),
        ([(4, b"EXISTS"), (b"BYE", b"Server shutting down.")], "bye"),
    ],
)
def test_idle_outcome(responses, outcome):
    assert idle_outcome(responses) == outcome


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            Exception("b'[AUTHENTICATIONFAILED] Authentication failed.'"),
            "[AUTHENTICATIONFAILED] Authentication failed.",
        ),
        (Exception('b"[UNAVAILABLE] it\'s down"'), "[UNAVAILABLE] it's down"),
        (Exception("socket error: EOF"), "socket error: EOF"),
        (Exception("b'"), "b'"),
    ],
)
def test_server_text_unwraps_bytes(error, text):
    assert server_text(error) == text


def test_received_time_is_utc():
    from datetime import timezone

    plus_two = datetime(2026, 11, 20, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    assert received_time(plus_two) == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert received_time(None).tzinfo is not None


def test_source_keys_differ_per_folder_uidvalidity_and_uid():
    keys = {
        source_key("support", "INBOX", 1, 1),
        source_key("support", "INBOX", 1, 2),
        source_key("support", "INBOX", 2, 1),
        source_key("support", "Billing", 1, 1),
        source_key("sales", "INBOX", 1, 1),
    }
    assert len(keys) == 5


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"archive_folder": "INBOX"}, "must not be one of the folders"),
        ({"name": "bad name"}, "name"),
        ({"tls": "ssl"}, "tls is"),
        ({"after_store": "keep"}, "after_store is"),
        ({"folders": []}, "folders"),
    ],
)
def test_account_settings_refuse_mistakes(changes, error):
    values = {"name": "support", "host": "h", "username": "u", "password_env": "E", **changes}
    with pytest.raises(ValidationError, match=error):
        ImapAccount(**values)


def test_duplicate_account_names_are_refused():
    one = ImapAccount(name="support", host="h", username="u", password_env="E")
    with pytest.raises(ValidationError, match="unique"):
        ImapSettings(accounts=[one, one])


@pytest.mark.parametrize(
    ("imap", "environ", "expected"),
    [
        ({"enabled": False}, {}, (False, "disabled in settings")),
        ({"enabled": True}, {}, (False, "no accounts")),
        (
            {"enabled": True, "accounts": [{"name": "a", "password_env": "PARITY_T_PW"}]},
            {},
            (False, "environment variable not set: PARITY_T_PW (account a)"),
        ),
        (
            {"enabled": True, "accounts": [{"name": "a", "password_env": "PARITY_T_PW"}]},
            {"PARITY_T_PW": "secret"},
            (True, None),
        ),
    ],
)
def test_availability(monkeypatch, imap, environ, expected):
    monkeypatch.delenv("PARITY_T_PW", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    accounts = [ImapAccount(host="h", username="u", **a) for a in imap.pop("accounts", [])]
    settings = Settings(connectors=ConnectorsSettings(imap=ImapSettings(**imap, accounts=accounts)))
    ok, why = availability(settings, "imap")
    assert ok is expected[0]
    assert (why is None) if expected[1] is None else (expected[1] in (why or ""))


def test_the_example_account_in_settings_toml_is_valid():
    text = (ROOT / "settings.toml").read_text()
    block = text[text.index("# [[connectors.imap.accounts]]") : text.index("[connectors.twilio]")]
    lines = [line.removeprefix("# ") for line in block.splitlines()]
    settings = parse(tomllib.loads("\n".join(["[connectors.imap]", *lines])))
    [example] = settings.connectors.imap.accounts
    assert (example.tls, example.auth, example.after_store) == ("implicit", "password", "move")
    assert example.backfill_since == date(2026, 1, 1) and example.receipt_address == (
        "support@example.com"
    )


# --- against Dovecot -------------------------------------------------------------------------


async def test_a_thousand_messages_each_ingested_once_and_archived(engine, dovecot):
    mailbox = dovecot.add_user()
    mails = [make_mail(i, domain="thousand.example") for i in range(1000)]
    mailbox.append("INBOX", mails)
    with mailbox.session() as client:
        uidvalidity = client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]
    connector = ImapConnector(
        imap_settings(account(mailbox)), engine, environ={"PARITY_TEST_IMAP": mailbox.password}
    )
    await drive(connector, drained(connector))

    want = Counter(expected_ids(mails))
    assert Counter(stored_message_ids(engine)) == want  # each once, none missing
    assert mailbox.uids("INBOX") == []
    assert Counter(mailbox.message_ids(ARCHIVE)) == want  # each archived once
    assert seen_flags(mailbox, ARCHIVE) == 0  # BODY.PEEK[]: nothing marked read
    checkpoint = load_checkpoint(engine, "imap", "support:INBOX")
    assert checkpoint == {"uidvalidity": uidvalidity, "last_uid": 1000, "backfill_complete": True}
    with engine.connect() as conn:
        envelope = conn.execute(select(Intake.envelope).limit(1)).scalar_one()
    assert envelope["address"] == SUPPORT and envelope["uidvalidity"] == uidvalidity
    folder = connector.health.details["accounts"]["support"]["folders"]["INBOX"]
    assert folder["backfill"] == {"since": None, "done": 1000, "total": 1000, "complete": True}


def _write_settings(path: Path, db_url: str, mailbox: Mailbox, **imap: Any) -> Path:
    lines = [
        "[database]",
        f'url = "{db_url}"',
        'url_env = "PARITY_TEST_UNUSED_DATABASE_URL"',
        "[connectors.smtp]",
        "enabled = false",
        "[connectors.web]",
        "enabled = false",
        "[connectors.imap]",
        "enabled = true",
        *(f"{k} = {json.dumps(v)}" for k, v in imap.items()),
        "[[connectors.imap.accounts]]",
        'name = "support"',
        'host = "127.0.0.1"',
        f"port = {mailbox.server.imap_port}",
        'tls = "none"',
        f'username = "{mailbox.user}"',
        'password_env = "PARITY_TEST_IMAP"',
        f'address = "{SUPPORT}"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _start_daemon(settings: Path, mailbox: Mailbox, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PARITY_TEST_IMAP": mailbox.password, "PYTHONPATH": str(ROOT)}
    env.pop("PARITY_SETTINGS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "parity", "--settings", str(settings), "run", "--only", "imap"],
        cwd=settings.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def _wait(condition: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what} not reached in {timeout} s; daemon log:\n{log.read_text()[-4000:]}"
            )
        time.sleep(0.01)


def test_sigkill_mid_batch_loses_doubles_and_early_archives_nothing(
    engine, db_url, dovecot, tmp_path
):
    mailbox = dovecot.add_user()
    # Far more mail than the kill threshold: the kill must land mid-drain even when this shared
    # machine starves the test process for a few seconds while the daemon keeps storing (a CI
    # run with 600 saw all of them stored between two looks).
    total = 3000
    mails = [make_mail(i, domain="sigkill.example") for i in range(total)]
    mailbox.append("INBOX", mails)
    want = Counter(expected_ids(mails))
    settings = _write_settings(
        tmp_path / "settings.toml", db_url, mailbox, batch_size=10, archive_batch=30
    )
    log = tmp_path / "daemon.log"

    daemon = _start_daemon(settings, mailbox, log)
    try:
        _wait(lambda: count(engine, Intake) >= 150, 60, "150 stored", log)
    finally:  # the kill is the test; it also must not outlive a failed wait
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
    # Archive first, store second: whatever was archived by the time of the first look
    # must already be stored at the second.
    archived = Counter(mailbox.message_ids(ARCHIVE))
    stored = Counter(stored_message_ids(engine))
    assert not archived - stored, "archived before it was stored"
    assert max(stored.values()) == 1, "stored twice"
    assert 0 < sum(stored.values()) < total, "the kill did not land mid-drain"
    assert archived, "nothing archived yet: the kill came too early to test the order"
    assert sum(archived.values()) + len(mailbox.uids("INBOX")) == total

    daemon = _start_daemon(settings, mailbox, log)
    try:
        _wait(
            lambda: count(engine, Intake) >= total and not mailbox.uids("INBOX"),
            180,
            "drained",
            log,
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=STOP_WITHIN_S) == 0
    assert Counter(stored_message_ids(engine)) == want
    assert Counter(mailbox.message_ids(ARCHIVE)) == want
    assert count(engine, Intake) == total


async def test_stored_but_unarchived_mail_is_archived_and_unstored_mail_fetched(engine, dovecot):
    """The state a crash between commit and MOVE leaves, made on purpose.

    UIDs 1-3 are stored with a checkpoint at 4, as if UID 4 had been skipped: the connector
    must archive 1-3 without fetching them, and fetch 4 (never archive it unstored) and 5.
    """
    mailbox = dovecot.add_user()
    mails = [make_mail(i, domain="crash.example") for i in range(5)]
    mailbox.append("INBOX", mails)
    with mailbox.session() as client:
        uidvalidity = client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]
        assert client.search(["ALL"]) == [1, 2, 3, 4, 5]
    store(
        engine,
        [
            RawInput("imap", "email", source_key("support", "INBOX", uidvalidity, uid), raw)
            for uid, raw in zip((1, 2, 3), mails, strict=False)
        ],
        [
            CheckpointUpdate(
                "imap",
                "support:INBOX",
                {"uidvalidity": uidvalidity, "last_uid": 4, "backfill_complete": True},
            )
        ],
    )
    connector = ImapConnector(
        imap_settings(account(mailbox)), engine, environ={"PARITY_TEST_IMAP": mailbox.password}
    )
    await drive(connector, drained(connector))

    folder = connector.health.details["accounts"]["support"]["folders"]["INBOX"]
    assert (folder["stored"], folder["archived"], folder["last_uid"]) == (2, 5, 5)
    assert Counter(stored_message_ids(engine)) == Counter(expected_ids(mails))
    assert Counter(mailbox.message_ids(ARCHIVE)) == Counter(expected_ids(mails))
    assert mailbox.uids("INBOX") == []


async def test_server_restart_mid_poll_reconnects_and_carries_on(engine, own_dovecot):
    mailbox = own_dovecot.add_user()
    total = 500
    mails = [make_mail(i, domain="restart.example") for i in range(total)]
    mailbox.append("INBOX", mails)
    connector = ImapConnector(
        imap_settings(account(mailbox), batch_size=10),
        engine,
        environ={"PARITY_TEST_IMAP": mailbox.password},
    )
    restarted: list[int] = []

    async def restart_once() -> None:
        if not restarted and count(engine, Intake) > 0:
            restarted.append(count(engine, Intake))
            await asyncio.to_thread(own_dovecot.restart, 1.0)  # down for a moment

    await drive(
        connector,
        lambda: bool(restarted) and drained(connector)() and count(engine, Intake) >= total,
        during=restart_once,
    )
    assert restarted[0] < total, "the restart did not land mid-poll"
    state = connector.health.details["accounts"]["support"]
    assert state["reconnects"] >= 1 and state["connects"] >= 2
    assert state["status"] == "ok"
    want = Counter(expected_ids(mails))
    assert Counter(stored_message_ids(engine)) == want
    assert Counter(mailbox.message_ids(ARCHIVE)) == want
    assert mailbox.uids("INBOX") == []


async def test_folder_recreated_with_new_uidvalidity_adds_no_duplicates(engine, dovecot):
    mailbox = dovecot.add_user()
    a, b, c, d = (make_mail(i, domain="uidvalidity.example") for i in range(4))
    mailbox.append("Support", [a, b, c])
    settings = imap_settings(account(mailbox, folders=["Support"]))
    environ = {"PARITY_TEST_IMAP": mailbox.password}
    connector = ImapConnector(settings, engine, environ=environ)
    await drive(connector, drained(connector))
    first = load_checkpoint(engine, "imap", "support:Support")
    assert first is not None and first["last_uid"] == 3
    assert [o.state for o in normalize(engine)] == ["done"] * 3

    with mailbox.session() as client:
        client.delete_folder("Support")
        client.create_folder("Support")
    # The same three mails come back (restored from a backup, say) with one new one.
    mailbox.append("Support", [a, b, d])
    connector = ImapConnector(settings, engine, environ=environ)
    await drive(connector, drained(connector))

    second = load_checkpoint(engine, "imap", "support:Support")
    assert second is not None and second["uidvalidity"] != first["uidvalidity"]
    assert second["last_uid"] == 3
    outcomes = Counter(o.state for o in normalize(engine))
    assert outcomes == {"duplicate": 2, "done": 1}
    assert count(engine, Intake) == 6  # the folder was read again, under new source keys
    with engine.connect() as conn:
        ids = Counter(conn.execute(select(Message.external_id)).scalars())
    assert ids == Counter(i.strip("<>") for i in expected_ids([a, b, c, d]))


async def test_idle_brings_new_mail_into_a_case_long_before_a_poll(db_url, dovecot, monkeypatch):
    mailbox = dovecot.add_user()
    monkeypatch.setenv("PARITY_TEST_IMAP", mailbox.password)
    poll_seconds = 600
    settings = Settings(
        database=DatabaseSettings(url=db_url, url_env="PARITY_TEST_UNUSED_DATABASE_URL"),
        connectors=ConnectorsSettings(
            imap=imap_settings(account(mailbox), poll_seconds=poll_seconds)
        ),
    )
    daemon = Daemon(settings, only=["imap"])
    task = asyncio.create_task(daemon.run())
    try:

        def folder() -> dict[str, Any]:
            entry = daemon.supervised.get("imap")
            if entry is None:
                return {}
            details: dict[str, Any] = entry.connector.health.details
            return dict(details["accounts"]["support"]["folders"]["INBOX"])

        deadline = time.monotonic() + 20
        while folder().get("waiting") != "idle":
            assert time.monotonic() < deadline, f"never went idle: {folder()}"
            await asyncio.sleep(0.05)
        mail = make_mail(1, domain="idle.example", subject="Locked out after phone swap")
        await asyncio.to_thread(mailbox.append, "INBOX", [mail])
        # A bounded wait far below the poll interval: only IDLE can bring it in this soon.
        bound = 30
        assert bound < poll_seconds / 10
        deadline = time.monotonic() + bound
        engine = daemon.engine
        while not queries.list_cases(engine):
            assert time.monotonic() < deadline, f"no case within {bound} s: {folder()}"
            await asyncio.sleep(0.05)
        case = queries.list_cases(engine)[0]
        assert case["subject"] == "Locked out after phone swap"
        assert mailbox.uids("INBOX") == []
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, timeout=30)


def _nested(depth: int) -> bytes:
    """A MIME bomb: multiparts nested deeper than the normalizer's cap, valid to IMAP."""
    head = (
        b"From: Mallory <mallory@example.net>\r\nTo: help@support.example.com\r\n"
        b"Subject: nested\r\nMessage-ID: <bomb@example.net>\r\nMIME-Version: 1.0\r\n"
    )
    body = b""
    for level in range(depth):
        body += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level)
    body += b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    for level in reversed(range(depth)):
        body += b"--b%d--\r\n" % level
    return head + body


async def test_unparseable_mail_is_dead_lettered_raw_and_still_archived(engine, dovecot):
    mailbox = dovecot.add_user()
    bomb = _nested(150)
    good = make_mail(1, domain="parse.example")
    mailbox.append("INBOX", [bomb, good])
    environ = {"PARITY_TEST_IMAP": mailbox.password}
    settings = imap_settings(account(mailbox))
    connector = ImapConnector(settings, engine, environ=environ)
    await drive(connector, drained(connector))

    assert Counter(o.state for o in normalize(engine)) == {"dead": 1, "done": 1}
    with engine.connect() as conn:
        letter = conn.execute(select(DeadLetter)).one()
        raw = conn.execute(select(Blob.data).where(Blob.sha256 == letter.raw_sha256)).scalar_one()
    assert raw == bomb and letter.connector == "imap" and "MIME" in letter.error
    assert sorted(mailbox.message_ids(ARCHIVE)) == sorted(
        ["<bomb@example.net>", *expected_ids([good])]
    )
    assert mailbox.uids("INBOX") == []
    # Not fetched forever: another run finds nothing and stores nothing.
    connector = ImapConnector(settings, engine, environ=environ)
    await drive(connector, drained(connector))
    assert count(engine, Intake) == 2


def _status(settings_path: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "parity",
            "--settings",
            str(settings_path),
            "connectors",
            "status",
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        check=True,
        timeout=60,
    )
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


async def test_wrong_password_is_auth_failed_retried_slowly_and_smtp_keeps_running(
    db_url, dovecot, monkeypatch
):
    mailbox = dovecot.add_user()
    mailbox.append("INBOX", [make_mail(1, domain="wrongpw.example")])
    monkeypatch.setenv("PARITY_TEST_IMAP", "not-the-password")
    settings = Settings(
        database=DatabaseSettings(url=db_url, url_env="PARITY_TEST_UNUSED_DATABASE_URL"),
        connectors=ConnectorsSettings(
            imap=imap_settings(account(mailbox)),
            smtp=SmtpSettings(port=0),
        ),
    )
    daemon = Daemon(settings, only=["imap", "smtp"])
    task = asyncio.create_task(daemon.run())
    engine = daemon.engine
    try:

        def imap_status() -> dict[str, Any] | None:
            daemon._write_states()  # what the heartbeat does every few seconds, now
            for entry in connector_status(settings, engine):
                if entry["name"] == "imap" and "accounts" in entry:
                    return dict(entry)
            return None

        deadline = time.monotonic() + 30
        while (s := imap_status()) is None or s["accounts"]["support"]["status"] != "auth failed":
            assert time.monotonic() < deadline, f"no auth failure in status: {s}"
            await asyncio.sleep(0.2)
        support = s["accounts"]["support"]
        assert "AUTHENTICATIONFAILED" in support["last_auth_error"]
        assert s["running"] is True and s["instances"][0]["restarts"] == 0  # no crash loop
        # The next try is minutes away (300 s, jitter of 10 %), not a loop.
        retry_at = datetime.fromisoformat(support["next_retry_at"].replace("Z", "+00:00"))
        assert retry_at - datetime.now(UTC) > timedelta(seconds=300 * 0.9 - 30)

        # Meanwhile SMTP accepts and stores mail as usual.
        smtp = daemon.supervised["smtp"].connector
        host, port = smtp.address.rsplit(":", 1)  # type: ignore[attr-defined]
        message = make_mail(2, domain="smtp.example")
        await asyncio.to_thread(_send, host, int(port), message)
        assert count(engine, Intake, Intake.connector == "smtp") == 1
        connector = daemon.supervised["imap"].connector
        assert connector.health.details["accounts"]["support"]["auth_failures"] == 1
        assert count(engine, Intake, Intake.connector == "imap") == 0
        assert len(mailbox.uids("INBOX")) == 1  # nothing archived without being stored
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, timeout=30)


def _send(host: str, port: int, message: bytes) -> None:
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.sendmail("customer2@smtp.example", [SUPPORT], message)


async def test_auth_failure_is_retried_and_recovers_when_the_password_is_fixed(engine, dovecot):
    mailbox = dovecot.add_user()
    mailbox.append("INBOX", [make_mail(1, domain="recover.example")])
    dovecot.set_password(mailbox.user, "changed-upstream")
    connector = ImapConnector(
        imap_settings(account(mailbox), auth_retry_seconds=1),
        engine,
        environ={"PARITY_TEST_IMAP": mailbox.password},
    )

    async def fix_password() -> None:
        if connector.health.details["accounts"]["support"]["auth_failures"] >= 1:
            dovecot.set_password(mailbox.user, mailbox.password)

    await drive(
        connector,
        lambda: count(engine, Intake) == 1 and drained(connector)(),
        during=fix_password,
    )
    support = connector.health.details["accounts"]["support"]
    assert support["status"] == "ok"
    assert support["auth_failures"] >= 1 and "AUTHENTICATIONFAILED" in support["last_auth_error"]


async def test_quota_past_the_threshold_shows_in_connectors_status(
    db_url, dovecot, monkeypatch, tmp_path
):
    full = dovecot.add_user(quota_kib=100)
    roomy = dovecot.add_user()
    # About 90 KiB of mail against a 100 KiB limit; archiving within the account keeps it.
    filler = "Please see the log below.\r\n" + ("x" * 70 + "\r\n") * 40
    full.append("INBOX", [make_mail(i, domain="quota.example", body=filler) for i in range(30)])
    roomy.append("INBOX", [make_mail(1, domain="roomy.example")])
    with full.session() as client:
        [(_root, quotas)] = [client.get_quota_root("INBOX")]
    usage, limit = int(quotas[0].usage), int(quotas[0].limit)
    assert limit == 100 and usage >= 80  # the test's premise, measured by our own session

    monkeypatch.setenv("PARITY_TEST_QUOTA", full.password)
    monkeypatch.setenv("PARITY_TEST_ROOMY", roomy.password)
    imap = imap_settings(
        account(full, "full", env="PARITY_TEST_QUOTA"),
        account(roomy, "roomy", env="PARITY_TEST_ROOMY"),
        quota_warn_percent=80,
    )
    settings = Settings(
        database=DatabaseSettings(url=db_url, url_env="PARITY_TEST_UNUSED_DATABASE_URL"),
        connectors=ConnectorsSettings(imap=imap),
    )
    settings_path = tmp_path / "settings.toml"
    settings_path.write_text(
        f'[database]\nurl = "{db_url}"\nurl_env = "PARITY_TEST_UNUSED_DATABASE_URL"\n'
        "[connectors.imap]\nenabled = true\n"
        + "".join(
            f'[[connectors.imap.accounts]]\nname = "{a.name}"\nhost = "127.0.0.1"\n'
            f'port = {a.port}\ntls = "none"\nusername = "{a.username}"\n'
            f'password_env = "{a.password_env}"\n'
            for a in imap.accounts
        )
    )
    daemon = Daemon(settings, only=["imap"])
    task = asyncio.create_task(daemon.run())
    try:
        deadline = time.monotonic() + 30
        while True:
            await asyncio.to_thread(daemon._write_states)  # the heartbeat, now
            entry = next(
                e for e in connector_status(settings, daemon.engine) if e["name"] == "imap"
            )
            quota = (entry.get("accounts") or {}).get("full", {}).get("quota")
            if quota and (entry["accounts"].get("roomy") or {}).get("quota"):
                break
            assert time.monotonic() < deadline, f"no quota in status: {entry}"
            await asyncio.sleep(0.2)
        env = {"PARITY_TEST_QUOTA": full.password, "PARITY_TEST_ROOMY": roomy.password}
        status = await asyncio.to_thread(_status, settings_path, env)
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, timeout=30)

    imap_entry = next(e for e in status if e["name"] == "imap")
    assert imap_entry["enabled"] is True
    shown = imap_entry["accounts"]["full"]
    assert shown["quota"]["resources"]["STORAGE"] == {
        "usage": usage,
        "limit": limit,
        "percent": round(100 * usage / limit, 1),
    }
    assert shown["quota"]["warning"] is True
    assert shown["warnings"] and "full" in shown["warnings"][0]
    assert shown["backlog"] == 0 and shown["last_auth_error"] is None
    assert imap_entry["accounts"]["roomy"]["quota"]["warning"] is False
    assert imap_entry["accounts"]["roomy"]["warnings"] == []


async def test_tls_verifies_the_certificate_and_refuses_a_wrong_ca(engine, dovecot, certs):
    users = {name: dovecot.add_user() for name in ("implicit", "starttls", "wrongca", "sysca")}
    for index, (name, mailbox) in enumerate(users.items()):
        mailbox.append("INBOX", [make_mail(index, domain=f"{name}.example")])
    imaps = dovecot.imaps_port
    accounts = [
        account(users["implicit"], "implicit", env="PW_IMPLICIT", tls="implicit", port=imaps,
                ca_file=str(certs.ca)),
        account(users["starttls"], "starttls", env="PW_STARTTLS", tls="starttls",
                ca_file=str(certs.ca)),
        account(users["wrongca"], "wrongca", env="PW_WRONGCA", tls="implicit", port=imaps,
                ca_file=str(certs.other_ca)),
        # No ca_file: the system's CAs, which never signed a test certificate.
        account(users["sysca"], "sysca", env="PW_SYSCA", tls="starttls"),
    ]  # fmt: skip
    environ = {a.password_env: users[a.name].password for a in accounts}
    connector = ImapConnector(imap_settings(*accounts), engine, environ=environ)

    def settled() -> bool:
        details = connector.health.details["accounts"]
        return drained(connector, "implicit", "starttls")() and all(
            details[n]["status"] == "tls failed" for n in ("wrongca", "sysca")
        )

    await drive(connector, settled)
    details = connector.health.details["accounts"]
    for name in ("wrongca", "sysca"):
        assert "certificate" in details[name]["folders"]["INBOX"]["last_error"]
        assert len(users[name].uids("INBOX")) == 1  # untouched
    assert sorted(stored_message_ids(engine)) == sorted(
        expected_ids(
            [make_mail(0, domain="implicit.example"), make_mail(1, domain="starttls.example")]
        )
    )


async def test_xoauth2_through_the_oauth2_passdb(engine, dovecot, tokens):
    good, bad = dovecot.add_user(), dovecot.add_user()
    good.append("INBOX", [make_mail(1, domain="oauth.example")])
    bad.append("INBOX", [make_mail(2, domain="oauth.example")])
    tokens.tokens["ya29.test-good-token"] = good.user
    accounts = [
        account(good, "good", env="TOKEN_GOOD", auth="xoauth2"),
        account(bad, "bad", env="TOKEN_BAD", auth="xoauth2"),
    ]
    environ = {"TOKEN_GOOD": "ya29.test-good-token", "TOKEN_BAD": "ya29.expired-token"}
    connector = ImapConnector(imap_settings(*accounts), engine, environ=environ)
    asked = tokens.requests

    def settled() -> bool:
        details = connector.health.details["accounts"]
        return drained(connector, "good")() and details["bad"]["status"] == "auth failed"

    await drive(connector, settled)
    assert tokens.requests >= asked + 2  # both logins went through the token endpoint
    assert stored_message_ids(engine) == expected_ids([make_mail(1, domain="oauth.example")])
    assert good.uids("INBOX") == [] and len(bad.uids("INBOX")) == 1


async def test_without_move_copy_deleted_and_uid_expunge_archive(engine, dovecot_without_move):
    mailbox = dovecot_without_move.add_user()
    mails = [make_mail(i, domain="nomove.example") for i in range(25)]
    mailbox.append("INBOX", mails)
    with mailbox.session() as client:
        assert b"MOVE" not in client.capabilities() and b"UIDPLUS" in client.capabilities()
    connector = ImapConnector(
        imap_settings(account(mailbox), batch_size=10),
        engine,
        environ={"PARITY_TEST_IMAP": mailbox.password},
    )
    await drive(connector, drained(connector))
    assert connector.health.details["accounts"]["support"]["capabilities"]["move"] is False
    want = Counter(expected_ids(mails))
    assert Counter(stored_message_ids(engine)) == want
    assert Counter(mailbox.message_ids(ARCHIVE)) == want
    assert mailbox.uids("INBOX") == []  # \Deleted and expunged, not just flagged


async def test_after_store_delete_removes_the_upstream_copy(engine, dovecot):
    mailbox = dovecot.add_user()
    mails = [make_mail(i, domain="delete.example") for i in range(5)]
    mailbox.append("INBOX", mails)
    connector = ImapConnector(
        imap_settings(account(mailbox, after_store="delete")),
        engine,
        environ={"PARITY_TEST_IMAP": mailbox.password},
    )
    await drive(connector, drained(connector))
    assert Counter(stored_message_ids(engine)) == Counter(expected_ids(mails))
    assert mailbox.uids("INBOX") == [] and mailbox.uids(ARCHIVE) == []


async def test_mail_seen_by_smtp_and_imap_is_one_message_with_two_receipts(engine, dovecot):
    mailbox = dovecot.add_user()
    mail = make_mail(7, domain="both.example", subject="Refund for order 5512")
    writer = IntakeWriter(engine)
    smtp = SmtpConnector(SmtpSettings(port=0), writer)
    await smtp.start()
    try:
        host, port = smtp.address.rsplit(":", 1)
        await asyncio.to_thread(_send, host, int(port), mail)
    finally:
        assert smtp.server is not None
        smtp.server.close()
        await smtp.server.wait_closed()
        await asyncio.to_thread(writer.stop)
    # The mailbox's copy went through more hops: other trace headers, same mail.
    mailbox_copy = (
        b"Delivered-To: help@support.example.com\r\n"
        b"Received: from mx.support.example.com by imap.support.example.com; "
        b"Fri, 20 Nov 2026 09:00:05 +0000\r\n" + mail
    )
    mailbox.append("INBOX", [mailbox_copy])
    connector = ImapConnector(
        imap_settings(account(mailbox, address="Support-Inbox@Support.Example.com")),
        engine,
        environ={"PARITY_TEST_IMAP": mailbox.password},
    )
    await drive(connector, drained(connector))

    assert Counter(o.state for o in normalize(engine)) == {"done": 1, "duplicate": 1}
    assert count(engine, Message) == 1
    with engine.connect() as conn:
        receipts = {(r.connector, r.address) for r in conn.execute(select(Receipt))}
    assert receipts == {("smtp", SUPPORT), ("imap", "support-inbox@support.example.com")}


async def test_backfill_takes_mail_since_the_configured_date_with_progress(engine, dovecot, caplog):
    mailbox = dovecot.add_user()
    old = [make_mail(i, domain="old.example") for i in range(3)]
    recent = [make_mail(i, domain="recent.example") for i in range(4)]
    mailbox.append("INBOX", old, when=datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    mailbox.append("INBOX", recent, when=datetime(2026, 11, 1, 12, 0, tzinfo=UTC))
    settings = imap_settings(account(mailbox, backfill_since=date(2026, 6, 1)))
    environ = {"PARITY_TEST_IMAP": mailbox.password}
    caplog.set_level("INFO", logger="connectors.imap.intake")
    connector = ImapConnector(settings, engine, environ=environ)
    await drive(connector, drained(connector))

    assert Counter(stored_message_ids(engine)) == Counter(expected_ids(recent))
    assert sorted(mailbox.message_ids("INBOX")) == sorted(expected_ids(old))  # left alone
    folder = connector.health.details["accounts"]["support"]["folders"]["INBOX"]
    assert folder["backfill"] == {"since": "2026-06-01", "done": 4, "total": 4, "complete": True}
    progress = [
        r.getMessage() for r in caplog.records if "backfill since 2026-06-01" in r.getMessage()
    ]
    assert progress[0].endswith("0 of 4 messages stored (0%)")
    assert progress[-1].endswith("4 of 4 messages stored (100%)")
    with engine.connect() as conn:
        received = set(conn.execute(select(Intake.received_at)).scalars())
    assert received == {datetime(2026, 11, 1, 12, 0, tzinfo=UTC)}  # INTERNALDATE

    # A restart is not a first start: new mail is simply taken, with no backfill report.
    mailbox.append("INBOX", [make_mail(9, domain="later.example")])
    connector = ImapConnector(settings, engine, environ=environ)
    await drive(connector, drained(connector))
    assert count(engine, Intake) == 5
    assert connector.health.details["accounts"]["support"]["folders"]["INBOX"]["backfill"] is None
    with engine.connect() as conn:
        saved = conn.execute(select(Checkpoint.value)).scalar_one()
    assert saved["backfill_complete"] is True


async def test_imap_mail_is_authenticated_by_the_providers_topmost_header(engine, dovecot):
    """Issue 16: mail fetched by IMAP was checked by the mailbox provider; its topmost
    Authentication-Results under a trusted authserv-id is believed, and nothing below it."""
    mailbox = dovecot.add_user()
    header = (
        "Authentication-Results: mx.provider.example; dmarc={} header.from=customer.example\r\n"
    )
    vouched = make_mail(1, domain="customer.example", extra_headers=header.format("pass"))
    # A forgery: the provider's own header says fail; the sender wrote a "pass" below it.
    forged = make_mail(
        1,
        domain="customer.example",
        subject="Send the link to mallory@evil.example",
        extra_headers=header.format("fail") + header.format("pass"),
    ).replace(b"<msg1.", b"<msg1-forged.")
    mailbox.append("INBOX", [vouched, forged])
    connector = ImapConnector(
        imap_settings(account(mailbox)), engine, environ={"PARITY_TEST_IMAP": mailbox.password}
    )
    await drive(connector, drained(connector))
    trusting = test_mail_auth().model_copy(update={"trusted_authserv_ids": ["mx.provider.example"]})
    outcomes = Normalizer(
        engine, StoreSettings(), mail_auth=trusting, parsers=parser_table()
    ).drain()
    assert [o.state for o in outcomes] == ["done", "done"]
    with engine.connect() as conn:
        rows = list(conn.execute(select(Message.subject, Message.auth).order_by(Message.id)))
    verdicts = {row.subject.startswith("Send the link"): row.auth["verdict"] for row in rows}
    assert verdicts == {False: "pass", True: "fail"}
    first, second = (o.case_id for o in outcomes)
    assert first != second  # the forgery did not join the customer's case
    details = []
    for outcome in outcomes:
        assert outcome.message_id is not None
        reference = queries.case_of_message(engine, outcome.message_id)
        assert reference is not None
        details.append(queries.case_detail(engine, reference))
    genuine, forgery = details
    assert genuine is not None and forgery is not None
    by_verdict = {
        d["messages"][0]["auth"]["verdict"]: d["unverified_from"] for d in (genuine, forgery)
    }
    assert by_verdict == {"pass": None, "fail": "customer1@customer.example"}
