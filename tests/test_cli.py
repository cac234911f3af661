"""The `parity` command, run as a user runs it: a separate process, a settings file, JSON out."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from inbox import migrate
from inbox.db import make_engine
from inbox.models import Base
from tests.conftest import PG_ADMIN_URL
from tests.support.dns_server import mail_auth_toml
from tests.support.emails import SCREENSHOT_PNG, STATEMENT_PDF, eml
from tests.support.helpers import FIXTURES, ingest, normalize


def parity(settings: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # The test's settings only, but the session's audit key (tests run keyed, conftest.py).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PARITY_") or k == "PARITY_AUDIT_KEY"
    }
    # A command that hangs shows where: faulthandler prints every thread's stack on SIGABRT.
    # (One CI run saw `parity ingest` exceed 120 s once on a loaded machine, with no database
    # session waiting; this way a repeat explains itself.)
    env["PYTHONFAULTHANDLER"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "parity", "--settings", str(settings), *args],
        # No terminal, as in a container or a script: a prompt must not be the way in.
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        out, err = process.communicate(timeout=30)
        pytest.fail(f"`parity {' '.join(args)}` ran over {timeout} s; its stacks:\n{err[-8000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def settings_for(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f'[database]\nurl = "{url}"\n\n[logging]\nlevel = "WARNING"\n' + mail_auth_toml()
    )
    return path


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def utc_time(value: str) -> datetime:
    """An ISO 8601 time in UTC, written with a Z."""
    assert value.endswith("Z"), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0)
    return parsed


# --- db upgrade on fresh databases ----------------------------------------------------------


def assert_migrated(url: str) -> None:
    engine = make_engine(url)
    try:
        assert migrate.current(engine) == migrate.head() is not None
        tables = set(inspect(engine).get_table_names())
        assert {t.name for t in Base.metadata.sorted_tables} <= tables
    finally:
        engine.dispose()


def test_db_upgrade_creates_a_fresh_sqlite_database(tmp_path):
    path = tmp_path / "var" / "parity.db"  # the folder does not exist yet either
    url = f"sqlite:///{path}"
    result = parity(settings_for(tmp_path, url), "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert f"revision {migrate.head()}" in result.stdout
    assert path.exists()
    assert_migrated(url)


def test_db_upgrade_creates_a_fresh_postgresql_database(tmp_path):
    name = f"parity_cli_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # fail, never skip
        pytest.fail(f"PostgreSQL is required at {PG_ADMIN_URL}: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        result = parity(settings_for(tmp_path, url), "db", "upgrade")
        assert result.returncode == 0, result.stderr
        assert f"revision {migrate.head()}" in result.stdout
        assert_migrated(url)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


# --- ingest, the queue, one case, dead letters ----------------------------------------------


def test_ingest_then_read_the_queue_a_case_and_dead_letters(engine, db_url, tmp_path):
    settings = settings_for(tmp_path, db_url)
    # First come, first served: Ann writes "locked out", which the shipped content rule
    # would bring forward (tests/test_queue_order.py shows that); here it is off.
    with settings.open("a") as file:
        file.write("\n[sla]\nrules = []\n")

    # Ann's mail through the command, as a connector would feed it.
    result = json_out(
        parity(
            settings,
            "ingest",
            str(FIXTURES / "email" / "gmail_first_contact.eml"),
            "--channel",
            "email",
        )
    )
    assert result["duplicate"] is False
    assert result["state"] == "done"
    ann_reference = result["case"]
    assert ann_reference.startswith("C-")

    # Bob's mail arrived an hour earlier (stored by another connector), and some text that
    # is no mail at all.
    ingest(
        engine,
        eml("thunderbird_attachments.eml"),
        received_at=datetime.now(UTC) - timedelta(hours=1),
    )
    garbage = b"This is not a mail, just text pasted from a chat window.\n"
    ingest(engine, garbage, source_key="cli-test:garbage")
    normalize(engine)

    # The queue, in order: Bob's earlier mail is due first.
    queue = json_out(parity(settings, "cases", "list", "--json"))
    assert isinstance(queue, list) and len(queue) == 2
    assert queue[1]["reference"] == ann_reference
    bob_reference = queue[0]["reference"]
    for entry in queue:
        assert {"reference", "status", "due_at", "channels", "contact", "message_count"} <= set(
            entry
        )
        assert entry["status"] == "new"
        assert entry["channels"] == ["email"]
        assert entry["message_count"] == 1
        assert {"id", "name", "identities"} <= set(entry["contact"])
    assert utc_time(queue[0]["due_at"]) < utc_time(queue[1]["due_at"])
    assert queue[1]["contact"]["name"] == "Ann Example"

    # One case in full.
    case = json_out(parity(settings, "case", "show", bob_reference, "--json"))
    assert case["reference"] == bob_reference
    assert case["status"] == "new"
    assert case["channels"] == ["email"]
    utc_time(case["due_at"])
    assert case["contact"]["name"] == "Bob Müller"
    assert [
        {"channel": i["channel"], "handle": i["handle"]} for i in case["contact"]["identities"]
    ] == [{"channel": "email", "handle": "bob.mueller@posteo.de"}]
    [message] = case["messages"]
    assert {
        "id",
        "channel",
        "direction",
        "visibility",
        "received_at",
        "from",
        "subject",
        "text",
        "receipts",
        "attachments",
    } <= set(message)
    assert (message["channel"], message["direction"], message["visibility"]) == (
        "email",
        "inbound",
        "private",
    )
    assert message["from"] == "bob.mueller@posteo.de"
    assert message["subject"] == "Doppelte Abbuchung im März"
    assert "zweimal abgebucht" in message["text"]
    utc_time(message["received_at"])
    assert len(message["receipts"]) == 1
    assert [
        (a["filename"], a["content_type"], a["size"], a["sha256"]) for a in message["attachments"]
    ] == [
        (
            "screenshot.png",
            "image/png",
            len(SCREENSHOT_PNG),
            hashlib.sha256(SCREENSHOT_PNG).hexdigest(),
        ),
        (
            "Kontoauszug März.pdf",
            "application/pdf",
            len(STATEMENT_PDF),
            hashlib.sha256(STATEMENT_PDF).hexdigest(),
        ),
    ]

    # The garbage is a dead letter, with its raw bytes kept.
    [letter] = json_out(parity(settings, "deadletters", "list", "--json"))
    assert letter["channel"] == "email"
    assert letter["raw_size"] == len(garbage)
    assert letter["raw_sha256"] == hashlib.sha256(garbage).hexdigest()
    assert "no headers" in letter["error"]
    utc_time(letter["created_at"])


def test_a_case_that_does_not_exist(sqlite_template, tmp_path):
    # The same code path on either database; one run is enough.
    path = tmp_path / "parity.db"
    shutil.copy(sqlite_template, path)
    result = parity(
        settings_for(tmp_path, f"sqlite:///{path}"), "case", "show", "C-999999", "--json"
    )
    assert result.returncode == 1
    assert "C-999999" in result.stderr


# Each: the command, its exit status (docs/reference/cli.md) and what its one line says.
REPO = Path(__file__).resolve().parent.parent

FAILURES = [
    (("ingest", "--channel", "email", "/missing.eml"), 66, "cannot read /missing.eml"),
    (("ingest", "--channel", "email", "."), 66, "Is a directory"),
    (("users", "add", "bob", "--role", "admin"), 2, "set PARITY_PASSWORD"),
    (("import", "mbox", "/missing.mbox"), 2, "no such mbox file"),
    (("case", "show", "C-999999"), 1, "C-999999"),
    (("users", "token", "nobody"), 1, "no user named 'nobody'"),
]


@pytest.mark.parametrize(("args", "status", "says"), FAILURES, ids=lambda v: str(v))
def test_every_failure_is_one_line_and_a_documented_status(
    sqlite_template, tmp_path, args, status, says
):
    path = tmp_path / "parity.db"
    shutil.copy(sqlite_template, path)
    result = parity(settings_for(tmp_path, f"sqlite:///{path}"), *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, result.stderr
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    documented = (REPO / "docs" / "reference" / "cli.md").read_text()
    assert f"{status} " in documented.split("Exit statuses:", 1)[1].split("\n", 1)[0]


def test_a_database_without_the_schema_says_to_upgrade(tmp_path):
    result = parity(
        settings_for(tmp_path, f"sqlite:///{tmp_path / 'new.db'}"), "case", "show", "C-1"
    )
    assert result.returncode == 78, result.stderr
    assert result.stderr.strip().endswith("run `parity db upgrade` first")
