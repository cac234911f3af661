"""Dead letters: shown with their error and raw bytes, replayed after a fix, idempotently.

Driven through the `parity` command line on SQLite and PostgreSQL. The "fix" is a real one an
operator makes: a MIME-part cap that was too low is raised in settings.
"""

from __future__ import annotations

import base64
import json
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import func, insert, select

from inbox.models import Blob, Case, DeadLetter, Message, Outbox, utcnow
from normalizer.intake import sha256
from parity.cli import main
from tests.support.dns_server import mail_auth_toml
from tests.support.helpers import ingest


def _settings(tmp_path: Path, db_url: str, name: str, extra: str = "") -> str:
    path = tmp_path / name
    path.write_text(
        f'[database]\nurl = "{db_url}"\nurl_env = "PARITY_TEST_UNSET_URL"\n'
        + mail_auth_toml()
        + extra
    )
    return str(path)


def _photos() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ann Example <ann@example.org>"
    msg["To"] = "help@support.example.com"
    msg["Subject"] = "Photos of my ID"
    msg["Message-ID"] = "<photos-1@example.org>"
    msg.set_content("Here are the photos you asked for.")
    for i in range(3):
        msg.add_attachment(b"\x89PNG" + bytes([i]) * 64, "image", "png", filename=f"id-{i}.png")
    return bytes(msg)


GARBAGE = b"\x00\x01\x02 this is not a message at all"


def _count(engine, model, *where) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar())


def _run(capsys, *argv: str, expect: int = 0) -> str:
    assert main(list(argv)) == expect
    out: str = capsys.readouterr().out
    return out


def test_show_and_replay_after_a_fix(engine, db_url, tmp_path, capsys):
    strict = _settings(tmp_path, db_url, "strict.toml", "[normalizer]\nmax_mime_parts = 3\n")
    # `parity ingest FILE` has no SMTP session to authenticate the sender by; this test is
    # about replay, whose acknowledgement must still go out once the mail becomes a case.
    fixed = _settings(
        tmp_path,
        db_url,
        "fixed.toml",
        "[acknowledgements.email]\nrequire_authenticated_sender = false\n",
    )
    photos = tmp_path / "photos.eml"
    photos.write_bytes(_photos())
    out = _run(capsys, "--settings", strict, "ingest", str(photos), "--channel", "email", expect=2)
    assert json.loads(out)["state"] == "dead"
    ingest(engine, GARBAGE)
    assert main(["--settings", fixed, "normalize"]) == 0
    capsys.readouterr()

    out = _run(capsys, "--settings", fixed, "deadletters", "list", "--json")
    letters = json.loads(out)
    assert [(d["id"], d["error"]) for d in letters] == [
        (1, "more than 3 MIME parts"),
        (2, "no headers: this is not an email message"),
    ]

    out = _run(capsys, "--settings", fixed, "deadletters", "show", "1", "--json")
    shown = json.loads(out)
    assert shown["error"] == "more than 3 MIME parts"
    assert base64.b64decode(shown["raw_base64"]) == photos.read_bytes()
    assert "Subject: Photos of my ID" in shown["raw_text"]
    out = _run(capsys, "--settings", fixed, "deadletters", "show", "1")
    assert "error: more than 3 MIME parts" in out and "Photos of my ID" in out

    # The fixed settings turn the first into a message; the second still fails.
    out = _run(capsys, "--settings", fixed, "deadletters", "replay", "--all", "--json")
    first = json.loads(out)
    assert [(r["id"], r["outcome"]) for r in first] == [(1, "resolved"), (2, "still failing")]
    assert first[0]["case"] == "C-000001"
    assert first[1]["error"] == "no headers: this is not an email message"
    with engine.connect() as conn:
        message = conn.execute(select(Message)).one()
    assert message.subject == "Photos of my ID"
    assert _count(engine, Outbox) == 1  # the person never heard back: acknowledged now

    state = _snapshot(engine)
    # Again: nothing more happens to the resolved one, and the failing one stays one letter.
    out = _run(capsys, "--settings", fixed, "deadletters", "replay", "1", "--json")
    assert json.loads(out) == [
        {"id": 1, "outcome": "already resolved", "case": "C-000001", "error": None}
    ]
    out = _run(capsys, "--settings", fixed, "deadletters", "replay", "--all", "--json")
    assert [r["outcome"] for r in json.loads(out)] == ["still failing"]
    assert _snapshot(engine) == state
    with engine.connect() as conn:
        rows = list(conn.execute(select(DeadLetter).order_by(DeadLetter.id)))
    assert [(r.id, r.resolved, r.replays) for r in rows] == [(1, True, 1), (2, False, 2)]

    out = _run(capsys, "--settings", fixed, "deadletters", "list", "--json")
    assert [d["id"] for d in json.loads(out)] == [2]
    assert main(["--settings", fixed, "deadletters", "replay", "99"]) == 1


def _snapshot(engine) -> tuple[int, int, int, int]:
    return (
        _count(engine, Message),
        _count(engine, Case),
        _count(engine, Outbox),
        _count(engine, DeadLetter),
    )


def test_a_dead_letter_stored_without_intake_goes_through_intake(engine, db_url, tmp_path, capsys):
    """A connector may dead-letter a payload it could not even store as input."""
    raw = (
        b"From: Bea <bea@example.org>\r\nTo: help@support.example.com\r\n"
        b"Subject: Webhook retry\r\nMessage-ID: <bea-1@example.org>\r\n\r\nHello\r\n"
    )
    with engine.begin() as conn:
        conn.execute(
            insert(Blob).values(sha256=sha256(raw), size=len(raw), data=raw, created_at=utcnow())
        )
        conn.execute(
            insert(DeadLetter).values(
                intake_id=None,
                connector="smtp",
                channel="email",
                raw_sha256=sha256(raw),
                error="handler crashed",
                created_at=utcnow(),
                replays=0,
                resolved=False,
            )
        )
    fixed = _settings(tmp_path, db_url, "fixed.toml")
    out = _run(capsys, "--settings", fixed, "deadletters", "replay", "1", "--json")
    assert [r["outcome"] for r in json.loads(out)] == ["resolved"]
    out = _run(capsys, "--settings", fixed, "deadletters", "replay", "1", "--json")
    assert [r["outcome"] for r in json.loads(out)] == ["already resolved"]
    assert _count(engine, Message) == 1
