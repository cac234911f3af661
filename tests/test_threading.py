"""Threading: which case each realistic mail joins, on both databases, and the pure rule.

The store tests arrange a situation (a second open case, a resolved case, a linked address)
directly in the database, feed a fixture through intake and the normalizer, and check where
it went. Where a mail could join a case by more than one rule, the situation is arranged so
that only the rule under test gives the expected answer: a reply header or reference points
at the *older* of two open cases, while the follow-up rule alone would pick the newer one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from inbox.models import AuditLog, Case
from normalizer.threads import (
    Candidates,
    CaseView,
    Decision,
    case_tag,
    decide,
    find_references,
    find_tokens,
    own_message_id,
)
from tests.support.emails import at, case_row, eml, link_identity, retag, set_case
from tests.support.helpers import case_of, ingest_and_normalize

# --- arranging cases ------------------------------------------------------------------------


def open_case(engine: Engine, fixture: str, when: datetime) -> dict[str, Any]:
    outcome = ingest_and_normalize(engine, eml(fixture), received_at=when)
    assert outcome.state == "done", outcome
    return case_of(engine, outcome)


def two_open_cases(
    engine: Engine, first: str, second: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An older case A and a more recently active case B, both open, for one sender.

    B is opened while A is resolved (so the second mail cannot follow up on A), then A is
    reopened by an agent; A's last activity stays older than B's.
    """
    a = open_case(engine, first, at())
    set_case(engine, a["reference"], status="resolved", resolved_at=at(hours=1))
    b = open_case(engine, second, at(hours=2))
    assert b["reference"] != a["reference"]
    set_case(engine, a["reference"], status="open", resolved_at=None)
    return a, b


def joined(engine: Engine, fixture_bytes: bytes, when: datetime) -> tuple[dict[str, Any], Any]:
    outcome = ingest_and_normalize(engine, fixture_bytes, received_at=when)
    assert outcome.state == "done", outcome
    return case_of(engine, outcome), outcome


# --- reply headers --------------------------------------------------------------------------


def test_in_reply_to_joins_the_replied_case_even_when_another_is_newer(engine):
    a, b = two_open_cases(engine, "gmail_first_contact.eml", "gmail_followup_no_headers.eml")
    case, outcome = joined(engine, eml("gmail_reply_in_reply_to.eml"), at(days=1))
    assert case["reference"] == a["reference"]
    assert outcome.decision.reason == "in-reply-to"
    assert [m["subject"] for m in case["messages"]] == [
        "Locked out of my account after changing phones",
        "Re: Locked out of my account after changing phones",
    ]
    assert case_row(engine, b["reference"]).followups == 0


def test_references_join_when_in_reply_to_names_a_mail_we_never_saw(engine):
    # Bob's reply answers an agent's mail sent outside Parity; only References names his
    # own first mail.
    a, b = two_open_cases(
        engine, "thunderbird_attachments.eml", "thunderbird_forward_as_attachment.eml"
    )
    case, outcome = joined(engine, eml("thunderbird_reply_references.eml"), at(days=5))
    assert case["reference"] == a["reference"] != b["reference"]
    assert outcome.decision.reason == "references"


# --- case references ------------------------------------------------------------------------


def test_reference_from_the_same_address_joins_that_case(engine):
    a, b = two_open_cases(engine, "gmail_first_contact.eml", "gmail_followup_no_headers.eml")
    raw = retag(eml("gmail_reference_in_subject.eml"), a["reference"])
    case, outcome = joined(engine, raw, at(days=3))
    assert case["reference"] == a["reference"] != b["reference"]
    assert outcome.decision.reason == "reference"


def test_reference_from_another_known_identity_of_the_contact_joins(engine):
    a, b = two_open_cases(engine, "gmail_first_contact.eml", "gmail_followup_no_headers.eml")
    link_identity(engine, a["contact"]["id"], "ann.example@contoso.co.uk", "Example, Ann")
    raw = retag(eml("outlook_work_reference.eml"), a["reference"])
    case, outcome = joined(engine, raw, at(days=4))
    assert case["reference"] == a["reference"] != b["reference"]
    assert outcome.decision.reason == "reference"
    assert case["messages"][-1]["from"] == "ann.example@contoso.co.uk"
    assert {i["handle"] for i in case["contact"]["identities"]} == {
        "ann.example@gmail.com",
        "ann.example@contoso.co.uk",
    }


STRANGERS = {
    # Someone quoting Ann's reference from an address nobody linked to her.
    "reference in subject": lambda ref: retag(eml("stranger_claims_reference.eml"), ref),
    # A look-alike domain replying to Ann's own Message-ID: a reply header is no key either.
    "in-reply-to": lambda ref: eml("gmail_reply_in_reply_to.eml").replace(
        b"<ann.example@gmail.com>\r\nDate", b"<ann.example@gmaii.com>\r\nDate"
    ),
    # Ann's work address before any agent linked it.
    "unlinked second address": lambda ref: retag(eml("outlook_work_reference.eml"), ref),
}


@pytest.mark.parametrize("how", list(STRANGERS))
def test_a_stranger_citing_a_case_opens_a_new_case_that_claims_it(engine, how):
    a = open_case(engine, "gmail_first_contact.eml", at())
    raw = STRANGERS[how](a["reference"])
    case, outcome = joined(engine, raw, at(days=1, hours=5))
    assert outcome.decision.action == "new"
    assert case["reference"] != a["reference"]
    assert case["claims_reference"] == a["reference"]
    assert case["contact"]["id"] != a["contact"]["id"]
    assert case["linked_case"] is None
    # Ann's case is untouched: nothing of the stranger's mail reaches it.
    assert case_of_reference(engine, a["reference"])["message_count"] == 1
    with engine.connect() as conn:
        audit = conn.execute(
            select(AuditLog.action, AuditLog.after).where(AuditLog.action == "case.opened")
        ).one()
    assert audit.after["claims"] == a["reference"]


def case_of_reference(engine: Engine, reference: str) -> dict[str, Any]:
    from inbox import queries

    detail = queries.case_detail(engine, reference)
    assert detail is not None
    return detail


# --- the secret token -----------------------------------------------------------------------


def test_the_token_in_the_subject_tag_admits_a_new_address(engine):
    a = open_case(engine, "gmail_first_contact.eml", at())
    token = case_row(engine, a["reference"]).token
    raw = eml("apple_mail_token_new_address.eml").replace(
        b"[C-000001 #aaaaaaaaaaaa]", case_tag(a["reference"], token).encode()
    )
    assert case_tag(a["reference"], token).encode() in raw
    case, outcome = joined(engine, raw, at(days=2))
    assert case["reference"] == a["reference"]
    assert outcome.decision.reason == "token"
    assert case["messages"][-1]["from"] == "ann.ex@icloud.com"
    assert case["claims_reference"] is None
    # The token admits the message, not the address: no identity is merged into Ann's contact.
    assert [i["handle"] for i in case["contact"]["identities"]] == ["ann.example@gmail.com"]


def test_the_token_in_our_own_message_id_admits_a_new_address(engine):
    a = open_case(engine, "gmail_first_contact.eml", at())
    token = case_row(engine, a["reference"]).token
    ours = own_message_id(a["reference"], token, "k3q9d2", "support.example.com")
    raw = retag(eml("thunderbird_reply_to_ack_new_address.eml"), a["reference"], token)
    assert f"<{ours}>".encode() in raw
    case, outcome = joined(engine, raw, at(days=2, hours=11))
    assert case["reference"] == a["reference"]
    assert outcome.decision.reason == "token"


def test_a_wrong_token_is_only_a_claim(engine):
    a = open_case(engine, "gmail_first_contact.eml", at())
    token = case_row(engine, a["reference"]).token
    wrong = ("b" if token[0] != "b" else "c") + token[1:]
    raw = retag(eml("apple_mail_token_new_address.eml"), a["reference"], wrong)
    case, _ = joined(engine, raw, at(days=2))
    assert case["reference"] != a["reference"]
    assert case["claims_reference"] == a["reference"]


# --- follow-ups -----------------------------------------------------------------------------


def test_a_new_mail_from_the_same_sender_joins_the_open_case(engine):
    a = open_case(engine, "gmail_first_contact.eml", at())
    case, outcome = joined(engine, eml("gmail_followup_no_headers.eml"), at(hours=0.3))
    assert case["reference"] == a["reference"]
    assert outcome.decision.follow_up
    assert case["message_count"] == 2
    assert case["followups"] == 1
    assert case["last_activity_at"] == at(hours=0.3).isoformat(timespec="seconds").replace(
        "+00:00", "Z"
    )


@pytest.mark.parametrize("newer", ["A", "B"])
def test_of_two_open_cases_the_most_recently_active_wins(engine, newer):
    a, b = two_open_cases(engine, "gmail_first_contact.eml", "gmail_followup_no_headers.eml")
    if newer == "A":
        set_case(engine, a["reference"], last_activity_at=at(hours=3))
    expected = a if newer == "A" else b
    case, outcome = joined(engine, eml("gmail_new_question.eml"), at(days=4))
    assert case["reference"] == expected["reference"]
    assert outcome.decision.reason == "follow-up from the same person"


def test_a_resolved_case_gets_no_follow_ups(engine):
    a = open_case(engine, "gmail_first_contact.eml", at())
    set_case(engine, a["reference"], status="resolved", resolved_at=at(hours=1))
    case, _ = joined(engine, eml("gmail_new_question.eml"), at(days=1))
    assert case["reference"] != a["reference"]
    assert case["linked_case"] is None  # nothing pointed at the old case


# --- resolved cases -------------------------------------------------------------------------


def test_reopen_within_the_window_then_a_linked_case_after_it(engine):
    window = timedelta(days=14)  # StoreSettings' default, the one these tests run with
    a = open_case(engine, "gmail_first_contact.eml", at())
    resolved = at(days=1)
    set_case(engine, a["reference"], status="resolved", resolved_at=resolved)

    # A reply 13 days after resolution: within the window, the case reopens.
    case, outcome = joined(
        engine, eml("gmail_reply_in_reply_to.eml"), resolved + window - timedelta(days=1)
    )
    assert outcome.decision.action == "reopen"
    assert case["reference"] == a["reference"]
    assert case["status"] == "open"
    assert case["resolved_at"] is None
    with engine.connect() as conn:
        reopened = conn.execute(
            select(AuditLog.case_id, AuditLog.before).where(AuditLog.action == "case.reopened")
        ).one()
    assert reopened.case_id == case_row(engine, a["reference"]).id
    assert reopened.before["status"] == "resolved"

    # Resolved again; a mail citing it a day after the window opens a new, linked case.
    resolved_again = at(days=15)
    set_case(engine, a["reference"], status="resolved", resolved_at=resolved_again)
    raw = retag(eml("gmail_reference_in_subject.eml"), a["reference"])
    later, outcome = joined(engine, raw, resolved_again + window + timedelta(days=1))
    assert outcome.decision.action == "new"
    assert later["reference"] != a["reference"]
    assert later["linked_case"] == a["reference"]
    assert later["claims_reference"] is None
    assert later["contact"]["id"] == a["contact"]["id"]
    assert case_row(engine, a["reference"]).status == "resolved"
    assert (
        case_row(engine, later["reference"]).linked_case_id == case_row(engine, a["reference"]).id
    )


# --- the pure rule --------------------------------------------------------------------------

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=14)


def view(
    id: int,
    contact: int,
    status: str = "open",
    resolved_ago: timedelta | None = None,
    active_ago: timedelta = timedelta(hours=1),
) -> CaseView:
    return CaseView(
        id=id,
        reference=f"C-{id:06d}",
        contact_id=contact,
        status=status,
        resolved_at=None if resolved_ago is None else NOW - resolved_ago,
        last_activity_at=NOW - active_ago,
    )


ANNS = view(1, contact=10)
ANNS_OLDER = view(2, contact=10, active_ago=timedelta(days=3))
ANNS_PENDING = view(3, contact=10, status="pending_customer")
ANNS_RESOLVED_RECENTLY = view(4, contact=10, status="resolved", resolved_ago=timedelta(days=2))
ANNS_RESOLVED_AT_EDGE = view(5, contact=10, status="resolved", resolved_ago=WINDOW)
ANNS_RESOLVED_LONG_AGO = view(
    6, contact=10, status="resolved", resolved_ago=WINDOW + timedelta(seconds=1)
)
BOBS = view(7, contact=20)
TIE_LOW = view(8, contact=10, active_ago=timedelta(minutes=5))
TIE_HIGH = view(9, contact=10, active_ago=timedelta(minutes=5))

DECIDE_TABLE: list[tuple[str, Candidates, Decision]] = [
    ("nothing known", Candidates(None), Decision("new", reason="new conversation")),
    (
        "reply header to her open case",
        Candidates(10, [("in-reply-to", ANNS)], open_cases=[ANNS]),
        Decision("join", 1, reason="in-reply-to"),
    ),
    (
        "pending customer counts as open",
        Candidates(10, [("reference", ANNS_PENDING)], open_cases=[ANNS_PENDING]),
        Decision("join", 3, reason="reference"),
    ),
    (
        "reference to an older open case beats the newer one",
        Candidates(10, [("reference", ANNS_OLDER)], open_cases=[ANNS, ANNS_OLDER]),
        Decision("join", 2, reason="reference"),
    ),
    (
        "a stranger's reference",
        Candidates(None, [("reference", BOBS)]),
        Decision("new", reason="claims to be about C-000007", claims="C-000007"),
    ),
    (
        "another person commenting in a public thread is related, not a claim",
        Candidates(30, [("conversation", BOBS)]),
        Decision("new", reason="another person in the thread of C-000007", related="C-000007"),
    ),
    (
        "a person with an open case, writing in someone else's thread, follows up her own",
        Candidates(10, [("conversation", BOBS)], open_cases=[ANNS]),
        Decision(
            "join",
            1,
            reason="follow-up from the same person",
            follow_up=True,
            related="C-000007",
        ),
    ),
    (
        "a known person citing someone else's case",
        Candidates(20 + 1, [("reference", BOBS)]),
        Decision("new", reason="claims to be about C-000007", claims="C-000007"),
    ),
    (
        "a stranger with the token",
        Candidates(None, [("token", BOBS)], frozenset({7})),
        Decision("join", 7, reason="token"),
    ),
    (
        "the token of one case does not vouch for another",
        Candidates(None, [("token", BOBS), ("reference", ANNS)], frozenset({7})),
        Decision("join", 7, reason="token"),
    ),
    (
        "a token for a different case than the one cited",
        Candidates(None, [("reference", ANNS), ("token", BOBS)], frozenset({7})),
        Decision("join", 7, reason="token"),
    ),
    (
        "resolved within the window",
        Candidates(10, [("in-reply-to", ANNS_RESOLVED_RECENTLY)]),
        Decision("reopen", 4, reason="in-reply-to, resolved within the reopen window"),
    ),
    (
        "resolved exactly one window ago",
        Candidates(10, [("references", ANNS_RESOLVED_AT_EDGE)]),
        Decision("reopen", 5, reason="references, resolved within the reopen window"),
    ),
    (
        "resolved a second before the window",
        Candidates(10, [("reference", ANNS_RESOLVED_LONG_AGO)]),
        Decision(
            "new",
            reason="C-000006 was resolved before the reopen window",
            linked_case_id=6,
        ),
    ),
    (
        "resolved long ago but another case is open: follow up there",
        Candidates(10, [("reference", ANNS_RESOLVED_LONG_AGO)], open_cases=[ANNS]),
        Decision("join", 1, reason="follow-up from the same person", follow_up=True),
    ),
    (
        "a stranger cannot reopen",
        Candidates(None, [("in-reply-to", ANNS_RESOLVED_RECENTLY)]),
        Decision("new", reason="claims to be about C-000004", claims="C-000004"),
    ),
    (
        "follow-up: the most recently active open case",
        Candidates(10, open_cases=[ANNS_OLDER, ANNS]),
        Decision("join", 1, reason="follow-up from the same person", follow_up=True),
    ),
    (
        "follow-up: equal activity, the newer case",
        Candidates(10, open_cases=[TIE_HIGH, TIE_LOW]),
        Decision("join", 9, reason="follow-up from the same person", follow_up=True),
    ),
    (
        "her own follow-up that cites Bob's case keeps the claim as a note",
        Candidates(10, [("reference", BOBS)], open_cases=[ANNS]),
        Decision(
            "join",
            1,
            reason="follow-up from the same person",
            follow_up=True,
            claims="C-000007",
        ),
    ),
]


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [(c, d) for _, c, d in DECIDE_TABLE],
    ids=[name for name, _, _ in DECIDE_TABLE],
)
def test_decide(candidates, expected):
    assert decide(candidates, NOW, WINDOW) == expected


REFERENCE_TABLE = [
    ("Re: [C-001042] Locked out", ["C-001042"]),
    ("RE: AW: [C-000001] Rückerstattung", ["C-000001"]),
    ("about case C-123456789 and C-000002, and again C-123456789", ["C-123456789", "C-000002"]),
    ("C-00042", []),  # five digits are not a reference
    ("ABC-001042 is an order number, X-C-001042 a header", []),
    ("[C-001042 #abcdefghijk2]", ["C-001042"]),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), REFERENCE_TABLE)
def test_find_references(text, expected):
    assert find_references(text) == expected


def test_find_references_reads_subject_then_text():
    assert find_references("Re: [C-000002] hello", "see also C-000001 and C-000002") == [
        "C-000002",
        "C-000001",
    ]


TOKEN = "k2m3n4p5q6r7"
TOKEN_TABLE: list[tuple[list[str], list[str], list[tuple[str, str]]]] = [
    ([f"Re: [C-001042 #{TOKEN}] Locked out"], [], [("C-001042", TOKEN)]),
    ([f"[C-001042 #{TOKEN.upper()}]"], [], []),  # tokens are lower-case base32
    (["[C-001042 #k2m3n4p5q6r1]"], [], []),  # 1 is not in the base32 alphabet
    ([f"[C-001042 #{TOKEN}x]"], [], []),  # too long: not our token
    ([f"[C-001042 #{TOKEN[:-1]}]"], [], []),  # too short
    (["[C-001042] no token"], [], []),
    ([], [f"parity.C-001042.{TOKEN}.u1v2@support.example.com"], [("C-001042", TOKEN)]),
    ([], [f"xparity.C-001042.{TOKEN}.u1v2@support.example.com"], []),
    ([], ["CAJx8kq3H0m2Pz0fQv@mail.gmail.com"], []),
    (
        [f"[C-000001 #{TOKEN}]", f"body mentions [C-000001 #{TOKEN}] again"],
        [f"parity.C-000002.{'a' * 12}.zz@support.example.com"],
        [("C-000001", TOKEN), ("C-000002", "a" * 12)],
    ),
]


@pytest.mark.parametrize(("texts", "ids", "expected"), TOKEN_TABLE)
def test_find_tokens(texts, ids, expected):
    assert find_tokens(texts, ids) == expected


def test_case_tag_and_own_message_id_are_found_again():
    tag = case_tag("C-001042", TOKEN)
    assert tag == f"[C-001042 #{TOKEN}]"
    mid = own_message_id("C-001042", TOKEN, "x9", "support.example.com")
    assert find_tokens([f"Re: {tag} Locked out"], [mid]) == [("C-001042", TOKEN)]


def test_open_statuses_are_the_designs():
    from normalizer.threads import OPEN_STATUSES

    assert {"new", "open", "pending_customer"} == OPEN_STATUSES


def test_a_case_row_has_a_reference_and_a_token(engine):
    a = open_case(engine, "gmail_first_contact.eml", at())
    with engine.connect() as conn:
        row = conn.execute(select(Case.reference, Case.token)).one()
    assert row.reference == a["reference"]
    assert len(row.reference) >= 8 and row.reference[2:].isdigit()
    assert len(row.token) == 12 and set(row.token) <= set("abcdefghijklmnopqrstuvwxyz234567")
