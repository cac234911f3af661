"""Every new case hears back exactly once, on its channel; robots and history never do.

Real parts: intake and the normalizer on SQLite and PostgreSQL, the acknowledgement queued in
the outbox, and delivered by our SMTP client to a real SMTP server (aiosmtpd) the test runs.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from connectors.registry import ConnectorsSettings, ack_route_table, parser_table
from inbox.config import StoreSettings
from inbox.models import Case, Intake, utcnow
from normalizer.acks import AckSettings
from normalizer.threads import find_tokens
from normalizer.worker import Normalizer
from tests.support.dns_server import test_mail_auth
from tests.support.helpers import FIXTURES, case_of, ingest, ingest_and_normalize, normalize
from tests.support.outbox_helpers import (
    attempts_of,
    audit_actions,
    case_row,
    drainer_for,
    mail,
    outbox_rows,
)
from tests.support.sink import Sink

SMTP_ENVELOPE = {"mail_from": "ann@example.org", "rcpt_tos": ["help@support.example.com"]}


def test_a_new_case_gets_exactly_one_acknowledgement(engine, sink: Sink):
    first = ingest_and_normalize(
        engine,
        mail(message_id="<m1@example.org>", extra="References: <m0@example.org>\r\n"),
        envelope=SMTP_ENVELOPE,
    )
    # The same mail again (an SMTP retry) and a follow-up join the case: no second ack.
    ingest_and_normalize(
        engine,
        mail(message_id="<m1@example.org>", extra="References: <m0@example.org>\r\n"),
        envelope=SMTP_ENVELOPE,
        source_key="another-delivery",
    )
    follow_up = ingest_and_normalize(
        engine, mail("Also: my recovery email changed"), envelope=SMTP_ENVELOPE
    )
    assert follow_up.case_id == first.case_id

    report = drainer_for(engine, sink).drain_once()
    assert (report.sent, report.failed) == (1, 0)
    assert drainer_for(engine, sink).drain_once().sent == 0
    assert len(sink.delivered) == 1

    case = case_row(engine, first.case_id)
    delivery = sink.delivered[0]
    assert delivery.rcpt_tos == ["ann@example.org"]
    assert delivery.mail_from == "help@support.example.com"
    ack = delivery.parsed()
    assert ack["To"].addresses[0].addr_spec == "ann@example.org"
    # Issue 16: the fixed subject with the case's tag, and nothing the sender wrote.
    assert ack["Subject"] == f"[{case.reference} #{case.token}] We have your message"
    assert ack["To"].addresses[0].display_name == ""
    assert ack["In-Reply-To"] == "<m1@example.org>"
    assert ack["References"] == "<m0@example.org> <m1@example.org>"
    assert ack["X-Parity-Case"] == case.reference
    assert ack["Auto-Submitted"] == "auto-replied"
    own_id = ack["Message-ID"].strip("<>")
    # Our Message-ID carries the reference and the token: a reply keeping only it threads.
    assert find_tokens([], [own_id]) == [(case.reference, case.token)]
    body = ack.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert case.reference in text
    assert re.search(r"answer you (within about \d+ (minutes|hours)|within about an hour)", text)
    assert f"keep [{case.reference} #{case.token}] in the subject" in text

    (row,) = outbox_rows(engine)
    assert (row.kind, row.state, row.attempts, row.message_id_header) == ("ack", "sent", 1, own_id)
    assert attempts_of(engine, row.id) == [("sent", None)]
    assert (case.ack_state, case.ack_reason) == ("sent", None)
    actions = [a for a, _ in audit_actions(engine, case.id)]
    # Queued by the normalizer, then its outcome from the outbox, as on every channel.
    assert actions == ["acknowledgement.queued", "ack.sent"]


def _reply(ack, style: str, sender: str) -> bytes:
    subject = ack["Subject"]
    own_id = ack["Message-ID"]
    if style == "references only":
        # A client that drops In-Reply-To and rewrites the subject, keeping References.
        headers = f"References: {ack['References']} {own_id}\r\n"
        subject = "Re: my account"
    elif style == "subject tag only":
        # A client (or a person starting a new mail) that keeps only the subject line.
        headers = ""
        subject = f"Re: {subject}"
    else:
        raise AssertionError(style)
    return mail(subject, sender=sender, extra=headers, body="Here is the photo of my ID.")


@pytest.mark.parametrize("style", ["references only", "subject tag only"])
@pytest.mark.parametrize(
    "sender", ["Ann Example <ann@example.org>", "Ann (work) <ann.example@work.example>"]
)
def test_a_reply_to_the_acknowledgement_joins_the_case(engine, sink: Sink, style, sender):
    first = ingest_and_normalize(engine, mail(message_id="<m1@example.org>"))
    drainer_for(engine, sink).drain_once()
    reply = ingest_and_normalize(engine, _reply(sink.delivered[0].parsed(), style, sender))
    assert reply.case_id == first.case_id
    # Threaded by the case's secret token, not merely because the sender is known.
    assert reply.decision is not None and reply.decision.reason == "token"
    assert len(outbox_rows(engine)) == 1


def test_without_the_token_a_stranger_does_not_join(engine, sink: Sink):
    """The control for the test above: the reference alone is not a key."""
    first = ingest_and_normalize(engine, mail(message_id="<m1@example.org>"))
    drainer_for(engine, sink).drain_once()
    reference = case_row(engine, first.case_id).reference
    other = ingest_and_normalize(
        engine, mail(f"Re: [{reference}] my account", sender="Mallory <m@evil.example>")
    )
    assert other.case_id != first.case_id
    assert case_row(engine, other.case_id).claims_reference == reference


# --- none of these is acknowledged ---------------------------------------------------------------

AUTOMATED = FIXTURES / "email" / "automated"
# fixture -> the reason the parser must give, written from the fixture's headers by hand
WITHHELD = {
    "gmail_vacation.eml": "auto-submitted: auto-replied",
    "outlook_oof.eml": "auto-reply header: x-auto-response-suppress",
    "auto_generated_notice.eml": "auto-submitted: auto-generated",
    "cpanel_autoreply.eml": "auto-reply header: x-autoreply",
    "newsletter_bulk.eml": "precedence: bulk",
    "precedence_junk.eml": "precedence: junk",
    "mailman_list.eml": "precedence: list",
    "newsletter_list_unsubscribe.eml": "mailing list",
    "discourse_list_id.eml": "mailing list",
    "noreply_sender.eml": "system sender: no-reply",
    "postmaster_notice.eml": "system sender: postmaster",
    "own_ack_returned.eml": "our own outbound mail came back",
    "bounce_gmail.eml": "auto-submitted: auto-replied",
    "bounce_office365.eml": "bounce: delivery status notification",
    "bounce_postfix.eml": "auto-submitted: auto-replied",
    "bounce_exim.eml": "auto-submitted: auto-replied",
    "bounce_qmail_null_sender.eml": "bounce: null reverse path",
}


def test_the_table_covers_every_fixture():
    assert sorted(p.name for p in AUTOMATED.glob("*.eml")) == sorted(WITHHELD)


@pytest.mark.parametrize("name", sorted(WITHHELD))
def test_robots_lists_and_bounces_are_cased_but_never_acknowledged(engine, name):
    raw = (AUTOMATED / name).read_bytes()
    # Bounces arrive with the null reverse path, as an MTA sends them; the rest with a sender.
    mail_from = "" if name.startswith("bounce") else "sender@example.net"
    outcome = ingest_and_normalize(
        engine, raw, envelope={"mail_from": mail_from, "rcpt_tos": ["help@support.example.com"]}
    )
    assert outcome.state == "done" and outcome.case_id is not None
    detail = case_of(engine, outcome)
    assert detail["messages"][0]["automated"] == WITHHELD[name]
    assert detail["acknowledgement"] == {
        "state": "withheld",
        "reason": f"automated message ({WITHHELD[name]})",
    }
    assert outbox_rows(engine) == []
    assert audit_actions(engine, outcome.case_id) == [
        ("acknowledgement.withheld", {"reason": f"automated message ({WITHHELD[name]})"})
    ]


def test_a_bounce_of_our_acknowledgement_joins_the_customers_case(engine, sink: Sink):
    """Gmail's DSN names our Message-ID: the token in it files the bounce with the case."""
    first = ingest_and_normalize(engine, mail(sender="Frank <frank.typo@gmial.example>"))
    drainer_for(engine, sink).drain_once()
    own_id = sink.delivered[0].parsed()["Message-ID"].strip("<>")
    case = case_row(engine, first.case_id)
    dsn = (AUTOMATED / "bounce_gmail.eml").read_bytes()
    old_id = b"parity.C-000301.a2b3c4d5e6f7.40.0c1d2e3f4a5b@support.example.com"
    bounce = ingest_and_normalize(
        engine, dsn.replace(old_id, own_id.encode()), envelope={"mail_from": ""}
    )
    assert bounce.case_id == case.id
    assert len(outbox_rows(engine)) == 1


# --- other reasons -------------------------------------------------------------------------


def test_a_sender_acknowledged_recently_is_not_acknowledged_again(engine, store_settings):
    first = ingest_and_normalize(engine, mail())
    # The first case was resolved long ago (past the reopen window): the next mail opens a
    # new case, but the person heard from us less than a day ago.
    with engine.begin() as conn:
        conn.execute(
            update(Case)
            .where(Case.id == first.case_id)
            .values(status="resolved", resolved_at=utcnow() - timedelta(days=30))
        )
    second = ingest_and_normalize(engine, mail("Another problem"))
    assert second.case_id != first.case_id
    reason = case_row(engine, second.case_id).ack_reason
    assert case_row(engine, second.case_id).ack_state == "withheld"
    assert reason.startswith("sender already acknowledged at ") and reason.endswith("within 24 h")
    assert len(outbox_rows(engine)) == 1

    # With the window turned off the same situation is acknowledged.
    with engine.begin() as conn:
        conn.execute(
            update(Case)
            .where(Case.id == second.case_id)
            .values(status="resolved", resolved_at=utcnow() - timedelta(days=30))
        )
    ingest(engine, mail("A third problem"))
    normalizer = Normalizer(
        engine,
        store_settings,
        acks=AckSettings(sender_window_hours=0),
        mail_auth=test_mail_auth(),
        parsers=parser_table(),
    )
    (third,) = normalizer.drain()
    assert case_row(engine, third.case_id).ack_state == "queued"
    assert len(outbox_rows(engine)) == 2


def test_imported_history_is_cased_but_never_acknowledged(engine):
    from normalizer.intake import RawInput, store

    store(
        engine,
        [RawInput("import", "email", "import:1", mail(), acknowledge=False)],
    )
    (outcome,) = normalize(engine)
    assert outcome.state == "done"
    case = case_row(engine, outcome.case_id)
    assert (case.ack_state, case.ack_reason) == (
        "withheld",
        "imported history is never acknowledged",
    )
    assert outbox_rows(engine) == []
    # Importing is audited once per run by the import itself, not once per case.
    assert audit_actions(engine, outcome.case_id) == []


def test_twitter_and_reddit_cases_are_acknowledged_by_the_worker_through_their_routes(engine):
    """Their connectors choose a public reply or a DM (the ack-route table); the worker
    queues it in the transaction that opens the case, audited with its promised time."""
    from normalizer.intake import RawInput, store
    from normalizer.message import InboundMessage, Sender

    (stored,) = store(engine, [RawInput("twitter", "twitter", "tweet:1", b"{}")])
    normalizer = Normalizer(
        engine,
        StoreSettings(),
        mail_auth=test_mail_auth(),
        parsers=parser_table(),
        ack_routes=ack_route_table(ConnectorsSettings()),
    )
    assert normalizer.claim(5) == [stored.intake_id]
    with engine.connect() as conn:
        intake = conn.execute(select(Intake).where(Intake.id == stored.intake_id)).one()
    tweet = InboundMessage(
        channel="twitter",
        visibility="public",
        dedup_key="twitter:1",
        sender=Sender(kind="twitter", handle="1432167890", name="Ann"),
        received_at=utcnow(),
        external_id="1",
        text="@support I am locked out",
    )
    outcome = normalizer._persist(intake, tweet)
    case = case_row(engine, outcome.case_id)
    assert case.ack_state == "queued"
    (row,) = outbox_rows(engine)
    assert (row.case_id, row.kind, row.channel, row.recipient) == (
        outcome.case_id,
        "ack",
        "twitter",
        "1432167890",
    )
    # A public reply to the tweet: the reference, never the case token.
    assert row.payload["mode"] == "tweet" and row.payload["in_reply_to_tweet_id"] == "1"
    assert case.reference in row.body and case.token not in row.body
    [queued] = [
        after
        for action, after in audit_actions(engine, case.id)
        if action == "acknowledgement.queued"
    ]
    assert queued is not None and queued["outbox_id"] == row.id and queued["eta_at"]


# --- the expected response time --------------------------------------------------------------


NEUTRAL = "A question about my invoice"


def _history(engine, answered: int, open_ahead: int) -> None:
    """`answered` cases first answered within the last week, `open_ahead` still open."""
    for i in range(answered + open_ahead):
        ingest_and_normalize(engine, mail(f"old {i}", sender=f"P{i} <p{i}@example.net>"))
    now = utcnow()
    with engine.begin() as conn:
        # The first case is ten days old, so the throughput window is the whole week.
        conn.execute(update(Case).where(Case.id == 1).values(created_at=now - timedelta(days=10)))
        for case_id in range(1, answered + 1):
            conn.execute(
                update(Case)
                .where(Case.id == case_id)
                .values(
                    status="resolved",
                    first_response_at=now - timedelta(hours=case_id),
                    resolved_at=now - timedelta(hours=case_id),
                )
            )


def test_the_expected_time_comes_from_the_queue_and_recent_throughput(engine):
    _history(engine, answered=14, open_ahead=3)
    before = utcnow()
    # No content rule matches (one would bring the case forward in the queue).
    outcome = ingest_and_normalize(engine, mail(NEUTRAL, body="Where is my invoice?"))
    after = utcnow()
    (action, after_audit) = audit_actions(engine, outcome.case_id)[0]
    assert action == "acknowledgement.queued" and after_audit is not None
    assert (after_audit["eta_basis"], after_audit["ahead"]) == ("queue", 3)
    # 14 answered in 7 days (168 h) is 12 h each; fourth in line is 48 h from now.
    eta_at = datetime.fromisoformat(after_audit["eta_at"])
    assert before + timedelta(hours=48) <= eta_at <= after + timedelta(hours=48, minutes=1)
    body = outbox_rows(engine)[-1].body
    assert "A person will answer you by " in body


def test_with_little_history_the_sla_target_is_promised(engine):
    _history(engine, answered=2, open_ahead=1)
    outcome = ingest_and_normalize(engine, mail(NEUTRAL, body="Where is my invoice?"))
    (_, after_audit) = audit_actions(engine, outcome.case_id)[0]
    case = case_row(engine, outcome.case_id)
    assert after_audit is not None and after_audit["eta_basis"] == "sla"
    assert after_audit["eta_at"] == case.due_at.isoformat()
    assert "within about 4 hours" in outbox_rows(engine)[-1].body
