"""Dedup: one message per mail however often and however it arrives; different mail is kept.

docs/architecture/promises.md, promise 3. The key is the Message-ID together with a hash of
what the person wrote (sender, Date, Subject, decoded text, attachments), so trace headers
and transfer encodings that differ between the SMTP and the IMAP copy don't split a message,
while a different mail that reuses a Message-ID is not dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from inbox.models import Intake, Message, Receipt
from normalizer.mail import parse_email
from tests.support.emails import at, eml, message_count, receipts_of
from tests.support.helpers import case_of, ingest, normalize

SUPPORT = "support@support.example.com"


def test_the_same_delivery_twice_is_one_intake_and_one_message(engine):
    raw = eml("gmail_first_contact.eml")
    first = ingest(engine, raw, connector="smtp", source_key="smtp:retry-1")
    again = ingest(engine, raw, connector="smtp", source_key="smtp:retry-1")
    assert first.intake_id == again.intake_id and again.duplicate
    outcomes = normalize(engine)
    assert [o.state for o in outcomes] == ["done"]
    assert message_count(engine) == 1
    assert len(receipts_of(engine, outcomes[0].message_id)) == 1


def test_the_same_mail_stored_twice_is_one_message_with_two_receipts(engine):
    # Two deliveries of identical bytes, e.g. from two MX hosts after a timeout.
    raw = eml("gmail_first_contact.eml")
    ingest(engine, raw, connector="smtp", source_key="smtp:mx1", envelope={"rcpt_tos": [SUPPORT]})
    ingest(engine, raw, connector="smtp", source_key="smtp:mx2", envelope={"rcpt_tos": [SUPPORT]})
    outcomes = normalize(engine)
    assert sorted(o.state for o in outcomes) == ["done", "duplicate"]
    assert outcomes[0].message_id == outcomes[1].message_id
    assert message_count(engine) == 1
    assert len(receipts_of(engine, outcomes[0].message_id)) == 2
    assert case_of(engine, outcomes[0])["message_count"] == 1


def test_smtp_copy_and_imap_copy_are_one_message_with_two_receipts(engine):
    smtp_copy, imap_copy = eml("copy_smtp.eml"), eml("copy_imap.eml")
    # The copies really differ: trace headers, and 8bit against base64 for the body.
    assert smtp_copy != imap_copy
    assert b"Delivered-To:" in imap_copy and b"Delivered-To:" not in smtp_copy
    assert b"Content-Transfer-Encoding: base64" in imap_copy
    assert b"Content-Transfer-Encoding: 8bit" in smtp_copy

    ingest(
        engine,
        smtp_copy,
        connector="smtp",
        envelope={"mail_from": "d.ivanov@yandex.example", "rcpt_tos": [SUPPORT]},
    )
    ingest(
        engine,
        imap_copy,
        connector="imap",
        envelope={"address": SUPPORT, "folder": "INBOX", "uid": 4711},
    )
    outcomes = normalize(engine)
    assert sorted(o.state for o in outcomes) == ["done", "duplicate"]
    message_id = outcomes[0].message_id
    assert outcomes[1].message_id == message_id
    assert message_count(engine) == 1
    receipts = receipts_of(engine, message_id)
    assert sorted((r.connector, r.address) for r in receipts) == [
        ("imap", SUPPORT),
        ("smtp", SUPPORT),
    ]
    case = case_of(engine, outcomes[0])
    assert case["message_count"] == 1
    assert len(case["messages"][0]["receipts"]) == 2
    assert case["messages"][0]["subject"] == "Не могу войти в аккаунт"


def test_one_mail_to_two_support_addresses_is_one_message_with_two_receipts(engine):
    raw = eml("outlook_windows1252.eml")
    ingest(
        engine,
        raw,
        connector="smtp",
        envelope={"rcpt_tos": [SUPPORT, "Billing@Support.Example.com"]},
    )
    outcomes = normalize(engine)
    assert [o.state for o in outcomes] == ["done"]
    receipts = receipts_of(engine, outcomes[0].message_id)
    assert sorted(r.address for r in receipts) == ["billing@support.example.com", SUPPORT]


def test_a_different_mail_reusing_a_message_id_is_kept(engine):
    first, second = eml("reused_message_id_first.eml"), eml("reused_message_id_second.eml")
    mid = b"Message-ID: <contactform@shop.example.org>"
    assert mid in first and mid in second
    ingest(engine, first)
    ingest(engine, second)
    outcomes = normalize(engine)
    assert [o.state for o in outcomes] == ["done", "done"]
    assert outcomes[0].message_id != outcomes[1].message_id
    with engine.connect() as conn:
        rows = conn.execute(select(Message.external_id, Message.from_handle, Message.text)).all()
    assert sorted(r.from_handle for r in rows) == [
        "lena.fischer@web.example",
        "omar.haddad@gmx.example",
    ]
    assert {r.external_id for r in rows} == {"contactform@shop.example.org"}
    assert case_of(engine, outcomes[0])["reference"] != case_of(engine, outcomes[1])["reference"]


def test_same_message_id_same_sender_and_date_but_another_text_is_kept(engine):
    # What a plain Message-ID rule loses: the same id, sender, date and subject, a new body.
    original = eml("copy_smtp.eml")
    edited = original.replace(
        "Код из SMS не приходит.".encode(), "Код пришёл, всё в порядке.".encode()
    )
    assert edited != original
    ingest(engine, original)
    ingest(engine, edited)
    outcomes = normalize(engine)
    assert [o.state for o in outcomes] == ["done", "done"]
    assert message_count(engine) == 2


def test_mail_without_message_id_twice_is_one_message(engine):
    raw = eml("no_message_id_first.eml")
    assert b"message-id" not in raw.lower()
    ingest(engine, raw, connector="smtp", source_key="smtp:first-try")
    ingest(engine, raw, connector="imap", source_key="imap:INBOX:17")
    outcomes = normalize(engine)
    assert sorted(o.state for o in outcomes) == ["done", "duplicate"]
    assert message_count(engine) == 1
    assert len(receipts_of(engine, outcomes[0].message_id)) == 2


def test_different_mails_without_message_id_are_two_messages(engine):
    ingest(engine, eml("no_message_id_first.eml"), received_at=at(days=11))
    ingest(engine, eml("no_message_id_second.eml"), received_at=at(days=11, hours=0.3))
    outcomes = normalize(engine)
    assert [o.state for o in outcomes] == ["done", "done"]
    assert message_count(engine) == 2
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Receipt)).scalar_one() == 2
        assert (
            conn.execute(
                select(func.count()).select_from(Intake).where(Intake.state == "done")
            ).scalar_one()
            == 2
        )
    # Same person, case open: the second is a follow-up in the same case.
    assert case_of(engine, outcomes[0])["reference"] == case_of(engine, outcomes[1])["reference"]


# --- the key itself, as a pure function of the raw bytes ------------------------------------

BASE = eml("gmail_followup_no_headers.eml")
RECEIVED = b"Received: by mail-wm1-f47.google.com with SMTP id 5b1f17b1804b1-4315e62afe0so9981235e9.2\r\n        for <support@support.example.com>; Fri, 20 Nov 2026 00:31:55 -0800 (PST)\r\n"  # noqa: E501
assert BASE.startswith(RECEIVED)

SAME_MESSAGE = {
    "another Received chain": BASE.replace(
        RECEIVED,
        b"Received: from mail-wm1-f47.google.com (mail-wm1-f47.google.com [209.85.128.47])\r\n"
        b"\tby mx.support.example.com with ESMTPS id 4Yc0;\r\n"
        b"\tFri, 20 Nov 2026 08:31:57 +0000 (UTC)\r\n" + RECEIVED,
    ),
    "Return-Path and Delivered-To": b"Return-Path: <ann.example@gmail.com>\r\n"
    b"Delivered-To: support@support.example.com\r\n" + BASE,
    "X-Received, ARC and authentication results": b"X-Received: by 2002:a05:600c:1d0e with SMTP id l14mr1;\r\n"  # noqa: E501
    b"ARC-Seal: i=1; a=rsa-sha256; t=1795166049; cv=none; d=google.com; s=arc-20240605; b=x\r\n"
    b"Authentication-Results: mx.google.com; spf=pass smtp.mailfrom=ann.example@gmail.com\r\n"
    + BASE,
    "without the trace headers": BASE[len(RECEIVED) :],
    "line endings LF instead of CRLF": BASE.replace(b"\r\n", b"\n"),
    "base64 text part instead of 7bit": BASE.replace(
        b'Content-Type: text/plain; charset="UTF-8"\r\n\r\n'
        b"I forgot to say: my username is annex84, and the account was opened\r\n"
        b"in 2019 with this address.\r\n\r\nAnn\r\n",
        b'Content-Type: text/plain; charset="UTF-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        b"SSBmb3Jnb3QgdG8gc2F5OiBteSB1c2VybmFtZSBpcyBhbm5leDg0LCBhbmQgdGhlIGFjY291bnQg\r\n"
        b"d2FzIG9wZW5lZA0KaW4gMjAxOSB3aXRoIHRoaXMgYWRkcmVzcy4NCg0KQW5uDQo=\r\n",
    ),
}
OTHER_MESSAGE = {
    "another sender": BASE.replace(b"<ann.example@gmail.com>", b"<ann.example2@gmail.com>"),
    "another date": BASE.replace(b"09:31:52 +0100", b"09:31:53 +0100"),
    "another subject": BASE.replace(b"Subject: My username", b"Subject: My user name"),
    "another text": BASE.replace(b"annex84", b"annex85", 1),
    "another Message-ID": BASE.replace(b"<CAJx8kq1Vb7", b"<CAJx8kq1Vb8"),
}


def key(raw: bytes) -> str:
    return parse_email(raw, received_at=datetime(2026, 11, 20, tzinfo=UTC)).dedup_key


@pytest.mark.parametrize("variant", list(SAME_MESSAGE))
def test_the_key_ignores_how_a_copy_travelled(variant):
    changed = SAME_MESSAGE[variant]
    assert changed != BASE
    assert key(changed) == key(BASE)


@pytest.mark.parametrize("variant", list(OTHER_MESSAGE))
def test_the_key_changes_with_what_the_person_wrote(variant):
    changed = OTHER_MESSAGE[variant]
    assert changed != BASE
    assert key(changed) != key(BASE)


def test_the_key_covers_attachments():
    raw = eml("thunderbird_attachments.eml")
    # Another screenshot: the same base64 length, one byte of pixel data different.
    other = raw.replace(b"AAAADElEQVR4nGP4z8AAAAMBAQDJ/pLv", b"AAAADElEQVR4nGP4z8AAAAMBAQDJ/pLw")
    assert other != raw
    assert key(other) != key(raw)
