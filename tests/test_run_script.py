"""The run command exactly as README gives it: `./scripts/run`, a mail by smtplib, the queue."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
from email.message import EmailMessage

from tests.support.smtp_support import (
    REPO,
    STOP_WITHIN_S,
    ParityProcess,
    daemon_settings,
    wait_for,
)


def test_scripts_run_accepts_a_mail_and_cases_list_shows_it(db_url, tmp_path):
    settings, smtp_port, _ = daemon_settings(tmp_path, db_url)
    # A first-time user: no audit key in the environment (the script makes a development one).
    env = {"PARITY_SETTINGS": str(settings), "PARITY_AUDIT_KEY": ""}
    parity = ParityProcess([str(REPO / "scripts" / "run")], tmp_path / "run.log", env=env)
    try:
        parity.wait_for_port(smtp_port, timeout=120)  # bootstrap checks, then migrate
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = (
            "Ann <ann@example.org>",
            "help@support.example.com",
            "Locked out",
        )
        m.set_content("I can't log in since my phone was stolen.")
        with smtplib.SMTP("127.0.0.1", smtp_port) as s:
            assert s.send_message(m) == {}

        def listed() -> list[dict[str, object]]:
            result = subprocess.run(
                [str(REPO / ".venv" / "bin" / "parity"), "cases", "list", "--json"],
                env={**env, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert result.returncode == 0, result.stderr
            cases: list[dict[str, object]] = json.loads(result.stdout)
            return cases

        (case,) = wait_for(listed, timeout=60, message="the case in `parity cases list`")
        assert case["subject"] == "Locked out" and case["status"] == "new"
        assert case["channels"] == ["email"]
        assert case["contact"]["identities"][0]["handle"] == "ann@example.org"
        parity.signal(signal.SIGTERM)
        assert parity.wait(timeout=STOP_WITHIN_S) == 0, parity.log()
    finally:
        parity.kill()
    assert "database at revision" in parity.log()  # ./scripts/run migrated first
    # The development audit key: kept for the next run, readable by its owner only, and the
    # one the running Parity chained the audit log with.
    key_file = REPO / "var" / "audit-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert len(key) == 64 and int(key, 16) >= 0
    verified = subprocess.run(
        [str(REPO / ".venv" / "bin" / "parity"), "audit", "verify", "--json"],
        env={**env, "PARITY_AUDIT_KEY": key, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and report["rows"] > 0
