"""Erasure of a contact and retention of resolved cases (issue 24), on SQLite and PostgreSQL.

A contact writes by email (with an attachment another contact also sent) and by SMS; after
`parity contacts erase`, the database file (SQLite) or a pg_dump (PostgreSQL) holds none of
their address, name, phone number or words; the shared blob survives; `parity audit verify`
passes; the manager report gives the same figures as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import Engine, insert, select, update

from inbox import audit, csat, erasure, report_days
from inbox.models import (
    AlertEvent,
    Attachment,
    AuditChain,
    AuditLog,
    Blob,
    Case,
    CaseMerge,
    ConnectorState,
    Contact,
    CsatSurvey,
    Identity,
    Message,
    utcnow,
)
from normalizer.message import CHANNELS
from parity import cli
from tests.support.helpers import ingest, ingest_and_normalize, normalize

ADDRESS = "zelda.quintanilla@example.org"
# The key the suite runs with (tests/conftest.py), to compute attestations independently.
AUDIT_KEY = os.environ["PARITY_AUDIT_KEY"].encode()
NAME = "Zelda Quintanilla"
PHONE = "+14155550177"
# A word no other message, template or setting contains: if any index or page still has
# it, the grep finds it.
WORD = "xylophonicorn"
PHRASE = f"my {WORD} kettle exploded on Tuesday"
SMS_WORD = "quokkablaster"
CSAT_WORD = "marmalizarding"
SHARED = b"%PDF-1.4 the same warranty leaflet everybody sends us\n" * 20
OTHER = "bob.other@example.org"
OTHER_TEXT = "Bob asks about his invoice number 5531"


def email_with_attachment(sender: str, name: str, body: str, msgid: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"{name} <{sender}>"
    mail["To"] = "help@support.example.com"
    mail["Subject"] = f"Help please ({msgid[:6]})"
    mail["Message-ID"] = f"<{msgid}@mail.example>"
    mail["Date"] = "Fri, 20 Nov 2026 10:00:00 +0000"
    mail.set_content(body)
    mail.add_attachment(SHARED, maintype="application", subtype="pdf", filename="warranty.pdf")
    return bytes(mail)


def sms_post(sid: str, number: str, body: str) -> bytes:
    """What the SMS webhook stores: the form body Twilio posted (signature checked by the
    connector, not the subject here)."""
    return urlencode(
        {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": number,
            "To": "+14155550100",
            "Body": body,
            "NumMedia": "0",
        }
    ).encode()


def their_sms(engine: Engine, sid: str) -> None:
    """Store (not file) an SMS from their number that names their word."""
    ingest(
        engine,
        sms_post(sid, PHONE, f"It is me again, the {SMS_WORD} one. Call me."),
        channel="sms",
        connector="twilio",
        source_key=f"sms:{sid}",
        envelope={"kind": "sms", "address": "+14155550100"},
    )


def settings_file(tmp_path: Path, db_url: str, extra: str = "") -> str:
    path = tmp_path / "settings.toml"
    path.write_text(f'[database]\nurl = "{db_url}"\nurl_env = "PARITY_TEST_NO_SUCH_VAR"\n{extra}')
    return str(path)


def report(engine: Engine, now: datetime) -> dict[str, Any]:
    with engine.connect() as conn:
        return report_days.compute(
            conn, now=now, since=now - timedelta(days=400), until=now, threshold=2.0
        )


def store_bytes(engine: Engine, db_url: str) -> bytes:
    """Everything the store holds, as bytes to grep: the SQLite file (and its WAL), or a
    plain pg_dump of the PostgreSQL database (bytea comes out as hex: searched for too)."""
    if db_url.startswith("sqlite"):
        engine.dispose()
        path = Path(db_url.removeprefix("sqlite:///"))
        data = path.read_bytes()
        for suffix in ("-wal", "-journal"):
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                data += extra.read_bytes()
        return data
    parts = urlsplit(db_url.replace("postgresql+psycopg", "postgresql"))
    dump = subprocess.run(
        [
            "pg_dump",
            "-h",
            parts.hostname or "127.0.0.1",
            "-p",
            str(parts.port or 5432),
            "-U",
            parts.username or "postgres",
            "--no-owner",
            parts.path.lstrip("/"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert b"COPY public.messages" in dump.stdout  # the dump has the data, not only schema
    return dump.stdout


def found(data: bytes, needle: str) -> bool:
    low = data.lower()
    raw = needle.lower().encode()
    return raw in low or raw.hex().encode() in low


def test_erasing_a_contact_leaves_nothing_of_them(
    db_url: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_file(tmp_path, db_url)
    theirs = ingest_and_normalize(
        engine, email_with_attachment(ADDRESS, NAME, f"Hello, {PHRASE}.", "zq1")
    )
    bobs = ingest_and_normalize(
        engine, email_with_attachment(OTHER, "Bob Other", OTHER_TEXT, "bo1")
    )
    their_sms(engine, "SM" + "7a" * 16)
    normalize(engine)
    with engine.connect() as conn:
        contact_id = conn.execute(
            select(Case.contact_id).where(Case.id == theirs.case_id)
        ).scalar_one()
        sms_case = conn.execute(select(Case.id).where(Case.channel == "sms")).scalar_one()
        assert conn.execute(select(Message.text).where(Message.case_id == sms_case)).scalar_one()
    # An agent links the number to the same person (an audit row about no case names it).
    base = ["--settings", settings]
    assert (
        cli.main([*base, "contacts", "link", "phone", PHONE, "--to-contact", str(contact_id)]) == 0
    )
    # The email case is resolved, so the report has first response and resolution times.
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            update(Case)
            .where(Case.id == theirs.case_id)
            .values(
                status="resolved",
                first_response_at=now - timedelta(minutes=30),
                resolved_at=now - timedelta(minutes=5),
            )
        )
    # Zelda answers the survey of the resolved case with a comment (the rating page's path).
    assert theirs.case_id is not None
    survey_id = asked_survey(engine, theirs.case_id, contact_id, now - timedelta(minutes=4))
    assert csat.record_rating(
        engine, survey_id, 2, f"The {CSAT_WORD} was rude, Zelda Quintanilla", 7, now=now
    )
    # A relay's refusal quoting them in a connector's state, an alert's detail naming them.
    with engine.begin() as conn:
        conn.execute(
            insert(ConnectorState).values(
                connector="mail-relay",
                instance="test",
                last_error=f"550 5.1.1 <{ADDRESS}>: Recipient address rejected",
                details={"last_refusal": {"to": PHONE, "code": 550}, "queued": 3},
            )
        )
        conn.execute(
            insert(AlertEvent).values(
                key="unanswered:email:2026-12-07T12",
                condition="unanswered",
                subject="email",
                detail={"oldest": f"Case from {NAME}", "count": 12},
            )
        )
    before = report(engine, now)
    data = store_bytes(engine, db_url)
    for needle in (ADDRESS, NAME, PHONE, WORD, SMS_WORD, CSAT_WORD):
        assert found(data, needle), f"{needle} should be stored before the erasure"

    assert cli.main([*base, "contacts", "erase", ADDRESS]) == 2  # no --yes: nothing done
    assert cli.main([*base, "contacts", "erase", "no-such@x.example", "--yes"]) == 1
    capsys.readouterr()
    assert cli.main([*base, "contacts", "erase", ADDRESS, "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"erased contact {contact_id}: 2 cases" in out
    assert "1 blobs removed" not in out  # the raw mail, the raw SMS: more than one

    data = store_bytes(engine, db_url)
    for needle in (
        ADDRESS,
        NAME,
        "Quintanilla",
        PHONE,
        "4155550177",
        WORD,
        PHRASE,
        SMS_WORD,
        CSAT_WORD,
    ):
        assert not found(data, needle), f"{needle} is still in the store"
    with engine.connect() as conn:
        state = conn.execute(
            select(ConnectorState.last_error, ConnectorState.details).where(
                ConnectorState.connector == "mail-relay"
            )
        ).one()
        alert = conn.execute(select(AlertEvent.detail)).scalar_one()
    # What does not name them is kept for the operators.
    assert state.details == {"last_refusal": {"to": "(erased)", "code": 550}, "queued": 3}
    assert state.last_error == "(erased)" and alert == {"oldest": "(erased)", "count": 12}
    # Bob's mail and the attachment both sent are untouched.
    assert found(data, OTHER) and found(data, "invoice number 5531")
    with engine.connect() as conn:
        shared = hashlib.sha256(SHARED).hexdigest()
        assert conn.execute(select(Blob.size).where(Blob.sha256 == shared)).scalar_one() == len(
            SHARED
        )
        assert (
            conn.execute(
                select(Attachment.sha256).where(Attachment.message_id == bobs.message_id)
            ).scalar_one()
            == shared
        )
        assert (
            conn.execute(select(Contact.erased_at).where(Contact.id == contact_id)).scalar_one()
            is not None
        )
        handles = (
            conn.execute(select(Identity.handle).where(Identity.contact_id == contact_id))
            .scalars()
            .all()
        )
        assert len(handles) == 2 and all(h.startswith("erased:") for h in handles)
        erased_rows = conn.execute(
            select(AuditLog.action, AuditLog.after).where(
                AuditLog.action.in_(("contact.erased", "case.erased"))
            )
        ).all()
    assert sorted(a for a, _ in erased_rows) == ["case.erased", "case.erased", "contact.erased"]
    contact_row = next(after for action, after in erased_rows if action == "contact.erased")
    assert contact_row["cases"] == 2 and contact_row["messages"] == 2

    # The chain verifies after values were swapped for their digests, in process and by CLI.
    with engine.connect() as conn:
        assert audit.verify(conn).ok
    assert cli.main([*base, "audit", "verify"]) == 0
    # The figures did not move: timing facts, channels and visibilities stayed, and the
    # survey's rating (only its comment went).
    assert report(engine, now) == before
    with engine.connect() as conn:
        survey = conn.execute(
            select(CsatSurvey.rating, CsatSurvey.comment).where(CsatSurvey.id == survey_id)
        ).one()
    assert (survey.rating, survey.comment) == (2, "")


def asked_survey(engine: Engine, case_id: int, contact_id: int, at: datetime) -> int:
    """A link survey asked of the case's contact (as `parity csat plan` records one)."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(CsatSurvey)
                .values(
                    case_id=case_id,
                    contact_id=contact_id,
                    case_channel="email",
                    channel="email",
                    side="private",
                    mode="link",
                    state="asked",
                    language="en",
                    asked_at=at,
                )
                .returning(CsatSurvey.id)
            ).scalar_one()
        )


def test_an_erased_value_cannot_be_changed_again(engine: Engine) -> None:
    """The verifier still catches an edit: an erased marker holds the digest of the value,
    and another digest there breaks the row."""
    ingest_and_normalize(engine, email_with_attachment(ADDRESS, NAME, PHRASE, "zq2"))
    with engine.connect() as conn:
        contact_id = erasure.find_contact(conn, ADDRESS.upper())
    erasure.erase_contact(engine, contact_id, actor="test")
    with engine.begin() as conn:
        row = conn.execute(
            select(AuditLog.id, AuditLog.after).where(AuditLog.action == "acknowledgement.queued")
        ).one()
        assert audit.is_erased(row.after["recipient"])
        forged = {**row.after, "recipient": {audit.ERASED: "0" * 64}}
        conn.execute(update(AuditLog).where(AuditLog.id == row.id).values(after=forged))
    with engine.connect() as conn:
        result = audit.verify(conn)
    assert result.first_bad_id == row.id


def _as_written_before_0020(conn: Any, row_id: int) -> Any:
    """Turn a fresh row (the newest of its chain) into the form-1 row migration 0020 left:
    hashed over its values, its chain's head following it."""
    row = conn.execute(select(AuditLog).where(AuditLog.id == row_id)).one()
    old = audit.row_hmac(
        row.prev_hmac, row.at, row.actor, row.action, row.case_id, row.before, row.after,
        chain=row.chain, seq=row.seq, form=1,
    )  # fmt: skip
    conn.execute(update(AuditLog).where(AuditLog.id == row_id).values(form=1, hmac=old))
    conn.execute(update(AuditChain).where(AuditChain.chain == row.chain).values(hmac=old))
    return conn.execute(select(AuditLog).where(AuditLog.id == row_id)).one()


def _attestation(row: Any, before: Any, after: Any) -> str:
    """The form-3 attestation as docs/architecture/audit.md defines it, written out here."""

    def leaf(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {audit.ERASED}:
            return value
        if isinstance(value, dict):
            return {k: leaf(v) for k, v in value.items()}
        if isinstance(value, list):
            return [leaf(v) for v in value]
        body = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        digest = hmac.new(AUDIT_KEY, b"leaf\x00" + body.encode(), hashlib.sha256).hexdigest()
        return {audit.ERASED: digest}

    fields = [
        "attest", row.prev_hmac, row.hmac, row.at.isoformat(timespec="microseconds"),
        row.actor, row.action, row.case_id,
        None if before is None else leaf(before), None if after is None else leaf(after),
        row.chain, row.seq, {"form": 3},
    ]  # fmt: skip
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(AUDIT_KEY, body.encode(), hashlib.sha256).hexdigest()


def test_a_row_written_before_0020_is_checked_erased_and_re_attested(engine: Engine) -> None:
    """A form-1 row hashes the values themselves. Erasure checks it, swaps the value for its
    digest, keeps the row's HMAC (the chain's links and the seals hold) and attests the row
    as it is now (form 3): the log verifies, a checkpoint from before still matches, and the
    person's address is gone from the row."""
    ingest_and_normalize(engine, email_with_attachment(ADDRESS, NAME, PHRASE, "zq4"))
    with engine.begin() as conn:
        row_id = audit.append(
            conn, actor="cli", action="identity.linked", after={"x": ADDRESS, "kept": "42"}
        )
        row = _as_written_before_0020(conn, row_id)
        assert row.chain == audit.NO_CASE and row.seq == 1  # the first row about no case
    with engine.begin() as conn:
        before_erasure = audit.checkpoint(conn)
    with engine.connect() as conn:
        assert audit.verify(conn).ok
        contact_id = erasure.find_contact(conn, ADDRESS)
    result = erasure.erase_contact(engine, contact_id, actor="test")
    assert result.audit_rows_before_0020 == 0
    with engine.connect() as conn:
        kept = conn.execute(select(AuditLog).where(AuditLog.id == row_id)).one()
        verified = audit.verify(conn, before_erasure)
    assert verified.ok, verified.problem
    assert kept.form == 3 and kept.hmac == row.hmac  # the link the next row names is kept
    assert ADDRESS not in json.dumps(kept.after) and kept.after["kept"] == "42"
    assert audit.is_erased(kept.after["x"])
    assert kept.attest == _attestation(kept, kept.before, kept.after)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"after": {"x": {"$erased": "0" * 64}, "kept": "42"}}, "an erased value swapped"),
        ({"after": {"x": "someone@else.example", "kept": "42"}}, "a value put back"),
        ({"after": None}, "the values dropped"),
        ({"actor": "eve"}, "another field edited"),
        ({"form": 1}, "passed off as an untouched form-1 row"),
        ({"form": 2}, "passed off as a form-2 row"),
        ({"attest": None}, "the attestation removed"),
    ],
)
def test_a_re_attested_row_still_shows_an_edit(
    engine: Engine, change: dict[str, Any], why: str
) -> None:
    ingest_and_normalize(engine, email_with_attachment(ADDRESS, NAME, PHRASE, "zq5"))
    with engine.begin() as conn:
        row_id = audit.append(
            conn, actor="cli", action="identity.linked", after={"x": ADDRESS, "kept": "42"}
        )
        _as_written_before_0020(conn, row_id)
        contact_id = erasure.find_contact(conn, ADDRESS)
    erasure.erase_contact(engine, contact_id, actor="test")
    with engine.begin() as conn:
        conn.execute(update(AuditLog).where(AuditLog.id == row_id).values(**change))
    with engine.connect() as conn:
        result = audit.verify(conn)
    assert result.first_bad_id == row_id, why


def test_a_form_1_row_edited_before_the_erasure_is_left_for_verify_to_name(
    engine: Engine,
) -> None:
    """Attesting a row that no longer matches its HMAC would launder the edit: it is left
    as it is, counted, and `audit verify` still names it."""
    ingest_and_normalize(engine, email_with_attachment(ADDRESS, NAME, PHRASE, "zq6"))
    with engine.begin() as conn:
        row_id = audit.append(conn, actor="cli", action="identity.linked", after={"x": ADDRESS})
        _as_written_before_0020(conn, row_id)
        conn.execute(
            update(AuditLog).where(AuditLog.id == row_id).values(after={"x": ADDRESS, "y": 1})
        )
        contact_id = erasure.find_contact(conn, ADDRESS)
    result = erasure.erase_contact(engine, contact_id, actor="test")
    assert result.audit_rows_before_0020 == 1
    with engine.connect() as conn:
        kept = conn.execute(select(AuditLog).where(AuditLog.id == row_id)).one()
        verified = audit.verify(conn)
    assert kept.form == 1 and kept.attest is None
    assert verified.first_bad_id == row_id


def test_their_message_merged_into_another_persons_case_is_erased_too(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    theirs = ingest_and_normalize(engine, email_with_attachment(ADDRESS, NAME, PHRASE, "zq3"))
    bobs = ingest_and_normalize(engine, email_with_attachment(OTHER, "Bob", OTHER_TEXT, "bo3"))
    assert theirs.case_id is not None and bobs.case_id is not None
    assert theirs.message_id is not None and bobs.message_id is not None
    with engine.connect() as conn:
        refs = {c.id: str(c.reference) for c in conn.execute(select(Case.id, Case.reference))}
    base = ["--settings", settings_file(tmp_path, db_url)]
    assert cli.main([*base, "cases", "merge", refs[theirs.case_id], refs[bobs.case_id]]) == 0
    # Her SMS case too, once the number is linked to her: the merge record keeps the
    # threading keys it moved ("phone:+1415..."), and the keys now thread Bob's case.
    their_sms(engine, "SM" + "7b" * 16)
    normalize(engine)
    with engine.connect() as conn:
        contact_id = conn.execute(
            select(Case.contact_id).where(Case.id == theirs.case_id)
        ).scalar_one()
        sms_case, sms_ref = conn.execute(
            select(Case.id, Case.reference).where(Case.channel == "sms")
        ).one()
    assert (
        cli.main([*base, "contacts", "link", "phone", PHONE, "--to-contact", str(contact_id)]) == 0
    )
    assert cli.main([*base, "cases", "merge", str(sms_ref), refs[bobs.case_id]]) == 0
    with engine.connect() as conn:
        moved = conn.execute(
            select(CaseMerge.moved).where(CaseMerge.source_case_id == sms_case)
        ).scalar_one()
    assert any(PHONE in ref for ref in moved["ref_values"])
    assert moved["signatures"]["source"] is not None
    with engine.connect() as conn:
        moved_to = conn.execute(
            select(Message.case_id).where(Message.id == theirs.message_id)
        ).scalar_one()
    assert moved_to == bobs.case_id
    assert cli.main([*base, "contacts", "erase", ADDRESS, "--yes"]) == 0
    with engine.connect() as conn:
        texts = dict(conn.execute(select(Message.id, Message.text)).all())
        assert audit.verify(conn).ok
    assert texts[theirs.message_id] == ""
    assert "invoice number 5531" in texts[bobs.message_id]
    data = store_bytes(engine, db_url)
    for needle in (WORD, ADDRESS, PHONE, "4155550177", SMS_WORD):
        assert not found(data, needle), f"{needle} is still in the store"
    with engine.connect() as conn:
        records = conn.execute(select(CaseMerge.moved)).scalars().all()
    assert len(records) == 2
    assert all(r["ref_values"] == [] and "signatures" not in r for r in records)


def resolved_case(engine: Engine, sender: str, text: str, resolved: datetime | None) -> int:
    raw = (
        f"From: {sender}\r\nTo: help@support.example.com\r\nSubject: {text}\r\n"
        f"Message-ID: <{hashlib.sha256(text.encode()).hexdigest()[:24]}@mail.example>\r\n"
        f"Date: Fri, 20 Nov 2026 10:00:00 +0000\r\n\r\n{text}\r\n"
    ).encode()
    outcome = ingest_and_normalize(engine, raw)
    assert outcome.case_id is not None
    if resolved is not None:
        with engine.begin() as conn:
            conn.execute(
                update(Case)
                .where(Case.id == outcome.case_id)
                .values(status="resolved", first_response_at=resolved, resolved_at=resolved)
            )
    return outcome.case_id


def test_retention_erases_only_old_resolved_cases(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    now = utcnow()
    old = resolved_case(engine, "ann@a.example", "ancient ocelotquestion", now - timedelta(40))
    recent = resolved_case(engine, "ben@b.example", "recent pangolinquestion", now - timedelta(5))
    still_open = resolved_case(engine, "cy@c.example", "open lemurquestion", None)
    settings = settings_file(tmp_path, db_url, "[retention]\nresolved_case_days = 30\n")
    assert cli.main(["--settings", settings, "retention", "run"]) == 0
    with engine.connect() as conn:
        texts = dict(conn.execute(select(Message.case_id, Message.text)).all())
        erased = dict(conn.execute(select(Case.id, Case.erased_at)).all())
        assert audit.verify(conn).ok
    assert texts[old] == "" and erased[old] is not None
    assert "pangolinquestion" in texts[recent] and erased[recent] is None
    assert "lemurquestion" in texts[still_open] and erased[still_open] is None
    # The contact of the old case keeps its identity: retention is not erasure of a person.
    with engine.connect() as conn:
        assert conn.execute(
            select(Identity.handle).where(Identity.handle == "ann@a.example")
        ).scalar_one()
    # Already erased cases are not erased again; a channel's own longer period keeps them.
    assert erasure.run_retention(engine, 30, {}, CHANNELS, now=now) == 0
    assert erasure.run_retention(engine, 1, {"email": 60}, CHANNELS, now=now) == 0
    assert erasure.run_retention(engine, 1, {}, CHANNELS, now=now) == 1


def test_parity_run_applies_retention(engine: Engine) -> None:
    """The daemon's retention task, run on its own against the store: it erases the old
    resolved case at once and stops when asked."""
    import asyncio
    from types import SimpleNamespace

    from parity.daemon import Daemon
    from parity.settings import RetentionSettings

    now = utcnow()
    old = resolved_case(engine, "ann@a.example", "ancient ocelotquestion", now - timedelta(9))
    recent = resolved_case(engine, "ben@b.example", "recent pangolinquestion", now)

    async def run() -> None:
        host = SimpleNamespace(
            engine=engine,
            stop=asyncio.Event(),
            settings=SimpleNamespace(
                retention=RetentionSettings(resolved_case_days=30, channels={"email": 7})
            ),
        )
        task = asyncio.create_task(Daemon._retention(host))  # type: ignore[arg-type]
        for _ in range(100):
            await asyncio.sleep(0.1)
            with engine.connect() as conn:
                if conn.execute(select(Case.erased_at).where(Case.id == old)).scalar_one():
                    break
        host.stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(run())
    with engine.connect() as conn:
        erased = dict(conn.execute(select(Case.id, Case.erased_at)).all())
        assert audit.verify(conn).ok
    assert erased[old] is not None and erased[recent] is None


# --- the pure parts --------------------------------------------------------------------------

KEY = b"k" * 32


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["Zelda Q", "zelda@x.example", "", None, "Al"], ["zelda@x.example", "zelda q"]),
        (["+14155550177", "+14155550177 "], ["+14155550177"]),
        ([], []),
    ],
)
def test_needles(values: list[str | None], expected: list[str]) -> None:
    assert erasure.needles_of(values) == expected


@pytest.mark.parametrize(
    ("value", "hit"),
    [
        ("Reply to ZELDA@X.example failed", True),
        ("sms:+14155550177", True),
        ("somebody else", False),
        (42, False),
        (None, False),
    ],
)
def test_mentions(value: Any, hit: bool) -> None:
    assert erasure.mentions(value, ["zelda@x.example", "+14155550177"]) is hit


def test_a_form_2_row_verifies_with_any_value_erased_and_not_with_a_changed_one() -> None:
    at = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    after = {"recipient": "zelda@x.example", "eta_at": "2026-12-08T12:00:00", "n": [1, "z"]}
    sealed = audit.row_hmac(
        audit.GENESIS, at, "system", "x", 5, None, after, KEY, chain=5, seq=1, form=2
    )

    def again(value: Any, form: int = 2) -> str:
        return audit.row_hmac(
            audit.GENESIS, at, "system", "x", 5, None, value, KEY, chain=5, seq=1, form=form
        )

    everything = audit.erase_values(after, lambda _p, _v: True, KEY)
    one = audit.erase_values(after, lambda p, _v: p == "recipient", KEY)
    assert one["recipient"] != after["recipient"] and one["eta_at"] == after["eta_at"]
    assert again(everything) == again(one) == sealed
    assert again({**after, "recipient": "mallory@x.example"}) != sealed
    assert again(after, form=1) != sealed  # the form is covered: no passing it off as 1
    # Form 1 rows are hashed over their values, exactly as before migration 0020.
    assert audit.row_hmac(audit.GENESIS, at, "a", "x", None, None, after, KEY) == (
        audit.row_hmac(audit.GENESIS, at, "a", "x", None, None, after, KEY, form=1)
    )


@pytest.mark.parametrize(
    ("default", "channels", "expected_days"),
    [
        (0, {}, {"email": None, "sms": None}),
        (30, {}, {"email": 30, "sms": 30}),
        (30, {"sms": 7}, {"email": 30, "sms": 7}),
        (0, {"sms": 7}, {"email": None, "sms": 7}),
        (30, {"sms": 0}, {"email": 30, "sms": None}),
    ],
)
def test_retention_cutoffs(
    default: int, channels: dict[str, int], expected_days: dict[str, int | None]
) -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    got = erasure.retention_cutoffs(now, default, channels, ["email", "sms"])
    assert got == {
        c: (now - timedelta(days=d) if d is not None else None) for c, d in expected_days.items()
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("550 <zelda.quintanilla@example.org> unknown", "(erased)"),
        ("421 try again later", "421 try again later"),
        ({"to": "+14155550177", "code": 550}, {"to": "(erased)", "code": 550}),
        (["ok", "Zelda Quintanilla called"], ["ok", "(erased)"]),
        ({"n": None, "deep": {"x": ["ZELDA.QUINTANILLA@EXAMPLE.ORG"]}},
         {"n": None, "deep": {"x": ["(erased)"]}}),
        (None, None),
    ],
)  # fmt: skip
def test_scrubbed(value: Any, expected: Any) -> None:
    needles = ["zelda.quintanilla@example.org", "+14155550177", "zelda quintanilla"]
    assert erasure.scrubbed(value, needles) == expected
