"""The store end to end on both databases: intake, normalize, read back."""

from __future__ import annotations

from inbox import queries
from tests.support.helpers import case_of, ingest, ingest_and_normalize, normalize

MAIL = (
    b"From: Ann Example <ann@example.org>\r\n"
    b"To: help@support.example.com\r\n"
    b"Subject: Locked out of my account\r\n"
    b"Message-ID: <first@example.org>\r\n"
    b"Date: Fri, 20 Nov 2026 10:00:00 +0000\r\n"
    b"\r\n"
    b"I cannot log in since yesterday.\r\n"
)


def test_a_mail_becomes_a_case(engine):
    outcome = ingest_and_normalize(engine, MAIL)
    case = case_of(engine, outcome)
    assert case["reference"].startswith("C-") and len(case["reference"]) >= 8
    assert case["contact"]["identities"] == [
        {
            "channel": "email",
            "handle": "ann@example.org",
            "name": "Ann Example",
            "verified": False,
            "facts": {},
        }
    ]
    assert [m["subject"] for m in case["messages"]] == ["Locked out of my account"]
    assert queries.list_cases(engine)[0]["reference"] == case["reference"]


def test_the_same_input_twice_is_stored_once(engine):
    first = ingest(engine, MAIL, source_key="k1")
    second = ingest(engine, MAIL, source_key="k1")
    assert first.intake_id == second.intake_id
    assert (first.duplicate, second.duplicate) == (False, True)
    assert [o.state for o in normalize(engine)] == ["done"]
