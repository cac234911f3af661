"""Text the store must be able to hold: SMTPUTF8 headers and NUL bytes, on both databases.

Found by the SMTP tests: an SMTPUTF8 sender's address reached the store as surrogate escapes
(every such mail was dead-lettered), and a NUL in a body is refused by PostgreSQL only.
"""

from __future__ import annotations

import pytest

from normalizer.mail import utf8_text
from tests.support.helpers import case_of, ingest_and_normalize


@pytest.mark.parametrize(
    ("parsed", "text"),
    [
        ("plain@example.org", "plain@example.org"),
        ("zo\udcc3\udcab@ex\udcc3\udca4mple.org", "zoë@exämple.org"),  # how the parser keeps it
        ("Zoë \udcc3\udc9cnal", "Zoë Ünal"),  # decoded and escaped text side by side
        ("\udcf0\udc9f\udc99\udc8f", "🙏"),
        ("bad \udcff byte", "bad \ufffd byte"),  # not UTF-8 at all: shown, not dropped
        ("nul\x00byte", "nul\ufffdbyte"),
    ],
)
def test_utf8_text(parsed, text):
    assert utf8_text(parsed) == text


SMTPUTF8_MAIL = (
    "From: Zoë Ünal <zoë@exämple.org>\r\n"
    "To: hilfe@support.example.com\r\n"
    "Subject: Zugang gesperrt – bitte helfen 🙏\r\n"
    "Message-ID: <utf8-1@exämple.org>\r\n"
    "Date: Fri, 20 Nov 2026 10:00:00 +0000\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Grüße aus Köln.\r\n"
).encode()


def test_an_smtputf8_mail_becomes_a_case_with_its_unicode_sender(engine):
    outcome = ingest_and_normalize(engine, SMTPUTF8_MAIL, envelope={"mail_from": "zoë@exämple.org"})
    assert outcome.state == "done", outcome
    case = case_of(engine, outcome)
    (identity,) = case["contact"]["identities"]
    assert (identity["handle"], identity["name"]) == ("zoë@exämple.org", "Zoë Ünal")
    (message,) = case["messages"]
    assert message["subject"] == "Zugang gesperrt – bitte helfen 🙏"
    assert message["text"].strip() == "Grüße aus Köln."


def test_a_nul_byte_in_a_body_does_not_dead_letter_the_mail(engine):
    raw = (
        b"From: Ann Example <ann@example.org>\r\n"
        b"To: help@support.example.com\r\n"
        b"Subject: Binary junk\r\n"
        b"Message-ID: <nul-1@example.org>\r\n"
        b"\r\n"
        b"before\x00after\r\n"
    )
    outcome = ingest_and_normalize(engine, raw)
    assert outcome.state == "done", outcome
    (message,) = case_of(engine, outcome)["messages"]
    assert message["text"].strip() == "before\ufffdafter"
