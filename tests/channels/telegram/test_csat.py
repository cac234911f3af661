"""The satisfaction survey on Telegram, on SQLite and PostgreSQL: asked in the person's chat
through the real sender against the fake Bot API, and a bare digit answered in that chat is
recorded as the rating (the message kept in the resolved case), not a new case."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import Engine, func, select, update

from connectors.config import OutboxSettings
from connectors.outbox import OutboxDrainer
from connectors.telegram.intake import raw_input
from connectors.telegram.outbox import TelegramSender
from inbox import csat
from inbox.models import Case, CsatSurvey, Message, utcnow
from inbox.secrets import Secret
from normalizer.intake import store
from tests.channels.telegram.support import TOKEN, body_of, deliver, fake_bot_api, fixture, settings
from tests.support.helpers import normalize


def answer(engine: Engine, text: str, update_id: int, message_id: int) -> None:
    update_ = fixture("text")
    update_["update_id"] = update_id
    update_["message"].update(message_id=message_id, text=text, date=int(time.time()))
    item, _ = raw_input(body_of(update_))
    assert item is not None
    store(engine, [item])
    normalize(engine)


def test_asked_in_the_chat_and_a_digit_is_the_rating(engine: Engine) -> None:
    deliver(engine, "text")
    with engine.begin() as conn:
        conn.execute(
            update(Case).values(status="resolved", resolved_at=utcnow() - timedelta(hours=2))
        )
    [done] = csat.plan_due(engine, csat.CsatSettings(enabled=True), None)
    assert done["asked"] and done["mode"] == "reply"
    with fake_bot_api() as fake:
        sender = TelegramSender(settings(fake.base_url), Secret(TOKEN))
        OutboxDrainer(engine, sender, OutboxSettings(), worker="test").drain_once()
        sent = list(fake.sent)
    survey_text = sent[-1]["text"]
    assert sent[-1]["chat_id"] == 718293645 and "1 (poor) to 5 (great)" in survey_text
    answer(engine, "2", 640117202, 18)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Case)).scalar_one() == 1
        assert conn.execute(select(Case.status)).scalar_one() == "resolved"
        survey = conn.execute(select(CsatSurvey)).one()
        texts = list(conn.execute(select(Message.text).where(Message.direction == "inbound")))
    assert (survey.state, survey.rating) == ("answered", 2)
    assert [t.text for t in texts][-1] == "2"
