"""Bounces of our own mail: a delivery status notification files into the case it is about,
and the outbox row and the case learn that the customer never got it.

The reports are realistic fixtures (Postfix, sendmail, Exchange shapes) in tests/fixtures/dsn.
The store tests run on SQLite and PostgreSQL, with the acknowledgement really sent to an SMTP
server (the sink) and the bounce built around what the sink received.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from inbox import casework, migrate
from inbox.casework import ReplyRequest
from inbox.db import make_engine, write
from inbox.models import Case, Outbox
from inbox.outbox import report_delivery
from inbox.references import bare_message_id
from normalizer.dsn import DeliveryReport, RecipientStatus
from normalizer.mail import parse_email
from tests.support.helpers import FIXTURES, ingest_and_normalize
from tests.support.outbox_helpers import audit_actions, case_row, drainer_for, mail, outbox_rows
from tests.support.reply_files import agent
from tests.support.sink import Sink
from tests.support.stores import store_at

DSN = FIXTURES / "dsn"
WHEN = datetime(2026, 11, 23, 10, 3, tzinfo=UTC)
ORIGINAL = "parity.C-000001.abcdefghijkl.1@support.example.com"


def postfix_bounce(original: str) -> bytes:
    return (DSN / "postfix_failed.eml.in").read_bytes().replace(b"{ORIGINAL}", original.encode())


REPORTS: list[tuple[str, bytes, DeliveryReport | None]] = [
    (
        "postfix: one recipient failed, the message returned whole",
        postfix_bounce(ORIGINAL),
        DeliveryReport(
            ORIGINAL,
            (
                RecipientStatus(
                    "ann@example.org",
                    "failed",
                    "5.1.1",
                    "smtp; 550 5.1.1 <ann@example.org>: Recipient address rejected: "
                    "User unknown in virtual mailbox table",
                ),
            ),
        ),
    ),
    (
        "sendmail: a warning, only the headers returned",
        (DSN / "sendmail_delayed.eml").read_bytes(),
        DeliveryReport(
            "parity.C-000002.mnopqrstuvwx.2@support.example.com",
            (
                RecipientStatus(
                    "bob@slow.example", "delayed", "4.4.1", "SMTP; 421 4.4.1 connection timed out"
                ),
            ),
        ),
    ),
    (
        "success notification for two recipients",
        (DSN / "exchange_delivered.eml").read_bytes(),
        DeliveryReport(
            "parity.C-000003.yz234567abcd.3@support.example.com",
            (
                RecipientStatus("carol@partner.example", "delivered", "2.0.0", ""),
                RecipientStatus("dave@partner.example", "relayed", "2.0.0", ""),
            ),
        ),
    ),
    (
        "one delivered, one failed, nothing returned",
        (DSN / "mixed_no_original.eml").read_bytes(),
        DeliveryReport(
            None,
            (
                RecipientStatus("erin@example.com", "delivered", "2.0.0", ""),
                RecipientStatus(
                    "frank@full.example", "failed", "5.2.2", "smtp; 552 5.2.2 Mailbox full"
                ),
            ),
        ),
    ),
    ("a read receipt is a report but not a DSN", (DSN / "mdn_not_dsn.eml").read_bytes(), None),
    ("an ordinary customer mail", mail(), None),
]


@pytest.mark.parametrize(("case", "raw", "want"), REPORTS, ids=[r[0] for r in REPORTS])
def test_delivery_reports_are_read(case: str, raw: bytes, want: DeliveryReport | None) -> None:
    message = parse_email(raw, received_at=WHEN)
    assert message.meta.get("delivery_report") == (want.as_meta() if want else None)
    if want is not None and want.original_message_id:
        # The bounce threads like a reply to what bounced.
        assert want.original_message_id in message.thread.references
    if want is not None:
        assert message.automated is not None  # never acknowledged in turn


@pytest.mark.parametrize(
    ("actions", "outcome"),
    [
        (("failed",), "undelivered"),
        (("delivered", "failed"), "undelivered"),  # one lost copy is what matters
        (("delayed",), "delayed"),
        (("delayed", "delivered"), "delayed"),
        (("delivered", "relayed"), "delivered"),
        (("expanded",), "delivered"),
        (("unknown",), None),
        ((), None),
    ],
)
def test_one_outcome_for_the_whole_report(actions: tuple[str, ...], outcome: str | None) -> None:
    report = DeliveryReport(
        None, tuple(RecipientStatus(f"r{i}@x.example", a, "", "") for i, a in enumerate(actions))
    )
    assert report.outcome == outcome


def _acknowledged_case(engine, sink: Sink) -> tuple[int, str]:
    first = ingest_and_normalize(engine, mail(), envelope={"mail_from": "ann@example.org"})
    assert drainer_for(engine, sink).drain_once().sent == 1
    sent = sink.delivered[-1].parsed()
    return int(first.case_id or 0), str(sent["Message-ID"]).strip("<>")


def _cases(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Case)).scalar_one())


def test_a_bounced_acknowledgement_is_undelivered_on_its_case(engine, sink: Sink):
    case_id, ack_id = _acknowledged_case(engine, sink)
    assert [r.state for r in outbox_rows(engine)] == ["sent"]

    bounce = ingest_and_normalize(
        engine, postfix_bounce(ack_id), envelope={"mail_from": "", "rcpt_tos": []}
    )

    assert bounce.case_id == case_id, "the bounce opened a case of its own"
    assert _cases(engine) == 1
    (row,) = outbox_rows(engine)
    assert row.state == "undelivered"
    assert "5.1.1" in (row.last_error or "") and "ann@example.org" in (row.last_error or "")
    case = case_row(engine, case_id)
    assert case.ack_state == "undelivered"
    assert "User unknown" in (case.ack_reason or "")
    actions = [a for a, _ in audit_actions(engine, case_id)]
    assert actions.count("ack.undelivered") == 1
    # The bounce itself is never acknowledged: nothing new was queued, nothing more sent.
    assert drainer_for(engine, sink).drain_once().sent == 0
    assert len(sink.delivered) == 1


def test_a_bounce_for_mail_we_never_sent_changes_nothing(engine, sink: Sink):
    case_id, _ = _acknowledged_case(engine, sink)
    stranger = "parity.C-000001.zzzzzzzzzzzz.9@support.example.com"

    ingest_and_normalize(engine, postfix_bounce(stranger), envelope={"mail_from": ""})

    assert [r.state for r in outbox_rows(engine)] == ["sent"]
    assert case_row(engine, case_id).ack_state == "sent"
    assert "ack.undelivered" not in [a for a, _ in audit_actions(engine, case_id)]


def test_the_same_bounce_twice_moves_the_row_once(engine, sink: Sink):
    case_id, ack_id = _acknowledged_case(engine, sink)
    raw = postfix_bounce(ack_id)
    ingest_and_normalize(engine, raw, envelope={"mail_from": ""})
    ingest_and_normalize(engine, raw, envelope={"mail_from": ""}, source_key="again")
    assert [r.state for r in outbox_rows(engine)] == ["undelivered"]
    assert [a for a, _ in audit_actions(engine, case_id)].count("ack.undelivered") == 1


def _agent_reply_sent(engine, sink: Sink, case_id: int) -> str:
    """An agent answers the case by mail; the id the customer's server saw, without brackets."""
    principal = agent(engine)
    reference = case_row(engine, case_id).reference
    casework.reply(
        engine,
        principal,
        reference,
        ReplyRequest(text="Your account is unlocked now."),
        message_id_domain="support.example.com",
    )
    assert drainer_for(engine, sink).drain_once().sent == 1
    sent = sink.delivered[-1].parsed()
    assert sent["Subject"].startswith("Re:")
    return str(sent["Message-ID"]).strip().removeprefix("<").removesuffix(">")


def test_a_bounced_agent_reply_is_undelivered_and_the_acknowledgement_is_untouched(
    engine, sink: Sink
):
    case_id, _ = _acknowledged_case(engine, sink)
    reply_id = _agent_reply_sent(engine, sink, case_id)

    bounce = ingest_and_normalize(
        engine, postfix_bounce(reply_id), envelope={"mail_from": "", "rcpt_tos": []}
    )

    assert bounce.case_id == case_id
    assert [(r.kind, r.state) for r in outbox_rows(engine)] == [
        ("ack", "sent"),
        ("reply", "undelivered"),
    ]
    reply_row = outbox_rows(engine)[1]
    assert "User unknown" in (reply_row.last_error or "")
    assert case_row(engine, case_id).ack_state == "sent"
    actions = [a for a, _ in audit_actions(engine, case_id)]
    assert actions.count("reply.undelivered") == 1
    assert "ack.undelivered" not in actions


@pytest.mark.parametrize(
    "written",
    [
        "<parity.x.1@support.example.com>",
        " parity.x.1@support.example.com ",
        "parity.x.1@support.example.com",
    ],
)
def test_one_form_of_our_message_ids(written: str) -> None:
    assert bare_message_id(written) == "parity.x.1@support.example.com"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at_0020(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database migrated to 0020, as the version before the bare ids left it."""
    with store_at(request.param, tmp_path, "0020") as url:
        yield url


def test_replies_sent_before_the_upgrade_still_match_their_bounces(store_at_0020: str) -> None:
    engine = make_engine(store_at_0020)
    try:
        old_ids = {
            "reply": "<parity.C-000001.abcdefghijkl.00ff@support.example.com>",
            "ack": "parity.C-000001.abcdefghijkl.1.00aa@support.example.com",
        }
        with engine.begin() as conn:
            for kind, header in old_ids.items():
                conn.execute(
                    insert(Outbox).values(
                        kind=kind,
                        channel="email",
                        recipient="ann@example.org",
                        message_id_header=header,
                        state="sent",
                    )
                )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            kept = {k: h for k, h in conn.execute(select(Outbox.kind, Outbox.message_id_header))}
        assert kept == {
            "reply": "parity.C-000001.abcdefghijkl.00ff@support.example.com",
            "ack": "parity.C-000001.abcdefghijkl.1.00aa@support.example.com",
        }
        with write(engine) as conn:
            moved = report_delivery(
                conn,
                message_id_header="parity.C-000001.abcdefghijkl.00ff@support.example.com",
                outcome="undelivered",
                reason="5.1.1 user unknown",
            )
        assert len(moved) == 1
    finally:
        engine.dispose()
