"""`parity import mbox|maildir`: history through intake, idempotent, never acknowledged.

The mbox is generated here: 10,000 messages on SQLite; 1,000 on PostgreSQL, where each message
costs about twice as much and the full size would take most of this suite's time budget (the
per-message cost at scale is measured by bench/import_mbox.py instead).
"""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

import pytest
from sqlalchemy import func, select

from inbox.models import AuditLog, Case, DeadLetter, Intake, Message, Outbox
from normalizer.backfill import steps
from parity.cli import main
from tests.support.helpers import ingest_and_normalize

SIZE = {"sqlite": 10_000, "postgresql": 1_000}


def _message(i: int, trace: str = "") -> str:
    return (
        f"{trace}"
        f"From: Person {i % 997} <p{i % 997}@example.org>\n"
        "To: help@support.example.com\n"
        f"Subject: Question {i}\n"
        f"Message-ID: <hist-{i}@example.org>\n"
        "Date: Mon, 02 Nov 2026 10:00:00 +0000\n"
        "\n"
        f"Body of message {i}.\n"
    )


def write_mbox(path: Path, size: int) -> dict[str, int]:
    """An mbox of `size` entries, and what importing it must report (counted while writing)."""
    expected = {"read": 0, "imported": 0, "duplicates": 0, "dead_lettered": 0}
    previous = ""
    with path.open("w") as out:
        for i in range(size):
            if i % 500 == 499:  # the very same bytes again (an export that overlaps)
                text, kind = previous, "duplicates"
            elif i % 500 == 498:  # the same mail by another route: other trace headers
                text = _message(i - 2, trace="Received: from mx2.example.org by mx3\n")
                kind = "duplicates"
            elif i % 2000 == 1000:  # not a message at all: dead-lettered with its bytes
                text, kind = f"line {i} is no header\nand there are none\n", "dead_lettered"
            else:
                text, kind = _message(i), "imported"
            out.write("From MAILER-DAEMON Mon Nov  2 10:00:00 2026\n" + text + "\n")
            previous = text
            expected["read"] += 1
            expected[kind] += 1
    return expected


def _settings(tmp_path: Path, db_url: str) -> str:
    path = tmp_path / "settings.toml"
    path.write_text(f'[database]\nurl = "{db_url}"\nurl_env = "PARITY_TEST_UNSET_URL"\n')
    return str(path)


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            model.__tablename__: int(
                conn.execute(select(func.count()).select_from(model)).scalar_one()
            )
            for model in (Intake, Message, Case, DeadLetter, Outbox)
        }


def _import(capsys, settings: str, fmt: str, path: Path) -> tuple[dict[str, int], str]:
    assert main(["--settings", settings, "import", fmt, str(path), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary.pop("left_to_worker") == 0
    return summary, captured.err


@pytest.mark.slow
def test_an_mbox_imports_with_a_progress_bar_and_again_adds_nothing(
    engine, db_url, tmp_path, capsys, request
):
    size = SIZE[request.node.callspec.params["db_url"]]
    path = tmp_path / "history.mbox"
    expected = write_mbox(path, size)
    settings = _settings(tmp_path, db_url)

    summary, progress = _import(capsys, settings, "mbox", path)
    assert summary == expected
    assert "importing history.mbox" in progress and f"{size}/{size}" in progress
    counts = _counts(engine)
    assert counts["messages"] == expected["imported"]
    assert counts["dead_letters"] == expected["dead_lettered"]
    assert counts["outbox"] == 0  # history is never acknowledged
    with engine.connect() as conn:
        reasons = set(conn.execute(select(Case.ack_state, Case.ack_reason)).all())
        audit = [a for (a,) in conn.execute(select(AuditLog.action).order_by(AuditLog.id))]
    assert reasons == {("withheld", "imported history is never acknowledged")}
    assert audit == ["import.started", "import.finished"]

    again, _ = _import(capsys, settings, "mbox", path)
    assert again == {
        "read": size,
        "imported": 0,
        "duplicates": size,
        "dead_lettered": 0,
    }
    assert _counts(engine) == counts


def test_a_maildir_imports_and_meets_mail_taken_in_live(engine, db_url, tmp_path, capsys):
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    keys = [box.add(_message(i).encode()) for i in range(30)]
    for key in keys[:10]:  # read mail lives in cur/, unread in new/
        msg = box[key]
        msg.set_subdir("cur")
        msg.add_flag("S")
        box[key] = msg
    # One of them already came in live, by SMTP, with its own trace headers.
    live = ingest_and_normalize(
        engine,
        _message(7, trace="Received: from mx.example.org by parity\n").encode(),
        envelope={"mail_from": "p7@example.org", "rcpt_tos": ["help@support.example.com"]},
    )
    before = _counts(engine)
    settings = _settings(tmp_path, db_url)

    summary, progress = _import(capsys, settings, "maildir", tmp_path / "Maildir")
    assert summary == {"read": 30, "imported": 29, "duplicates": 1, "dead_lettered": 0}
    assert "30/30" in progress
    counts = _counts(engine)
    assert counts["messages"] == before["messages"] + 29
    assert counts["outbox"] == before["outbox"] == 1  # only the live mail was acknowledged
    with engine.connect() as conn:
        receipts = conn.execute(
            select(func.count()).select_from(Intake).where(Intake.message_id == live.message_id)
        ).scalar_one()
    assert receipts == 2  # the live copy and the imported copy: one message, two deliveries

    again, _ = _import(capsys, settings, "maildir", tmp_path / "Maildir")
    assert again == {"read": 30, "imported": 0, "duplicates": 30, "dead_lettered": 0}
    assert _counts(engine) == counts


def test_a_missing_file_is_a_clear_error(tmp_path, db_url, capsys):
    settings = _settings(tmp_path, db_url)
    assert main(["--settings", settings, "import", "mbox", str(tmp_path / "nope.mbox")]) == 2
    assert "no such mbox file" in capsys.readouterr().err
    assert main(["--settings", settings, "import", "maildir", str(tmp_path)]) == 2
    assert "not a Maildir" in capsys.readouterr().err


# --- an import's steps: at most so many messages and so many bytes, in order -----------------

A, B, C = b"a" * 10, b"b" * 30, b"c" * 70


@pytest.mark.parametrize(
    ("messages", "max_count", "max_bytes", "expected"),
    [
        ([], 3, 100, []),
        ([A], 3, 100, [[A]]),
        # By count: 3, 3, then the 1 left.
        ([A] * 7, 3, 1000, [[A, A, A], [A, A, A], [A]]),
        # By bytes: 10 + 30 + 70 = 110 > 100, so C starts a step of its own.
        ([A, B, C, A], 10, 100, [[A, B], [C, A]]),
        # Exactly max_bytes fits: 30 + 70 = 100.
        ([B, C, A], 10, 100, [[B, C], [A]]),
        # A message larger than max_bytes is a step alone, never dropped or split.
        ([A, C, A], 10, 50, [[A], [C], [A]]),
        ([C], 10, 50, [[C]]),
        # Both limits: count stops the first step, bytes the second.
        ([A, A, B, C, A], 2, 90, [[A, A], [B], [C, A]]),
    ],
)
def test_an_import_is_cut_into_steps_bounded_by_count_and_bytes(
    messages: list[bytes], max_count: int, max_bytes: int, expected: list[list[bytes]]
) -> None:
    got = list(steps(iter(messages), max_count, max_bytes))
    assert got == expected
    assert [raw for step in got for raw in step] == messages  # in order, nothing lost


def test_a_step_of_no_messages_is_refused() -> None:
    with pytest.raises(ValueError, match="max_count"):
        list(steps(iter([b"x"]), 0, 100))
