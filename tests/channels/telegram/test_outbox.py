"""Acknowledgements and replies through the real sender against the fake Bot API: sent to
the person's chat, a 429 retried after Telegram's retry_after (not the curve), a blocked bot
failed with Telegram's words, a refused token stopping the channel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from connectors.config import OutboxSettings
from connectors.outbox import OutboxDrainer
from connectors.telegram.intake import raw_input
from connectors.telegram.outbox import TelegramSender, TokenRefused
from inbox import casework
from inbox.accounts import Principal
from inbox.models import Case, Message, MessageRef, Outbox, utcnow
from inbox.secrets import Secret
from normalizer.intake import store
from tests.channels.telegram.support import (
    TOKEN,
    FakeBotApi,
    body_of,
    deliver,
    fake_bot_api,
    fixture,
    refused,
    settings,
)
from tests.support.helpers import normalize
from tests.support.inbox_helpers import make_user

CURVE_BASE_S = 60.0


def drainer(engine: Engine, fake: FakeBotApi, token: str = TOKEN) -> OutboxDrainer:
    sender = TelegramSender(settings(fake.base_url), Secret(token))
    return OutboxDrainer(engine, sender, OutboxSettings(backoff_base_s=CURVE_BASE_S), worker="test")


def rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Outbox).where(Outbox.channel == "telegram")))


def test_the_acknowledgement_goes_to_the_persons_chat(engine: Engine) -> None:
    deliver(engine, "text")
    with fake_bot_api() as fake:
        report = drainer(engine, fake).drain_once()
        sent = list(fake.sent)
    assert (report.sent, report.failed) == (1, 0)
    with engine.connect() as conn:
        reference = conn.execute(select(Case.reference)).scalar_one()
        refs = set(conn.execute(select(MessageRef.ref)).scalars())
    [message] = sent
    assert message["chat_id"] == 718293645
    assert (
        f"case {reference}" in message["text"] and "Write here to add anything." in message["text"]
    )
    [row] = rows(engine)
    assert (row.state, row.recipient, row.provider_id) == ("sent", "718293645", "718293645:101")
    # A reply to our message (its reply_to_message) finds the case by this ref.
    assert "telegram:718293645:101" in refs


def test_a_429_is_retried_after_telegrams_retry_after(engine: Engine) -> None:
    deliver(engine, "text")
    with fake_bot_api() as fake:
        fake.fail.append((429, refused(429, "Too Many Requests: retry after 7", retry_after=7)))
        started = utcnow()
        report = drainer(engine, fake).drain_once()
        finished = utcnow()
    assert (report.retried, report.sent) == (1, 0)
    [row] = rows(engine)
    assert (row.state, row.attempts) == ("queued", 1)
    assert "retry after 7" in row.last_error
    # Due after Telegram's 7 s, not after the curve's 30-60 s.
    assert started + timedelta(seconds=6) <= row.next_attempt_at <= finished + timedelta(seconds=8)


def test_a_server_error_is_retried_on_the_curve(engine: Engine) -> None:
    deliver(engine, "text")
    with fake_bot_api() as fake:
        fake.fail.append((502, refused(502, "Bad Gateway")))
        started = utcnow()
        report = drainer(engine, fake).drain_once()
        finished = utcnow()
    assert report.retried == 1
    [row] = rows(engine)
    low, high = CURVE_BASE_S / 2, CURVE_BASE_S
    assert started + timedelta(seconds=low - 1) <= row.next_attempt_at
    assert row.next_attempt_at <= finished + timedelta(seconds=high + 1)


def test_a_blocked_bot_fails_with_telegrams_words(engine: Engine) -> None:
    deliver(engine, "text")
    with fake_bot_api() as fake:
        fake.fail.append((403, refused(403, "Forbidden: bot was blocked by the user")))
        report = drainer(engine, fake).drain_once()
    assert report.failed == 1
    [row] = rows(engine)
    assert row.state == "failed" and "bot was blocked by the user" in row.last_error


def test_a_refused_token_stops_the_channel_and_counts_no_attempt(engine: Engine) -> None:
    deliver(engine, "text")
    wrong = "7755001122:AArevoked-token-0000"
    with fake_bot_api() as fake, pytest.raises(TokenRefused):
        drainer(engine, fake, token=wrong).drain_once()
    [row] = rows(engine)
    assert (row.state, row.attempts) == ("queued", 0)
    assert "refused the bot token" in row.last_error and wrong not in row.last_error


def test_an_agents_reply_goes_to_the_identity_and_the_answer_joins_the_case(
    engine: Engine,
) -> None:
    deliver(engine, "text")
    with fake_bot_api() as fake:
        drainer(engine, fake).drain_once()  # the acknowledgement
        with engine.connect() as conn:
            reference = conn.execute(select(Case.reference)).scalar_one()
        assert reference is not None
        agent = Principal(id=make_user(engine, "agent1"), name="agent1", role="agent", via="cli")
        casework.reply(
            engine,
            agent,
            reference,
            casework.ReplyRequest(text="We reset your sign-in; try again now."),
            message_id_domain="support.example.com",
        )
        report = drainer(engine, fake).drain_once()
        sent = list(fake.sent)
    assert report.sent == 1
    assert [(m["chat_id"], m["text"]) for m in sent][-1] == (
        718293645,
        "We reset your sign-in; try again now.",
    )
    [reply] = [r for r in rows(engine) if r.kind == "reply"]
    assert (reply.state, reply.recipient) == ("sent", "718293645")
    # The person answers that message (Telegram's reply_to_message): it joins the same case.
    answer = fixture("reply")
    answer["message"]["reply_to_message"]["message_id"] = int(reply.provider_id.split(":")[1])
    item, _ = raw_input(body_of(answer))
    assert item is not None
    store(engine, [item])
    normalize(engine)
    with engine.connect() as conn:
        cases = conn.execute(select(Message.case_id).where(Message.channel == "telegram"))
        assert len(set(cases.scalars())) == 1
