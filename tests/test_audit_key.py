"""The audit chain refuses to start without a key (issue 16, attack 5).

Without PARITY_AUDIT_KEY the chain used to be keyed, silently, with a constant anyone can read
in the source. Now `parity run` and every command that writes the audit log stop at start-up
with exit status 78 (EX_CONFIG, as for any unusable settings) before touching the store,
unless `[audit] allow_unkeyed = true` (a development setting `parity doctor` warns about)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update

from inbox import audit
from inbox.models import AuditLog, DeadLetter, Intake, utcnow
from parity import daemon
from parity.cli import main
from parity.settings import parse
from tests.support.helpers import ingest, normalize
from tests.support.smtp_support import REPO

EX_CONFIG = 78
MAIL = (
    b"From: Ann <ann@example.org>\r\nTo: help@support.example.com\r\n"
    b"Subject: Locked out\r\nMessage-ID: <unkeyed-1@example.org>\r\n\r\nHelp me log in.\r\n"
)


def unkeyed_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PARITY_")}


def parity(settings: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parity", "--settings", str(settings), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def write_settings(path: Path, url: str, *, allow_unkeyed: bool | None = None) -> Path:
    text = f'[database]\nurl = "{url}"\nurl_env = "PARITY_TEST_NO_SUCH_VARIABLE"\n'
    text += "\n[connectors.smtp]\nport = 0\nenabled = false\n[connectors.web]\nenabled = false\n"
    if allow_unkeyed is not None:
        text += f"\n[audit]\nallow_unkeyed = {str(allow_unkeyed).lower()}\n"
    path.write_text(text)
    return path


# Every command that writes audit rows (or recomputes their HMACs), as an operator types it.
WRITERS = [
    ["run"],
    ["run", "--only", "smtp"],
    ["ingest", "--channel", "email", "MAIL"],
    ["normalize"],
    ["import", "mbox", "MBOX"],
    ["deadletters", "replay", "--all"],
    ["outbox", "send"],
    ["users", "add", "ann", "--role", "agent"],
    ["users", "token", "ann"],
    ["cases", "merge", "C-1", "C-2"],
    ["cases", "unmerge", "1"],
    ["contacts", "link", "email", "a@example.org", "--to-contact", "1"],
    ["contacts", "unlink", "email", "a@example.org"],
    ["audit", "verify"],
]


@pytest.mark.parametrize(
    ("argv", "allow"),
    # Each command with [audit] left out, and `run` with allow_unkeyed = false said outright.
    [(argv, None) for argv in WRITERS] + [(["run"], False)],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_without_a_key_each_writing_command_stops_before_the_store(
    argv: list[str], allow: bool | None, tmp_path: Path
) -> None:
    mail = tmp_path / "mail.eml"
    mail.write_bytes(MAIL)
    (tmp_path / "box.mbox").write_bytes(b"")
    argv = [
        str(mail) if a == "MAIL" else str(tmp_path / "box.mbox") if a == "MBOX" else a for a in argv
    ]
    database = tmp_path / "parity.db"
    settings = write_settings(
        tmp_path / "settings.toml", f"sqlite:///{database}", allow_unkeyed=allow
    )
    result = parity(settings, *argv, env={**unkeyed_env(), "PARITY_PASSWORD": "pw-0123456789ab"})
    assert result.returncode == EX_CONFIG, (result.stdout, result.stderr)
    assert "PARITY_AUDIT_KEY is not set" in result.stderr
    assert "allow_unkeyed" in result.stderr  # the way out is named
    # Stopped at start-up: `run` and `users add` would have created and migrated the store.
    assert not database.exists()


def test_read_only_commands_run_without_a_key(db_url: str, tmp_path: Path) -> None:
    settings = write_settings(tmp_path / "settings.toml", db_url)
    for argv in (["cases", "list", "--json"], ["audit", "checkpoint"], ["db", "current"]):
        result = parity(settings, *argv, env=unkeyed_env())
        assert result.returncode == 0, (argv, result.stderr)


def test_allow_unkeyed_runs_and_its_rows_do_not_verify_under_a_real_key(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    mail = tmp_path / "mail.eml"
    mail.write_bytes(MAIL)
    settings = write_settings(tmp_path / "settings.toml", db_url, allow_unkeyed=True)
    ingested = parity(settings, "ingest", "--channel", "email", str(mail), env=unkeyed_env())
    assert ingested.returncode == 0, ingested.stderr
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(AuditLog)).scalar_one()
    assert rows > 0  # the acknowledgement decision, at least
    assert parity(settings, "audit", "verify", env=unkeyed_env()).returncode == 0
    # The same rows checked under a real key do not match: the constant was the key.
    keyed = {**unkeyed_env(), "PARITY_AUDIT_KEY": "a-real-key-" + "7" * 40}
    verified = parity(settings, "audit", "verify", env=keyed)
    assert verified.returncode == 1 and "NOT intact" in verified.stdout


def test_the_daemon_entry_without_a_key_exits_78_and_names_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`daemon.run` checks too, whoever calls it."""
    monkeypatch.delenv(audit.KEY_ENV)
    monkeypatch.setattr(audit, "_unkeyed_allowed", False)
    settings = parse({"database": {"url": f"sqlite:///{tmp_path / 'x.db'}"}})
    assert daemon.run(settings) == EX_CONFIG
    assert "PARITY_AUDIT_KEY is not set" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_a_worker_without_a_key_leaves_input_pending_never_a_dead_letter(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = (
        b"From: Bo <bo@example.org>\r\nTo: help@support.example.com\r\n"
        b"Subject: Reset\r\nMessage-ID: <unkeyed-2@example.org>\r\n\r\nPlease reset.\r\n"
    )
    stored = ingest(engine, raw)
    monkeypatch.delenv(audit.KEY_ENV)
    monkeypatch.setattr(audit, "_unkeyed_allowed", False)
    with pytest.raises(audit.AuditKeyMissing):
        normalize(engine)
    with engine.connect() as conn:
        assert (
            conn.execute(select(Intake.state).where(Intake.id == stored.intake_id)).scalar_one()
            == "pending"
        )
        assert conn.execute(select(func.count()).select_from(DeadLetter)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(AuditLog)).scalar_one() == 0
    # The key is set and the lease of the worker that gave up runs out: it goes through.
    monkeypatch.setenv(audit.KEY_ENV, "now-configured-" + "k" * 40)
    with engine.begin() as conn:
        conn.execute(
            update(Intake)
            .where(Intake.id == stored.intake_id)
            .values(claimed_until=utcnow() - timedelta(seconds=1))
        )
    [outcome] = normalize(engine)
    assert outcome.state == "done"


@pytest.mark.parametrize(
    ("key", "allow", "status", "says"),
    [
        (None, None, 1, "PROBLEM [audit] PARITY_AUDIT_KEY is not set"),
        (None, True, 0, "warning [audit] [audit] allow_unkeyed = true and PARITY_AUDIT_KEY"),
        ("k" * 48, True, 0, "warning [audit] [audit] allow_unkeyed = true is a development"),
        ("k" * 48, None, 0, "no problems found"),
    ],
)
def test_doctor_names_the_missing_key_and_the_development_setting(
    key: str | None,
    allow: bool | None,
    status: int,
    says: str,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if key is None:
        monkeypatch.delenv(audit.KEY_ENV)
    else:
        monkeypatch.setenv(audit.KEY_ENV, key)
    settings = write_settings(tmp_path / "settings.toml", db_url, allow_unkeyed=allow)
    assert main(["--settings", str(settings), "doctor"]) == status
    assert says in capsys.readouterr().out
