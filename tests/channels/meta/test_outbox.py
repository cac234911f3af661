"""Sending on Meta's channels through the shared outbox drainer, against the fake Graph API:
the reply windows (WhatsApp's 24 hours and templates, Messenger's HUMAN_AGENT tag for 7 days,
then a refusal with its reason), public replies to comments with nothing personal, and what
each Graph error code does to the row."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from connectors.config import OutboxSettings
from connectors.meta.graph import Graph
from connectors.meta.outbox import (
    INSTAGRAM_CLOSED,
    MESSENGER_CLOSED,
    TEMPLATE_REASON,
    MetaSender,
    Stop,
    Window,
    window,
)
from connectors.meta.parse import events
from connectors.meta.settings import MetaSettings
from connectors.outbox import OutboxDrainer
from inbox.db import write
from inbox.models import Case, Message, Outbox, utcnow
from inbox.outbox import enqueue
from inbox.secrets import Secret
from normalizer.intake import RawInput, store
from tests.channels.meta.support import (
    PAGE_TOKEN,
    PHONE_NUMBER_ID,
    WA_TOKEN,
    FakeGraph,
    body_of,
    error,
    fake_graph,
    fixture,
    settings,
)
from tests.support.helpers import normalize

NOW = utcnow()


@pytest.mark.parametrize(
    ("channel", "age", "expected"),
    [
        ("whatsapp", timedelta(minutes=5), Window("text")),
        ("whatsapp", timedelta(hours=23, minutes=59), Window("text")),
        ("whatsapp", timedelta(hours=24), Window("template", TEMPLATE_REASON)),
        ("whatsapp", None, Window("template", TEMPLATE_REASON)),
        ("messenger", timedelta(hours=2), Window("text")),
        ("messenger", timedelta(hours=30), Window("human_agent", "")),
        ("messenger", timedelta(days=6, hours=23), Window("human_agent", "")),
        ("messenger", timedelta(days=7), Window("refused", MESSENGER_CLOSED)),
        ("messenger", None, Window("refused", MESSENGER_CLOSED)),
        ("instagram", timedelta(days=3), Window("human_agent", "")),
        ("instagram", timedelta(days=8), Window("refused", INSTAGRAM_CLOSED)),
    ],
)
def test_the_windows(channel: str, age: timedelta | None, expected: Window) -> None:
    decided = window(channel, None if age is None else NOW - age, NOW)
    assert decided.mode == expected.mode
    if expected.reason:
        assert decided.reason == expected.reason


def test_the_reasons_are_the_issues_words() -> None:
    assert TEMPLATE_REASON == "outside WhatsApp's 24-hour window: a template will be sent"
    assert MESSENGER_CLOSED == (
        "cannot reach this person on Messenger any more: use another identity"
    )


# --- against the fake Graph API -------------------------------------------------------------


def deliver(engine: Engine, *names: str) -> None:
    """Store fixtures as the webhook stores them, then normalize (acknowledgements queued)."""
    items = []
    for name in names:
        raw = body_of(fixture(name))
        for event in events(fixture(name)):
            items.append(
                RawInput(
                    connector="meta",
                    channel=event.channel,
                    source_key=event.source_key,
                    payload=raw,
                    envelope={"at": list(event.at)},
                )
            )
    store(engine, items)
    normalize(engine)


def drainer(engine: Engine, fake: FakeGraph, channel: str, **kw: Any) -> OutboxDrainer:
    section = settings(fake.base_url, **kw)
    token = WA_TOKEN if channel == "whatsapp" else PAGE_TOKEN
    sender = MetaSender(channel, section, Graph(section, Secret(token)), engine)
    return OutboxDrainer(engine, sender, OutboxSettings(), worker="test")


def rows(engine: Engine, channel: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(Outbox).where(Outbox.channel == channel).order_by(Outbox.id))
        )


def age_messages(engine: Engine, channel: str, by: timedelta) -> None:
    with write(engine) as conn:
        conn.execute(
            update(Message).where(Message.channel == channel).values(received_at=utcnow() - by)
        )


def agent_reply(engine: Engine, channel: str, text: str = "We restored your account.") -> int:
    """An agent's reply as the inbox queues it (inbox.casework): no route, the answered
    message's id and visibility."""
    with engine.connect() as conn:
        case_id = conn.execute(select(Case.id).where(Case.channel == channel)).scalars().first()
        assert case_id is not None
        message = conn.execute(
            select(Message.id, Message.external_id, Message.visibility)
            .where(Message.case_id == case_id)
            .order_by(Message.id)
        ).first()
        assert message is not None
        identity = conn.execute(select(Outbox.recipient).where(Outbox.case_id == case_id)).scalar()
    with write(engine) as conn:
        return enqueue(
            conn,
            case_id=case_id,
            kind="reply",
            channel=channel,
            recipient=identity or "",
            body=text,
            payload={
                "message_id": message.id,
                "in_reply_to_external_id": message.external_id,
                "visibility": message.visibility,
            },
        )


def test_whatsapp_inside_the_window_is_free_text(engine: Engine) -> None:
    deliver(engine, "wa_text")
    with fake_graph() as fake:
        report = drainer(engine, fake, "whatsapp").drain_once()
    assert report.sent == 1
    path, body = fake.received[0]
    assert path == f"/v21.0/{PHONE_NUMBER_ID}/messages"
    assert body["to"] == "16315551181" and body["type"] == "text"
    with engine.connect() as conn:
        reference = conn.execute(select(Case.reference)).scalar_one()
    assert f"case {reference}" in body["text"]["body"]
    (row,) = rows(engine, "whatsapp")
    assert (row.state, row.provider_id) == ("sent", "wamid.SENT0001")


def test_whatsapp_outside_the_window_sends_the_template(engine: Engine) -> None:
    deliver(engine, "wa_text")
    age_messages(engine, "whatsapp", timedelta(hours=25))
    template = {"name": "case_update", "language": "en_GB"}
    with fake_graph() as fake:
        drainer(engine, fake, "whatsapp", whatsapp_ack_template=template).drain_once()
        agent_reply(engine, "whatsapp")
        # No reply template configured: refused before sending, with the reason.
        drainer(engine, fake, "whatsapp", whatsapp_ack_template=template).drain_once()
    ack, reply = rows(engine, "whatsapp")
    assert ack.state == "sent"
    with engine.connect() as conn:
        reference = conn.execute(select(Case.reference)).scalar_one()
    assert fake.received[0][1]["type"] == "template"
    assert fake.received[0][1]["template"] == {
        "name": "case_update",
        "language": {"code": "en_GB"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": reference}]}],
    }
    assert len(fake.received) == 1
    assert reply.state == "failed"
    assert reply.last_error.startswith(TEMPLATE_REASON)
    assert "whatsapp_reply_template is not set" in reply.last_error


def test_messenger_reply_with_and_without_the_tag_then_refused(engine: Engine) -> None:
    deliver(engine, "ms_text")
    with fake_graph() as fake:
        drainer(engine, fake, "messenger").drain_once()  # the acknowledgement, in the window
        assert fake.received[-1][1]["messaging_type"] == "RESPONSE"
        assert "tag" not in fake.received[-1][1]
        age_messages(engine, "messenger", timedelta(days=3))
        agent_reply(engine, "messenger")
        drainer(engine, fake, "messenger").drain_once()
        path, body = fake.received[-1]
        assert path == "/v21.0/me/messages"
        assert (body["messaging_type"], body["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
        assert body["recipient"] == {"id": "7208451234567890"}
        age_messages(engine, "messenger", timedelta(days=8))
        refused = agent_reply(engine, "messenger")
        drainer(engine, fake, "messenger").drain_once()
    assert len(fake.received) == 2
    row = next(r for r in rows(engine, "messenger") if r.id == refused)
    assert (row.state, row.last_error) == ("failed", MESSENGER_CLOSED)


@pytest.mark.parametrize(
    ("name", "channel", "path", "author"),
    [
        (
            "ms_feed_comment",
            "messenger",
            "/v21.0/1122334455667788_998877665544332/comments",
            "Priya",
        ),
        ("ig_comment", "instagram", "/v21.0/17865799348089039/replies", "lena"),
    ],
)
def test_public_comments_are_acknowledged_publicly_without_personal_data(
    engine: Engine, name: str, channel: str, path: str, author: str
) -> None:
    deliver(engine, name)
    with engine.connect() as conn:
        case = conn.execute(select(Case.reference, Case.token)).one()
    with fake_graph() as fake:
        report = drainer(engine, fake, channel).drain_once()
    assert report.sent == 1
    (sent_path, body) = fake.received[0]
    assert sent_path == path
    text = body["message"]
    assert case.reference in text
    # Nothing personal, no token: only the reference and the promised time.
    assert case.token not in text and author.lower() not in text.lower()
    assert set(body) == {"message"}


@pytest.mark.parametrize(
    ("status", "answer", "state", "attempts", "error"),
    [
        # Rate limits: nothing sent, back in the queue uncounted, the channel pauses.
        (400, error(4, "Application request limit reached"), "queued", 0, "rate limited"),
        (
            400,
            error(613, "Calls to this api have exceeded the rate limit."),
            "queued",
            0,
            "rate limited",
        ),
        (400, error(130429, "Rate limit hit"), "queued", 0, "rate limited"),
        # Meta's own trouble: retried on the curve.
        (500, error(2, "Service temporarily unavailable", "OAuthException"), "queued", 1, "code 2"),
        # One person: failed with the reason, never resent.
        (400, error(131026, "Message undeliverable"), "failed", 1, "cannot receive WhatsApp"),
        (400, error(131047, "Re-engagement message"), "failed", 1, TEMPLATE_REASON),
        (400, error(100, "Invalid parameter", subcode=2018001), "failed", 1, "Invalid parameter"),
    ],
)
def test_error_codes_retry_pause_or_fail_with_a_reason(
    engine: Engine, status: int, answer: dict[str, Any], state: str, attempts: int, error: str
) -> None:
    deliver(engine, "wa_text")
    with fake_graph() as fake:
        fake.fail.append((status, answer))
        drainer(engine, fake, "whatsapp").drain_once()
    (row,) = rows(engine, "whatsapp")
    assert (row.state, row.attempts) == (state, attempts)
    assert error in (row.last_error or "")
    if state == "queued":
        # Due again later, not now (SQLite gives naive UTC back).
        due = row.next_attempt_at
        assert due.replace(tzinfo=None) > utcnow().replace(tzinfo=None)


def test_an_expired_token_stops_the_channel_with_a_clear_status(engine: Engine) -> None:
    deliver(engine, "ms_text")
    with fake_graph() as fake:
        section = settings(fake.base_url)
        sender = MetaSender("messenger", section, Graph(section, Secret("EAAexpired")), engine)
        drain = OutboxDrainer(engine, sender, OutboxSettings(), worker="test")
        with pytest.raises(Stop, match="token invalid or expired"):
            drain.drain_once()
    (row,) = rows(engine, "messenger")
    # Not an attempt: nothing could be sent; it goes when the token is renewed.
    assert (row.state, row.attempts) == ("queued", 0)
    assert "code 190" in (row.last_error or "")
    assert drain.health.last_error is not None and "190" in drain.health.last_error


def test_settings_refuse_a_version_that_is_not_one(engine: Engine) -> None:
    for bad in ("21.0", "v21.0/../../me", "vX"):
        with pytest.raises(ValueError, match="graph_version"):
            MetaSettings(graph_version=bad)
