"""The audit log's HMAC chain: edits, deletions and a log cut short are caught and named."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import delete, update

from inbox import audit
from inbox.models import AuditLog


def _append(engine, n: int) -> list[int]:
    ids = []
    with engine.begin() as conn:
        for i in range(n):
            ids.append(
                audit.append(
                    conn,
                    actor=f"agent{i % 3}",
                    action="case.status",
                    case_id=None,
                    before={"status": "new"},
                    after={"status": "open", "n": i},
                )
            )
    return ids


def test_intact_chain_verifies(engine):
    ids = _append(engine, 5)
    with engine.connect() as conn:
        result = audit.verify(conn)
    assert result.ok and result.rows == 5 and result.newest_id == ids[-1]


def test_changed_row_is_named(engine):
    ids = _append(engine, 6)
    with engine.begin() as conn:
        conn.execute(update(AuditLog).where(AuditLog.id == ids[2]).values(actor="mallory"))
    with engine.connect() as conn:
        result = audit.verify(conn)
    assert not result.ok and result.first_bad_id == ids[2]
    assert "changed" in (result.problem or "")


def test_deleted_row_is_caught_at_its_successor(engine):
    ids = _append(engine, 6)
    with engine.begin() as conn:
        conn.execute(delete(AuditLog).where(AuditLog.id == ids[3]))
    with engine.connect() as conn:
        result = audit.verify(conn)
    assert not result.ok and result.first_bad_id == ids[4]


def test_log_cut_short_is_caught_with_a_checkpoint(engine, db_url, tmp_path):
    ids = _append(engine, 4)
    with engine.connect() as conn:
        saved = audit.checkpoint(conn)
    assert saved["id"] == ids[-1]
    with engine.begin() as conn:
        conn.execute(delete(AuditLog).where(AuditLog.id >= ids[2]))
    with engine.connect() as conn:
        assert audit.verify(conn).ok  # without a checkpoint a clean cut looks whole
        cut = audit.verify(conn, saved)
    assert not cut.ok and cut.first_bad_id == ids[-1] and "cut short" in (cut.problem or "")

    # The same through the command line, as an operator would run it.
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[database]\nurl = "{db_url}"\n')
    checkpoint_file = tmp_path / "checkpoint.json"
    checkpoint_file.write_text(json.dumps(saved))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "parity",
            "--settings",
            str(settings),
            "audit",
            "verify",
            "--checkpoint",
            str(checkpoint_file),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert json.loads(run.stdout)["first_bad_id"] == ids[-1]
