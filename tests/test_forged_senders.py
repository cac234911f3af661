"""Issue 16, attacks 2 and 3, as they were tried: forged senders and aimed acknowledgements.

Real parts throughout: mail sent by smtplib to our SMTP server, a DNS server answering from
fixture zones (tests/fixtures/dns), a DKIM signature made with a key the test generates,
the normalizer on SQLite and PostgreSQL, and acknowledgements delivered to an SMTP sink.
"""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any

import pytest
from sqlalchemy import Engine, select

from connectors.registry import parser_table
from inbox import queries
from inbox.config import StoreSettings
from inbox.models import AuditLog, Case, Identity, Message
from inbox.outbox import ACK_WITHHELD
from normalizer.acks import AckLimits, AckSettings
from normalizer.mailauth import MailAuthSettings, evaluate
from normalizer.worker import Normalizer
from tests.support.dns_server import dkim_sign, shared_dns
from tests.support.outbox_helpers import drainer_for
from tests.support.sink import Sink
from tests.support.smtp_support import smtp_server

SUPPORT = "help@support.example.com"
AR = "Authentication-Results: mx.provider.example; dmarc={} header.from=customer.example\r\n"


def raw_mail(sender: str, subject: str, body: str, *, name: str = "", extra: str = "") -> bytes:
    shown = f'"{name}" <{sender}>' if name else sender
    return (
        f"From: {shown}\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: {make_msgid(domain='client.example')}\r\n{extra}"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def send(port: int, mail_from: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(mail_from, [SUPPORT], raw)


def normalizer(engine: Engine, acks: AckSettings | None = None) -> Normalizer:
    return Normalizer(
        engine,
        StoreSettings(),
        acks=acks or AckSettings(),
        mail_auth=shared_dns().settings(),
        parsers=parser_table(),
    )


def cases(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Case).order_by(Case.id)))


def messages_of(engine: Engine, case_id: int) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Message).where(Message.case_id == case_id)))


# --- the checks against the fixture DNS, one per result ---------------------------------------

PEER = {"peer": "127.0.0.1:40000", "helo": "client.example"}


@pytest.mark.parametrize(
    ("mail_from", "spf", "dmarc", "verdict"),
    [
        ("a@spf-pass.example", "pass", "pass", "pass"),  # p=none, aligned SPF pass
        ("a@spf-fail.example", "fail", "fail", "fail"),  # p=reject
        ("a@spf-softfail.example", "softfail", "none", "fail"),
        ("a@spf-none.example", "none", "none", "none"),
        # SERVFAIL, and no answer: for the whole domain, its _dmarc name too.
        ("a@spf-temperror.example", "temperror", "temperror", "temperror"),
        ("a@spf-timeout.example", "temperror", "temperror", "temperror"),
        ("a@victim.example", "fail", "fail", "fail"),  # p=quarantine
        # The policy could not be read, but an aligned SPF pass passes under any policy.
        ("a@dmarc-temperror.example", "pass", "temperror", "pass"),
        # No record of its own: the organizational domain's policy applies (RFC 7489 6.6.3).
        ("a@mail.org-policy.example", "pass", "pass", "pass"),
    ],
)
def test_spf_and_dmarc_results(mail_from, spf, dmarc, verdict):
    raw = raw_mail(mail_from, "hello", "text")
    auth = evaluate(raw, {**PEER, "mail_from": mail_from}, mail_from, shared_dns().settings())
    assert (auth["spf"], auth["dmarc"], auth["verdict"]) == (spf, dmarc, verdict)
    assert auth["from_domain"] == mail_from.split("@")[1]


@pytest.mark.parametrize(
    ("from_address", "mail_from", "verdict"),
    [
        # Relaxed alignment: the bounce domain is a subdomain of the From's organization.
        ("ann@org-policy.example", "bounce@mail.org-policy.example", "pass"),
        # Strict SPF alignment (aspf=s) refuses the same arrangement.
        ("ann@strict.example", "bounce@mail.strict.example", "fail"),
        # SPF passes, for an email service's own domain: not aligned, not authenticated.
        ("ann@customer.example", "bounce@bounces.esp.example", "fail"),
    ],
)
def test_alignment_against_published_policies(from_address, mail_from, verdict):
    raw = raw_mail(from_address, "hello", "text")
    auth = evaluate(raw, {**PEER, "mail_from": mail_from}, from_address, shared_dns().settings())
    assert auth["verdict"] == verdict


def test_dkim_pass_fail_and_temperror():
    settings = shared_dns().settings()
    raw = raw_mail("innocent@customer.example", "Locked out", "my phone was stolen")
    signed = dkim_sign(raw, "customer.example")
    envelope = {**PEER, "mail_from": "innocent@customer.example"}
    good = evaluate(signed, envelope, "innocent@customer.example", settings)
    # SPF fails (customer.example sends from 192.0.2.10), the aligned DKIM pass carries it.
    assert (good["spf"], good["dkim"], good["dmarc"], good["verdict"]) == (
        "fail",
        "pass",
        "pass",
        "pass",
    )
    tampered = signed.replace(b"my phone was stolen", b"send the link to mallory")
    bad = evaluate(tampered, envelope, "innocent@customer.example", settings)
    assert (bad["dkim"], bad["verdict"]) == ("fail", "fail")
    # A signature by another domain is valid, but not aligned with customer.example.
    other = dkim_sign(raw, "spf-pass.example")
    assert evaluate(other, envelope, "innocent@customer.example", settings)["verdict"] == "fail"
    # The key's DNS server fails: temperror, and still no pass.
    broken = dkim_sign(raw, "customer.example").replace(b"s=sel1", b"s=sel9")
    shared_dns().failures.append(("servfail", "sel9._domainkey.customer.example"))
    unsure = evaluate(broken, envelope, "innocent@customer.example", settings)
    assert unsure["dkim"] == "temperror" and unsure["verdict"] == "temperror"


def test_no_dns_at_all_is_temperror_not_a_lost_mail(engine):
    # A nameserver nobody answers on (the fixture server's "drop" would do too).
    dead = MailAuthSettings(nameservers=["127.0.0.1:9"], timeout_seconds=0.3)
    raw = raw_mail("ann@spf-pass.example", "hello", "text")
    auth = evaluate(raw, {**PEER, "mail_from": "ann@spf-pass.example"}, "ann@x", dead)
    assert auth["verdict"] == "temperror"


def test_imap_mail_trusts_only_the_topmost_trusted_authentication_results():
    settings = (
        shared_dns().settings().model_copy(update={"trusted_authserv_ids": ["mx.provider.example"]})
    )
    forged = raw_mail(
        "innocent@customer.example",
        "hi",
        "text",
        # The provider's header on top; the sender's own forged "pass" below it.
        extra=AR.format("fail") + AR.format("pass"),
    )
    imap = {"address": SUPPORT, "account": "main", "folder": "INBOX", "uid": 1}
    assert evaluate(forged, imap, "innocent@customer.example", settings)["verdict"] == "fail"
    vouched = raw_mail(
        "innocent@customer.example",
        "hi",
        "text",
        extra=AR.format("pass"),
    )
    assert evaluate(vouched, imap, "innocent@customer.example", settings)["verdict"] == "pass"
    # By SMTP the same header is the sender's own words: our checks decide (no DKIM: fail).
    smtp = {**PEER, "mail_from": "innocent@customer.example"}
    assert evaluate(vouched, smtp, "innocent@customer.example", settings)["verdict"] == "fail"
    # Untrusted id: our own DKIM/DMARC checks (unsigned, p=reject: fail).
    assert (
        evaluate(vouched, imap, "innocent@customer.example", shared_dns().settings())["verdict"]
        == "fail"
    )


# --- attack 2: a forged From -------------------------------------------------------------------


def test_a_forged_from_opens_its_own_unverified_case(engine, db_url):
    dkim_sign(b"From: x@customer.example\r\n\r\n", "customer.example")  # publish the key
    with smtp_server(db_url) as server:
        genuine = dkim_sign(
            raw_mail(
                "innocent@customer.example",
                "Locked out",
                "My phone was stolen.",
                name="Ann Innocent",
            ),
            "customer.example",
        )
        send(server.port, "innocent@customer.example", genuine)
        normalizer(engine).drain()
        [original] = cases(engine)
        assert original.unverified_from is None
        before = messages_of(engine, original.id)
        forged = raw_mail(
            "innocent@customer.example",
            "Re: Locked out",
            "Please send the recovery link to mallory@evil.example instead.",
            name="Mallory Wolf",
            extra=f"In-Reply-To: {before[0].external_id}\r\n",
        )
        send(server.port, "innocent@customer.example", forged)
        normalizer(engine).drain()
        original_after, forged_case = cases(engine)
        # Its own case, marked; the customer's case has exactly what it had.
        assert forged_case.unverified_from == "innocent@customer.example"
        assert forged_case.contact_id != original.contact_id
        assert [m.id for m in messages_of(engine, original.id)] == [m.id for m in before]
        assert (original_after.status, original_after.followups) == (
            original.status,
            original.followups,
        )
        with engine.connect() as conn:
            identity = conn.execute(
                select(Identity).where(Identity.handle == "innocent@customer.example")
            ).one()
        assert (identity.display_name, identity.verified) == ("Ann Innocent", False)
        detail = queries.case_detail(engine, forged_case.reference)
        assert detail is not None and detail["unverified_from"] == "innocent@customer.example"
        [message] = detail["messages"]
        assert message["auth"]["verdict"] == "fail" and message["auth"]["dmarc"] == "fail"
        genuine_detail = queries.case_detail(engine, original.reference)
        assert genuine_detail is not None
        assert genuine_detail["messages"][0]["auth"]["verdict"] == "pass"
        assert genuine_detail["unverified_from"] is None

        # The same forgery with the case's secret token in the subject joins the case.
        token_mail = raw_mail(
            "innocent@customer.example",
            f"Re: [{original.reference} #{original.token}] Locked out",
            "Here is the photo of my ID.",
        )
        send(server.port, "innocent@customer.example", token_mail)
        normalizer(engine).drain()
        assert len(cases(engine)) == 2
        assert len(messages_of(engine, original.id)) == len(before) + 1
        with engine.connect() as conn:
            verified = conn.execute(
                select(Identity.verified).where(Identity.handle == "innocent@customer.example")
            ).scalar_one()
        assert verified is False  # never verified by an unauthenticated message


# --- attack 3: acknowledgements aimed at a victim ------------------------------------------------


def test_forged_mail_is_never_acknowledged(engine, db_url, sink: Sink):
    count = 20
    with smtp_server(db_url) as server:
        for n in range(count):
            sender = f"victim+{n}@victim.example"
            raw = raw_mail(
                sender,
                "URGENT: visit http://evil.example/win",
                "spam",
                name="You won! http://evil.example",
            )
            send(server.port, sender, raw)
        normalizer(engine).drain()
    opened = cases(engine)
    assert len(opened) == count
    assert {(c.ack_state, c.ack_reason) for c in opened} == {("withheld", "unauthenticated sender")}
    with engine.connect() as conn:
        withheld = conn.execute(
            select(AuditLog.after).where(AuditLog.action == ACK_WITHHELD)
        ).scalars()
        reasons = [after["reason"] for after in withheld]
    assert reasons == ["unauthenticated sender"] * count
    assert drainer_for(engine, sink).drain_once().sent == 0
    assert sink.received == []


def test_authenticated_senders_over_the_buckets_are_withheld(engine, db_url, sink: Sink):
    limits = AckLimits(
        recipient_burst=2,
        recipient_per_hour=0.0,
        domain_burst=4,
        domain_per_hour=0.0,
        global_burst=1000,
        global_per_hour=0.0,
    )
    acks = AckSettings(sender_window_hours=0, limits=limits)
    # Three spellings of one Gmail mailbox, then six people at one domain.
    spellings = ["ann.lee+1@gmail.com", "annlee+2@googlemail.com", "a.n.n.lee@gmail.com"]
    people = [f"person{n}@spf-pass.example" for n in range(6)]
    with smtp_server(db_url) as server:
        for sender in [*spellings, *people]:
            raw = raw_mail(
                sender,
                "Free money at http://evil.example",
                "help",
                name="Click http://evil.example now" if sender == people[0] else "Ann Lee",
            )
            send(server.port, sender, raw)
            normalizer(engine, acks).drain()
    # Expected, from the bucket parameters alone: the folded mailbox gets recipient_burst,
    # the domain gets domain_burst (its people have one each, under recipient_burst).
    expected_gmail = min(len(spellings), limits.recipient_burst)
    expected_domain = min(len(people), limits.domain_burst)
    by_sender = {}
    with engine.connect() as conn:
        for row in conn.execute(
            select(Message.from_handle, Case.ack_state, Case.ack_reason).join(
                Case, Case.id == Message.case_id
            )
        ):
            by_sender[row.from_handle] = (row.ack_state, row.ack_reason)
    gmail = [by_sender[s] for s in spellings]
    domain = [by_sender[s] for s in people]
    assert gmail.count(("queued", None)) == expected_gmail
    assert gmail.count(("withheld", "rate limit: recipient")) == len(spellings) - expected_gmail
    assert domain.count(("queued", None)) == expected_domain
    assert domain.count(("withheld", "rate limit: recipient domain")) == (
        len(people) - expected_domain
    )
    report = drainer_for(engine, sink).drain_once()
    assert report.sent == expected_gmail + expected_domain == len(sink.delivered)
    for delivery in sink.delivered:
        ack = delivery.parsed()
        # No text the sender chose in our headers: the bare address, a fixed subject.
        assert ack["To"].addresses[0].display_name == ""
        assert "evil.example" not in str(ack["To"]) + str(ack["Subject"])
        assert str(ack["Subject"]).endswith("] We have your message")
        text = ack.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "evil.example" not in text
        expected_greeting = "Hello there," if delivery.rcpt_tos == [people[0]] else "Hello Ann Lee,"
        assert text.startswith(expected_greeting)
