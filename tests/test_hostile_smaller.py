"""Issue 16, attack 5 ("smaller"), by email: Auto-Submitted per RFC 3834, source routes at
RCPT, and a From that is not one clean address.

Each attack as it was tried: the mail sent by smtplib to our running SMTP server (the real
connector on a socket, intake, the normalizer, the outbox delivering to a real SMTP sink),
on SQLite and PostgreSQL; and the small pure functions behind them, as tables of realistic
header values with the expected answers written out by hand from the RFCs."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from connectors.smtp.server import has_source_route
from inbox.models import Case, Contact, Identity, Intake, Message, Outbox
from normalizer.mail import automated_reason, check_from, clean_address, parse_email
from tests.support.helpers import normalize
from tests.support.outbox_helpers import drainer_for
from tests.support.sink import Sink
from tests.support.smtp_support import smtp_server

OURS = "help@support.example.com"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def raw_mail(from_header: str, *, message_id: str, extra: str = "", subject: str = "Help") -> bytes:
    return (
        f"From: {from_header}\r\n"
        f"To: {OURS}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        f"{extra}"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "I cannot log in since my phone was stolen.\r\n"
    ).encode()


def message_row(engine: Engine, message_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(
                Message.automated,
                Message.from_handle,
                Message.meta,
                Case.ack_state,
                Case.ack_reason,
                Case.contact_id,
            )
            .join(Case, Case.id == Message.case_id)
            .where(Message.external_id == message_id)
        ).one()


def contact_handles(engine: Engine, contact_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(Identity.handle).where(Identity.contact_id == contact_id)).scalars()
        )


def send_raw(port: int, mail_from: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        assert client.sendmail(mail_from, [OURS], raw) == {}


# --- Auto-Submitted (RFC 3834): anything but "no" is a robot ----------------------------------

AUTO_SUBMITTED = [
    # (header value as sent, the keyword when automated, or None when a person sent it)
    ("auto-replied", "auto-replied"),
    ("auto-generated", "auto-generated"),
    ("auto-notified", "auto-notified"),
    ("notify-list", "notify-list"),  # the attack: it begins with "no"
    ("Auto-Replied", "auto-replied"),
    ('auto-replied; owner-email="ann@example.org"', "auto-replied"),
    ("auto-notified; owner-email=list-owner@lists.example.org", "auto-notified"),
    ("(vacation) auto-replied", "auto-replied"),
    ("nonsense-we-never-heard-of", "nonsense-we-never-heard-of"),
    ("noreply", "noreply"),
    ("no", None),
    ("No", None),
    (" no ", None),
    ("no (written by a person)", None),
    ("no; reason=human", None),
    ("(a comment) no", None),
]


@pytest.mark.parametrize(("value", "keyword"), AUTO_SUBMITTED)
def test_auto_submitted_anything_but_no_is_automated(value: str, keyword: str | None) -> None:
    reason = automated_reason(
        {"auto-submitted": value}, "ann@example.org", "ann@example.org", "text/plain"
    )
    assert reason == (f"auto-submitted: {keyword}" if keyword else None)


def test_auto_submitted_absent_or_empty_is_a_person() -> None:
    for headers in ({}, {"auto-submitted": ""}, {"auto-submitted": "  "}):
        assert automated_reason(headers, "ann@example.org", "ann@example.org", "text/plain") is None


def test_notify_list_by_smtp_is_never_acknowledged(db_url: str, engine: Engine, sink: Sink) -> None:
    notify = raw_mail(
        "Lists <lists@lists.example.org>",
        message_id="notify-1@lists.example.org",
        extra='Auto-Submitted: notify-list; owner-email="owner@lists.example.org"\r\n',
        subject="Your subscription",
    )
    person = raw_mail(
        "Ann Example <ann@example.org>",
        message_id="person-1@example.org",
        extra="Auto-Submitted: no\r\n",
        subject="Locked out",
    )
    with smtp_server(db_url) as server:
        send_raw(server.port, "bounces@lists.example.org", notify)
        send_raw(server.port, "ann@example.org", person)
    normalize(engine)
    drainer_for(engine, sink).drain_once()

    robot = message_row(engine, "notify-1@lists.example.org")
    assert robot.automated == "auto-submitted: notify-list"
    assert robot.ack_state == "withheld"
    assert "auto-submitted: notify-list" in (robot.ack_reason or "")
    assert all("lists.example.org" not in r for d in sink.received for r in d.rcpt_tos)
    # The control: "no" is a person; whatever else decides its acknowledgement, not this.
    human = message_row(engine, "person-1@example.org")
    assert human.automated is None
    assert "auto-submitted" not in (human.ack_reason or "")


# --- source routes get 550 -----------------------------------------------------------------

SOURCE_ROUTES = [
    "<@evil.example:help@support.example.com>",
    "<@evil.example,@relay.example:help@support.example.com>",
    "< @evil.example , @relay.example :help@support.example.com>",
    "<,@evil.example:help@support.example.com>",
    "<(a comment)@evil.example:help@support.example.com>",
    "<@[192.0.2.1]:help@support.example.com>",
    "<@support.example.com:help@support.example.com>",  # routed through ourselves
    "@evil.example:help@support.example.com",  # without the angle brackets
]
NOT_ROUTES = [
    "<help@support.example.com>",
    "help@support.example.com",
    '<"@evil.example:x"@support.example.com>',  # a quoted local part, not a route
    "<help@support.example.com> NOTIFY=NEVER",
]


@pytest.mark.parametrize("path", SOURCE_ROUTES)
def test_a_source_route_is_seen(path: str) -> None:
    assert has_source_route(path)


@pytest.mark.parametrize("path", NOT_ROUTES)
def test_a_plain_path_is_no_route(path: str) -> None:
    assert not has_source_route(path)


def test_source_routes_get_550_at_rcpt_and_nothing_is_stored(db_url: str, engine: Engine) -> None:
    with smtp_server(db_url) as server, smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("mx.evil.example")
        client.mail("spam@evil.example")
        for path in SOURCE_ROUTES:
            # smtplib.rcpt() would rewrite the path through email.utils.parseaddr, which
            # drops the route: the command goes as an attacker types it.
            code, reply = client.docmd("RCPT", f"TO:{path}")
            assert code == 550, (path, reply)
        with pytest.raises(smtplib.SMTPDataError) as no_data:
            client.data(b"Subject: relay me\r\n\r\nnow\r\n")
        assert no_data.value.smtp_code == 503  # no recipient was accepted
        client.rset()
        # The same session still serves a plain recipient, and a routed MAIL FROM is accepted
        # with its route dropped (RFC 5321, appendix C): nothing is ever sent along it.
        code, _ = client.docmd("MAIL", "FROM:<@relay.example:ann@example.org>")
        assert code == 250
        code, _ = client.docmd("RCPT", f"TO:<{OURS}>")
        assert code == 250
        code, _ = client.data(raw_mail("Ann <ann@example.org>", message_id="route-ok@example.org"))
        assert code == 250
    with engine.connect() as conn:
        envelopes = list(conn.execute(select(Intake.envelope)).scalars())
    assert [(e["mail_from"], e["rcpt_tos"]) for e in envelopes] == [("ann@example.org", [OURS])]


# --- a From that is not one clean address ---------------------------------------------------

FROM_HEADERS = [
    # (the From header as written, the address it gives, or the start of the problem)
    ("Ann Example <ann@example.org>", "ann@example.org"),
    ('"Example, Ann" <Ann.Example@Example.ORG>', "ann.example@example.org"),
    ("ann@example.org (Ann Example)", "ann@example.org"),
    ("=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.de>", "joerg@example.de"),
    ("Jörg <jörg@bücher.example>", "jörg@bücher.example"),
    ("<Ann+Support@example.org>", "ann+support@example.org"),
    # The attack: an encoded-word that decodes to a line break and a Bcc.
    (
        "=?utf-8?q?Ann=0D=0ABcc:_victim@evil.example?= <inj1@example.org>",
        "From cannot be parsed",
    ),
    ("=?utf-8?q?Ann=0ABcc:?= <inj2@example.org>", "From cannot be parsed"),
    ("ann@example.org, mallory@evil.example", "From names 2 addresses"),
    ("Ann <ann@example.org>, Bob <bob@example.org>", "From names 2 addresses"),
    ("Undisclosed recipients:;", "From is a group"),
    ("Support team: ann@example.org;", "From is a group"),
    ("", "From names no address"),
    ("Ann Example", "From is not a usable address"),
    ("<ann>", "From is not a usable address"),
    ("ann@localhost", "From is not a usable address"),
    ("ann@[192.0.2.1]", "From is not a usable address"),
    ("ann@192.0.2.1", "From is not a usable address"),
    ('"ann smith"@example.org', "From is not a usable address"),
    ('"ann\\"@evil"@example.org', "From is not a usable address"),
    ("ann@evil.example?=", "From is not a usable address"),
    ("ann@-evil.example", "From is not a usable address"),
    ("ann@evil_example.org", "From is not a usable address"),
]


@pytest.mark.parametrize(("header", "expected"), FROM_HEADERS)
def test_check_from(header: str, expected: str) -> None:
    found = check_from(header)
    if "@" in expected and " " not in expected:
        assert (found.address, found.problem) == (expected, None)
    else:
        assert found.address == ""
        assert found.problem is not None and found.problem.startswith(expected), found


CLEAN = [
    ("Ann@Example.org", "ann@example.org"),
    ("ann@example.org.", "ann@example.org"),  # a fully qualified domain
    ("o'brien@example.ie", "o'brien@example.ie"),
    ("a.b-c_d+tag@mail.example.co.uk", "a.b-c_d+tag@mail.example.co.uk"),
    ("ann@xn--bcher-kva.example", "ann@xn--bcher-kva.example"),
    ("x" * 64 + "@example.org", "x" * 64 + "@example.org"),
    ("x" * 65 + "@example.org", None),
    ("a..b@example.org", None),
    (".ann@example.org", None),
    ("ann.@example.org", None),
    ("ann@example", None),
    ("ann@@example.org", None),
    ("a@b@example.org", None),
    ("ann @example.org", None),
    ("ann\t@example.org", None),
    ("ann\x07@example.org", None),
    ("ann\u200b@example.org", None),  # a zero-width space
    ("ann\u202e@example.org", None),  # a right-to-left override
    ("ann\u00a0x@example.org", None),  # a no-break space
    ("ann@exa mple.org", None),
    ("ann@example.123", None),
    ("@example.org", None),
    ("ann@", None),
]


@pytest.mark.parametrize(("spec", "expected"), CLEAN)
def test_clean_address(spec: str, expected: str | None) -> None:
    assert clean_address(spec) == expected


def parsed(raw: bytes, mail_from: str | None = None) -> Any:
    envelope = {"mail_from": mail_from} if mail_from is not None else {}
    return parse_email(raw, envelope=envelope, received_at=T0)


def test_without_a_from_reply_to_never_names_the_sender() -> None:
    no_from = (
        b"Reply-To: victim@evil.example\r\nTo: help@support.example.com\r\n"
        b"Subject: x\r\nMessage-ID: <nf@example.org>\r\n\r\nbody\r\n"
    )
    message = parsed(no_from)
    assert message.sender.anonymous and message.sender.handle == ""
    assert message.meta["from_problem"]["reason"] == "the mail has no From header"
    # The envelope's MAIL FROM (what SPF checks) is used when it is clean, never garbage.
    assert parsed(no_from, "ann@example.org").sender.handle == "ann@example.org"
    assert parsed(no_from, "_victim@evil.example?=").sender.handle == ""


def test_two_from_headers_make_an_anonymous_sender() -> None:
    raw = raw_mail("ann@example.org", message_id="two@example.org").replace(
        b"To:", b"From: mallory@evil.example\r\nTo:", 1
    )
    message = parsed(raw, "ann@example.org")
    assert message.sender.handle == "" and message.sender.anonymous
    assert message.meta["from_problem"]["reason"] == "the mail has 2 From headers"


def test_the_injected_from_by_smtp_reaches_nobody(db_url: str, engine: Engine, sink: Sink) -> None:
    injected = raw_mail(
        "=?utf-8?q?Ann=0D=0ABcc:_victim@evil.example?= <inj1@example.org>",
        message_id="inj1@example.org",
        subject="Reset my account",
    )
    with smtp_server(db_url) as server:
        send_raw(server.port, "inj1@example.org", injected)
    normalize(engine)
    drainer_for(engine, sink).drain_once()

    row = message_row(engine, "inj1@example.org")
    # An unverified case: the text is kept for an agent, the sender is nobody.
    assert row.from_handle == ""
    assert contact_handles(engine, row.contact_id) == []
    with engine.connect() as conn:
        name = conn.execute(select(Contact.name).where(Contact.id == row.contact_id)).scalar_one()
        garbage = conn.execute(
            select(func.count())
            .select_from(Identity)
            .where(Identity.handle.like("%victim%") | Identity.handle.like("%?=%"))
        ).scalar_one()
        outbox = list(conn.execute(select(Outbox.recipient)).scalars())
    assert "victim" not in name and garbage == 0
    assert row.meta["from_problem"]["reason"].startswith("From cannot be parsed")
    assert "victim@evil.example" in row.meta["from_problem"]["claimed"]  # shown as claimed
    assert row.ack_state == "withheld"
    assert outbox == []
    assert sink.received == []
