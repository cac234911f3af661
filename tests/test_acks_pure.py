"""Acknowledgements and outbox policy as pure functions, tested by tables of realistic inputs."""

from __future__ import annotations

import smtplib
import socket
import tomllib
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from email import policy
from email.parser import BytesParser
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.config import EmailRelaySettings
from connectors.mail.relay import classify_smtp, compose_email, serialize
from connectors.outbox import Permanent, Retriable, http_retriable
from connectors.registry import ConnectorsSettings, ack_route_table
from inbox import channels
from inbox.channels import CHANNEL_NAMES, ack_defaults
from inbox.config import BusinessHours
from inbox.outbox import Claimed
from normalizer.acks import (
    AckContent,
    AckFacts,
    AckSettings,
    AckTemplate,
    Eta,
    MailAckTemplate,
    answerable,
    channel_template,
    compose,
    describe_eta,
    expected_response,
    header_text,
    recently_acknowledged,
    withhold_reason,
)
from parity.settings import SettingsError, parse

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday
OFFICE = BusinessHours(enabled=True, timezone="UTC", start=time(9), end=time(17))


def facts(**kw: Any) -> AckFacts:
    base: dict[str, Any] = {
        "channel": "email",
        "acknowledge": True,
        "automated": None,
        "recipient": "ann@example.org",
        "anonymous": False,
        "authenticated": True,
    }
    return AckFacts(**{**base, **kw})


@pytest.mark.parametrize(
    ("given", "settings", "expected"),
    [
        (facts(), AckSettings(), None),
        (facts(acknowledge=False), AckSettings(), "imported history is never acknowledged"),
        # Imported history wins over every other reason: it was never a candidate.
        (
            facts(acknowledge=False, automated="precedence: bulk"),
            AckSettings(),
            "imported history is never acknowledged",
        ),
        (facts(), AckSettings(enabled=False), "acknowledgements are turned off"),
        (
            facts(channel="sms", recipient="+447700900123"),
            AckSettings(sms=AckTemplate(enabled=False, body="{reference}")),
            "acknowledgements on sms are turned off",
        ),
        (facts(channel="fax"), AckSettings(), "acknowledgements on fax are turned off"),
        (
            facts(automated="auto-submitted: auto-replied"),
            AckSettings(),
            "automated message (auto-submitted: auto-replied)",
        ),
        (facts(recipient="", anonymous=True), AckSettings(), "no address to answer"),
        (
            facts(channel="voice", recipient="", anonymous=True),
            AckSettings(),
            "no address to answer",
        ),
        (
            facts(recipient="ann@example.org\r\nBcc: x@evil.example"),
            AckSettings(),
            "the sender's address cannot be answered safely",
        ),
        (facts(channel="sms", recipient="+447700900123"), AckSettings(), None),
        # Issue 16: email from an unauthenticated (possibly forged) From is never answered,
        # unless the operator turned the requirement off; other channels have no such idea.
        (facts(authenticated=False), AckSettings(), "unauthenticated sender"),
        (facts(authenticated=None), AckSettings(), "unauthenticated sender"),
        (
            facts(authenticated=False),
            AckSettings(email={"require_authenticated_sender": False}),
            None,
        ),
        # A robot's mail says so whether or not its sender is authenticated.
        (
            facts(authenticated=False, automated="precedence: bulk"),
            AckSettings(),
            "automated message (precedence: bulk)",
        ),
        (facts(channel="sms", recipient="+447700900123", authenticated=None), AckSettings(), None),
    ],
)
def test_withhold_reason(given, settings, expected):
    assert withhold_reason(given, settings) == expected


@pytest.mark.parametrize(
    ("last", "window_hours", "withheld"),
    [
        (None, 24, False),
        (NOW - timedelta(hours=23, minutes=59), 24, True),
        (NOW - timedelta(hours=24, minutes=1), 24, False),
        (NOW - timedelta(minutes=5), 0, False),  # a window of 0 turns the check off
        (NOW - timedelta(hours=2), 1, False),
    ],
)
def test_recently_acknowledged(last, window_hours, withheld):
    reason = recently_acknowledged(last, NOW, AckSettings(sender_window_hours=window_hours))
    if withheld:
        assert reason is not None and f"within {window_hours} h" in reason
    else:
        assert reason is None


@pytest.mark.parametrize(
    ("channel", "recipient", "ok"),
    [
        ("email", "ann@example.org", True),
        ("email", "o'brien+support@example.co.uk", True),
        ("email", "josé@exämple.org", True),
        ("email", "ann@example.org\r\nBcc: x@y", False),
        ("email", "ann example@example.org", False),
        ("email", "ann@example.org>, <x@y", False),
        ("email", "@example.org", False),
        ("email", "ann@", False),
        ("email", "no-at-sign", False),
        ("email", "ann\u2028@example.org", False),
        ("sms", "+447700900123", True),
        ("twitter", "1432167890123456789", True),
        ("reddit", "throwaway 42", False),
    ],
)
def test_answerable(channel, recipient, ok):
    assert answerable(channel, recipient) is ok


# --- the expected response time ----------------------------------------------------------------


def test_without_enough_history_the_sla_target_is_the_estimate():
    due = NOW + timedelta(hours=4)
    eta = expected_response(
        NOW,
        ahead=30,
        answered=4,
        since=NOW - timedelta(days=7),
        due_at=due,
        hours=BusinessHours(),
        min_answered=5,
    )
    assert eta == Eta(due, "sla", 30)


@pytest.mark.parametrize(
    ("now", "since", "answered", "ahead", "hours", "expected"),
    [
        # 84 answered in 168 wall-clock hours: 2 h each; third in line: 6 h.
        (NOW, NOW - timedelta(days=7), 84, 2, BusinessHours(), NOW + timedelta(hours=6)),
        # Monday 16 10:00 to Monday 23 10:00 holds 40 working hours (7 + 4*8 + 1); 20
        # answered is 2 h each; fourth in line needs 8 h: 7 h on Monday, 1 h on Tuesday.
        (
            NOW,
            NOW - timedelta(days=7),
            20,
            3,
            OFFICE,
            datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        ),
        # Friday 16:00, 1 h each, second in line: 1 h on Friday, 1 h on Monday morning.
        (
            datetime(2026, 11, 27, 16, 0, tzinfo=UTC),
            datetime(2026, 11, 20, 16, 0, tzinfo=UTC),
            40,
            1,
            OFFICE,
            datetime(2026, 11, 30, 10, 0, tzinfo=UTC),
        ),
        # A holiday on Tuesday pushes the same estimate to Wednesday.
        (
            NOW,
            NOW - timedelta(days=7),
            20,
            3,
            BusinessHours(
                enabled=True,
                timezone="UTC",
                start=time(9),
                end=time(17),
                holidays=[date(2026, 11, 24)],
            ),
            datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
        ),
    ],
)
def test_the_estimate_follows_queue_and_throughput(now, since, answered, ahead, hours, expected):
    eta = expected_response(
        now,
        ahead=ahead,
        answered=answered,
        since=since,
        due_at=now + timedelta(hours=4),
        hours=hours,
        min_answered=5,
    )
    assert (eta.at, eta.basis, eta.ahead) == (expected, "queue", ahead)


def test_no_working_time_in_the_window_falls_back_to_the_target():
    due = NOW + timedelta(hours=4)
    eta = expected_response(
        NOW, ahead=0, answered=50, since=NOW, due_at=due, hours=OFFICE, min_answered=5
    )
    assert eta.basis == "sla" and eta.at == due


@pytest.mark.parametrize(
    ("delta", "zone", "expected"),
    [
        (timedelta(minutes=10), "UTC", "within about 15 minutes"),
        (timedelta(minutes=44), "UTC", "within about 45 minutes"),
        (timedelta(minutes=46), "UTC", "within about an hour"),
        (timedelta(minutes=60), "UTC", "within about an hour"),
        (timedelta(minutes=61), "UTC", "within about 2 hours"),
        (timedelta(hours=4), "UTC", "within about 4 hours"),
        (timedelta(hours=22, minutes=1), "UTC", "within about 23 hours"),
        (timedelta(days=3), "UTC", "by Thursday 26 November, 10:00 (UTC)"),
        (timedelta(days=3), "Europe/Berlin", "by Thursday 26 November, 11:00 (Europe/Berlin)"),
        (-timedelta(hours=1), "UTC", "within about 15 minutes"),  # overdue: as soon as can be
        # From Reddit's former wording (eta_text), where the two agreed.
        (timedelta(minutes=20), "UTC", "within about 30 minutes"),
        (timedelta(minutes=239, seconds=30), "UTC", "within about 4 hours"),
        # Where they disagreed, this one wording won: an hour, not "60 minutes"; never "as
        # soon as possible", which promises nothing; a date beyond a day, not "3 days".
        (-timedelta(minutes=30), "UTC", "within about 15 minutes"),
        # Twitter's former wording was an absolute UTC time ("31 Dec 23:59 UTC"); the one
        # wording names the desk's own time zone instead, so a reader still can't misread it.
        (
            datetime(2026, 12, 31, 23, 59, tzinfo=UTC) - NOW,
            "America/New_York",
            "by Thursday 31 December, 18:59 (America/New_York)",
        ),
    ],
)
def test_describe_eta(delta, zone, expected):
    assert describe_eta(NOW, NOW + delta, zone) == expected


# --- templates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Locked out", "Locked out"),
        ("Locked\r\nBcc: victim@example.com", "Locked Bcc: victim@example.com"),
        ("a\u2028b\u0085c\x00d\te", "a b c d e"),
        ("=?utf-8?q?a=0D=0ABcc:_x@y?=", "= ?utf-8?q?a=0D=0ABcc:_x@y?="),
        ("x" * 30, "x" * 9 + "…"),
    ],
)
def test_header_text(value, expected):
    assert header_text(value, 10 if len(value) == 30 else 200) == expected


def _compose(template: AckTemplate | None = None, **kw: Any) -> AckContent:
    args: dict[str, Any] = {
        "channel": "email",
        "reference": "C-001042",
        "token": "abcdefghjkmn",
        "public": False,
        "name": "Ann Example",
        "subject": "Locked out",
        "eta": Eta(NOW + timedelta(hours=3), "queue", 7),
        "now": NOW,
        "timezone": "UTC",
    }
    args.update(kw)
    return compose(template or channel_template("email"), **args)


def test_the_default_email_acknowledgement():
    content = _compose(other_channels="Or call +44 20 7946 0000.")
    # Issue 16: a fixed subject with the case's tag; nothing the sender wrote.
    assert content.subject == "[C-001042 #abcdefghjkmn] We have your message"
    assert content.body.startswith("Hello Ann Example,\n")
    assert "case C-001042" in content.body
    assert "within about 3 hours" in content.body
    assert "keep [C-001042 #abcdefghjkmn] in the subject" in content.body
    assert "Or call +44 20 7946 0000." in content.body
    assert "\n\n\n" not in content.body


def test_a_public_acknowledgement_never_shows_the_token():
    template = AckTemplate(body="{tag} {token} {reference}: {eta}. {follow_up}", follow_up="{tag}")
    content = _compose(template, channel="sms", public=True, name="", subject="")
    assert "abcdefghjkmn" not in content.subject + content.body
    assert content.body == "[C-001042]  C-001042: within about 3 hours. [C-001042]\n"


@pytest.mark.parametrize("channel", ["messenger", "instagram", "whatsapp"])
def test_a_public_acknowledgement_names_no_one_whatever_the_template(channel: str) -> None:
    # An operator's private-message template with {name} and {subject} also answers a
    # public comment on the same channel: the comment's answer must not carry either.
    template = AckTemplate(body="Hi {name}, about {subject}: case {reference}, {eta}.")
    public = _compose(template, channel=channel, public=True)
    private = _compose(template, channel=channel, public=False)
    assert public.body == "Hi there, about your message: case C-001042, within about 3 hours.\n"
    assert "Ann Example" in private.body and "Locked out" in private.body


def test_all_placeholders_render():
    template = MailAckTemplate(
        subject="{tag}",
        body="{reference}|{token}|{name}|{eta}|{eta_at}|{queue_position}|{channel}|{follow_up}"
        "|{subject}",
        follow_up="see {reference}",
    )
    content = _compose(template, name="", subject="")
    assert content.subject == "[C-001042 #abcdefghjkmn]"
    assert content.body == (
        "C-001042|abcdefghjkmn|there|within about 3 hours|2026-11-23T13:00:00Z|8|email|"
        "see C-001042|your message\n"
    )


def test_inbound_text_cannot_break_the_subject():
    # An email template may no longer put {subject} in the subject (below); a template built
    # in code still gets the inbound text cleaned of line breaks.
    template = AckTemplate(subject="{tag} Re: {subject}", body="{reference}")
    content = _compose(
        template,
        name="Ann\r\nBcc: evil@example.net",
        subject="Hi\r\nBcc: victim@example.com\u2028X: y",
    )
    assert "\r" not in content.subject and "\n" not in content.subject
    assert content.subject == "[C-001042 #abcdefghjkmn] Re: Hi Bcc: victim@example.com X: y"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subject": "Re: {subject}", "body": "{tag}"}, "must contain {tag}"),
        ({"subject": "{tag}", "body": "{reference.__class__}"}, "plain names"),
        ({"subject": "{tag}", "body": "{reference!r}"}, "plain names"),
        ({"subject": "{tag}", "body": "{secret}"}, "unknown placeholder {secret}"),
        ({"subject": "{tag}", "body": "{eta:>20}"}, "plain names"),
        ({"subject": "{tag}", "body": "x", "follow_up": "{follow_up}"}, "cannot include itself"),
        # Issue 16: text the sender chose never goes into our headers.
        ({"subject": "{tag} Re: {subject}", "body": "{tag}"}, "cannot use {subject}"),
        ({"subject": "{tag} for {name}", "body": "{tag}"}, "cannot use {name}"),
    ],
)
def test_bad_templates_are_refused_at_load(kwargs, message):
    with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        MailAckTemplate(**kwargs)


def test_a_template_must_name_the_case():
    with pytest.raises(ValidationError, match="case reference"):
        AckTemplate(body="We got it.")


# --- the templates are keyed by the channel registry ----------------------------------------

# How each channel's new case is acknowledged, written out by hand: from its
# [acknowledgements.<channel>] template, or by the ack route its connector declares (Twitter
# and Reddit choose a public reply or a private message, with their own settings' templates).
ACKNOWLEDGED_BY = {
    "email": "template",
    "sms": "template",
    "voice": "template",
    "twitter": "route",
    "reddit": "route",
    "whatsapp": "template",
    "messenger": "template",
    "instagram": "template",
    "telegram": "template",
    "web": "route",
}
# The channels with an [acknowledgements.<channel>] table, in the registry's order.
TEMPLATED = ", ".join(channel for channel, way in ACKNOWLEDGED_BY.items() if way == "template")
# A handle each templated channel's sender could have.
RECIPIENT = {
    "email": "ann@example.org",
    "sms": "+447700900123",
    "voice": "+447700900123",
    "whatsapp": "447700900123",
    "messenger": "6024186777612345",
    "instagram": "17841400000000042",
    "telegram": "5012345678",
}


@pytest.mark.parametrize("channel", sorted(ACKNOWLEDGED_BY))
def test_every_channel_is_acknowledged_one_way(channel):
    assert set(CHANNEL_NAMES) == set(ACKNOWLEDGED_BY)
    routes = ack_route_table(ConnectorsSettings())
    templated = ACKNOWLEDGED_BY[channel] == "template"
    assert (channel in ack_defaults()) is templated
    assert (AckSettings().template(channel) is not None) is templated
    assert (channel in routes) is not templated


@pytest.mark.parametrize("channel", sorted(RECIPIENT))
def test_each_templated_channel_is_acknowledged_with_its_registry_default(channel):
    default = ack_defaults()[channel]
    template = AckSettings().template(channel)
    assert template is not None and template.enabled
    assert (template.subject, template.body, template.follow_up) == (
        default.subject,
        default.body,
        default.follow_up,
    )
    given = facts(channel=channel, recipient=RECIPIENT[channel])
    assert withhold_reason(given, AckSettings()) is None
    content = _compose(template, channel=channel, public=False)
    assert "C-001042" in content.subject + content.body
    assert "within about 3 hours" in content.body


def test_a_partial_table_is_laid_over_the_channel_default():
    settings = parse(
        tomllib.loads(
            '[acknowledgements.sms]\nbody = "Got it: {reference}. {follow_up}"\n'
            "[acknowledgements.email]\nrequire_authenticated_sender = false\n"
        )
    ).acknowledgements
    sms = settings.template("sms")
    assert sms is not None and sms.body == "Got it: {reference}. {follow_up}"
    # The keys not written keep the channel's default, as settings.toml gives it.
    assert sms.follow_up == "Reply to this number to add anything."
    assert sms.enabled is True
    email = settings.template("email")
    assert isinstance(email, MailAckTemplate)
    assert email.require_authenticated_sender is False
    assert email.subject == "{tag} We have your message"
    assert settings.template("voice") == AckSettings().template("voice")
    # In code too: a table is a partial dict, and the result dumps in the TOML's shape.
    assert AckSettings(sms={"body": "Got it: {reference}. {follow_up}"}).template("sms") == sms
    dumped = settings.model_dump()
    assert dumped["email"]["require_authenticated_sender"] is False
    assert AckSettings.model_validate(dumped) == settings


def test_the_settings_dump_as_parity_settings_show_printed_them():
    # `parity settings show` prints model_dump(mode="json"): the same keys in the same order
    # as when every channel's table was a field, a mail template's extra key included.
    dumped = AckSettings().model_dump(mode="json")
    assert list(dumped) == [
        "enabled",
        "sender_window_hours",
        "throughput_days",
        "min_answered",
        "max_queue_count",
        "other_channels",
        "status_base_url",
        "limits",
        *TEMPLATED.split(", "),
    ]
    assert list(dumped["email"]) == [
        "enabled",
        "subject",
        "body",
        "follow_up",
        "require_authenticated_sender",
    ]
    assert list(dumped["sms"]) == ["enabled", "subject", "body", "follow_up"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[acknowledgements.fax]\nbody = "{reference}"\n',
            "acknowledgements.fax: unknown channel 'fax': [acknowledgements] has a table for "
            + TEMPLATED,
        ),
        (
            '[acknowledgements.twitter]\nbody = "{reference}"\n',
            "unknown channel 'twitter': [acknowledgements] has a table for "
            + TEMPLATED
            + "; twitter is acknowledged by its connector",
        ),
        ("[acknowledgements]\nenabeld = true\n", "unknown key 'acknowledgements.enabeld'"),
        (
            "[acknowledgements.sms]\nrequire_authenticated_sender = false\n",
            "unknown key 'acknowledgements.sms.require_authenticated_sender'",
        ),
        (
            '[acknowledgements.voice]\nsubjcet = "x"\n',
            "unknown key 'acknowledgements.voice.subjcet'",
        ),
        (
            '[acknowledgements.messenger]\nbody = "We got it."\n',
            "acknowledgements.messenger: Value error, an acknowledgement must give the case "
            "reference",
        ),
        (
            '[acknowledgements.whatsapp]\nbody = "{nmae}"\n',
            "acknowledgements.whatsapp.body: Value error, unknown placeholder {nmae}",
        ),
        ("[acknowledgements]\nsms = 3\n", "acknowledgements.sms: Input should be"),
    ],
)
def test_bad_channel_tables_are_refused_by_name(toml, message):
    with pytest.raises(SettingsError) as raised:
        parse(tomllib.loads(toml))
    assert message in str(raised.value)


def test_a_channel_registered_with_a_default_is_acknowledged_with_it(monkeypatch):
    """A new channel is one registry entry: its default template comes with it, and
    [acknowledgements.<channel>] takes a table for it, with no edit to AckSettings."""
    # Facts of a number channel, its own name and default acknowledgement.
    fax = replace(
        channels.CHANNEL_FACTS["sms"],
        name="fax",
        reply_channel="fax",
        label="fax",
        ack=channels.AckText(
            "Fax received: case {reference}, answer {eta}. {follow_up}", "Fax us."
        ),
    )
    monkeypatch.setattr(channels, "CHANNEL_FACTS", {**channels.CHANNEL_FACTS, "fax": fax})
    template = AckSettings().template("fax")
    assert type(template) is AckTemplate
    given = facts(channel="fax", recipient="+4930123456")
    assert withhold_reason(given, AckSettings()) is None
    content = _compose(template, channel="fax")
    assert content.body == "Fax received: case C-001042, answer within about 3 hours. Fax us.\n"
    written = parse(tomllib.loads('[acknowledgements.fax]\nfollow_up = "Or call."\n'))
    fax_template = written.acknowledgements.template("fax")
    assert fax_template is not None and fax_template.follow_up == "Or call."
    assert fax_template.body == "Fax received: case {reference}, answer {eta}. {follow_up}"


# --- retry policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retriable"),
    [
        (200, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (408, True),
        (422, False),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
    ],
)
def test_http_retriable(status, retriable):
    assert http_retriable(status) is retriable


@pytest.mark.parametrize(
    ("exc", "retriable", "text"),
    [
        (smtplib.SMTPDataError(451, b"4.3.0 Try again later"), True, "451 4.3.0"),
        (smtplib.SMTPDataError(550, b"5.7.1 Message rejected"), False, "permanent: 550"),
        (smtplib.SMTPRecipientsRefused({"a@b.c": (550, b"5.1.1 User unknown")}), False, "550"),
        (smtplib.SMTPRecipientsRefused({"a@b.c": (452, b"4.2.2 Mailbox full")}), True, "452"),
        (smtplib.SMTPSenderRefused(553, b"5.7.1 Not our domain", "x@y"), False, "553"),
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 Bad credentials"), True, "credentials"),
        (smtplib.SMTPConnectError(554, b"no service"), True, "refused the connection"),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True, "closed"),
        (TimeoutError("timed out"), True, "timed out"),
        (OSError(110, "Connection timed out"), True, "timed out"),
        (ConnectionRefusedError(111, "Connection refused"), True, "connection failed"),
        (socket.gaierror(-2, "Name or service not known"), True, "connection failed"),
        (Retriable("no relay configured"), True, "no relay"),
        (Permanent("cannot address"), False, "cannot address"),
        (ValueError("something odd"), False, "ValueError"),
    ],
)
def test_classify_smtp(exc, retriable, text):
    got_retriable, description = classify_smtp(exc)
    assert got_retriable is retriable
    assert text in description


# --- composing the email --------------------------------------------------------------------------

RELAY = EmailRelaySettings(
    host="relay.example.net", from_address="Support <help@support.example.com>"
)
OUR_HEADERS = [
    "auto-submitted",
    "content-transfer-encoding",
    "content-type",
    "date",
    "from",
    "in-reply-to",
    "message-id",
    "mime-version",
    "references",
    "subject",
    "to",
    "x-auto-response-suppress",
    "x-parity-case",
]


def row(**kw: Any) -> Claimed:
    base: dict[str, Any] = {
        "id": 7,
        "case_id": 1,
        "kind": "ack",
        "channel": "email",
        "recipient": "ann@example.org",
        "subject": "[C-001042 #abcdefghjkmn] Re: Locked out",
        "body": "Hello Ann,\n",
        "payload": {
            "to_name": "Ann",
            "in_reply_to": "m1@example.org",
            "references": ["m0@example.org", "m1@example.org"],
        },
        "attempts": 0,
        "message_id_header": "parity.C-001042.abcdefghjkmn.7.00ff@support.example.com",
        "created_at": NOW,
        "case_reference": "C-001042",
        "case_token": "abcdefghjkmn",
    }
    base.update(kw)
    return Claimed(**base)


def headers_of(data: bytes) -> list[str]:
    parsed = BytesParser(policy=policy.default).parsebytes(data)
    return sorted(k.lower() for k in parsed)


def test_an_acknowledgement_is_marked_as_ours_and_automatic():
    msg = compose_email(row(), RELAY, NOW)
    data = serialize(msg)
    assert headers_of(data) == OUR_HEADERS
    assert msg["Message-ID"] == "<parity.C-001042.abcdefghjkmn.7.00ff@support.example.com>"
    assert msg["In-Reply-To"] == "<m1@example.org>"
    assert msg["References"] == "<m0@example.org> <m1@example.org>"
    assert msg["X-Parity-Case"] == "C-001042"
    assert msg["Auto-Submitted"] == "auto-replied"


def test_a_contact_form_confirmation_is_marked_machine_made():
    msg = compose_email(row(kind="confirm"), RELAY, NOW)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert compose_email(row(kind="reply"), RELAY, NOW)["Auto-Submitted"] is None


EVIL_NAME = "Ann\r\nBcc: evil@example.net"
# Encoded words that decode to CR/LF: Python < 3.11.10 writes them out as real line breaks.
EVIL_WORD = "=?utf-8?q?Ann=0D=0ABcc=3A_evil=40example=2Enet?="
EVIL_B64 = "=?utf-8?b?SGkNCkJjYzogZXZpbEBleGFtcGxlLm5ldA==?="


def _payload(**kw: Any) -> dict[str, Any]:
    return {
        "to_name": "Ann",
        "in_reply_to": "m1@example.org",
        "references": ["m1@example.org"],
    } | kw


@pytest.mark.parametrize(
    ("changes", "dropped"),
    [
        ({"payload": _payload(to_name=EVIL_NAME)}, ()),
        ({"payload": _payload(to_name=EVIL_WORD)}, ()),
        ({"subject": f"[C-001042 #abcdefghjkmn] {EVIL_B64}"}, ()),
        ({"subject": "[C-001042 #abcdefghjkmn] Hi\r\nBcc: evil@example.net"}, ()),
        # An id that is not a plain Message-ID is left out, never written.
        (
            {
                "payload": _payload(
                    in_reply_to="m1@example.org>\r\nBcc: <evil@example.net",
                    references=["m1@example.org\r\nBcc: evil@example.net", "m1@example.org"],
                )
            },
            ("in-reply-to",),
        ),
    ],
)
def test_inbound_values_never_add_a_header(changes, dropped):
    data = serialize(compose_email(row(**changes), RELAY, NOW))
    assert headers_of(data) == [h for h in OUR_HEADERS if h not in dropped]
    assert b"\nBcc" not in data and b"\rBcc" not in data


def test_a_recipient_that_is_not_an_address_is_a_permanent_failure():
    with pytest.raises(Permanent):
        compose_email(row(recipient="ann@example.org>\r\nBcc: <evil@example.net"), RELAY, NOW)


@pytest.mark.parametrize(
    ("base", "public", "expected"),
    [
        (
            "https://help.example.com",
            False,
            "C-001042: see https://help.example.com/status/C-001042?t=abcdefghjkmn",
        ),
        # A trailing slash is not doubled.
        (
            "https://help.example.com/support/",
            False,
            "C-001042: see https://help.example.com/support/status/C-001042?t=abcdefghjkmn",
        ),
        # A public reply never carries the link: the token is what opens the case's page.
        ("https://help.example.com", True, "C-001042: see"),
        # No base URL, no link.
        ("", False, "C-001042: see"),
    ],
)
def test_the_status_url_placeholder(base, public, expected):
    template = AckTemplate(subject="", body="{reference}: see {status_url}")
    content = _compose(template, status_base_url=base, public=public)
    assert content.body.strip() == expected
