"""The satisfaction survey by text message, on SQLite and PostgreSQL: asked through the outbox
and the real twilio client to the fake Twilio API; a bare 1-5 reply through the real webhook
and normalizer is recorded as the rating and filed in the surveyed case (still resolved), not
a new case; STOP opts the person out; anything else threads as usual."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, select, update

from inbox import csat
from inbox.models import Case, Contact, CsatSurvey, Message, Outbox, utcnow
from tests.channels.twilio.test_twilio_outbound import drainer
from tests.channels.twilio.twilio_support import Hooks, fake_twilio, fixture

SECRET = b"test-csat-secret-0123456789"


def one(engine: Engine, query: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).one()


def resolve_all(engine: Engine, hours_ago: float) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Case).values(
                status="resolved", resolved_at=utcnow() - timedelta(hours=hours_ago)
            )
        )


async def text(hooks: Hooks, body: str, sid: str) -> None:
    status, _ = await hooks.post(
        "/twilio/sms", fixture("sms") | {"Body": body, "MessageSid": sid, "SmsSid": sid}
    )
    assert status == 200


async def test_a_text_case_is_asked_by_text_and_a_bare_digit_is_the_rating(
    engine: Engine,
) -> None:
    from tests.support.helpers import normalize

    sms = fixture("sms")
    settings = csat.CsatSettings(enabled=True)  # no rating page: a text survey needs none
    with fake_twilio() as fake:
        async with Hooks(engine) as hooks:
            await text(hooks, sms["Body"], "SM" + "1" * 32)
            normalize(engine)
            resolve_all(engine, 2)
            [done] = csat.plan_due(engine, settings, None)
            assert done["asked"] and done["mode"] == "reply"
            await asyncio.to_thread(drainer(engine, fake).drain_once)
            survey_text = fake.received[-1]["Body"]
            assert fake.received[-1]["To"] == sms["From"]
            reference = one(engine, select(Case.reference)).reference
            assert reference in survey_text and "1 (poor) to 5 (great)" in survey_text

            await text(hooks, " 4 ", "SM" + "2" * 32)
            [outcome] = normalize(engine)
            with engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(Case)).scalar_one() == 1
                case = conn.execute(select(Case)).one()
                survey = conn.execute(select(CsatSurvey)).one()
                stored = conn.execute(select(Message).where(Message.id == outcome.message_id)).one()
                acks = conn.execute(
                    select(func.count()).select_from(Outbox).where(Outbox.kind == "ack")
                ).scalar_one()
            # Recorded, stored in the surveyed case, the case still resolved and not followed up.
            assert (survey.state, survey.rating) == ("answered", 4)
            assert stored.case_id == case.id and stored.text.strip() == "4"
            assert (case.status, case.followups) == ("resolved", 0)
            assert acks == 1  # only the first message's acknowledgement

            # The survey is answered: another digit is an ordinary message again.
            await text(hooks, "5", "SM" + "3" * 32)
            normalize(engine)
            with engine.connect() as conn:
                status = conn.execute(select(Case.status).where(Case.id == case.id)).scalar_one()
            assert status == "open"  # it reopened the case, as any message would
            assert one(engine, select(CsatSurvey.rating)).rating == 4


async def test_stop_to_a_survey_opts_out_and_other_words_thread_as_usual(
    engine: Engine,
) -> None:
    from tests.support.helpers import normalize

    sms = fixture("sms")
    settings = csat.CsatSettings(enabled=True, throttle_days=0)
    with fake_twilio():
        async with Hooks(engine) as hooks:
            await text(hooks, sms["Body"], "SM" + "4" * 32)
            normalize(engine)
            resolve_all(engine, 2)
            csat.plan_due(engine, settings, None)
            # A sentence is not an answer: it joins (reopens) the case as usual.
            await text(hooks, "Thanks, all good now", "SM" + "5" * 32)
            normalize(engine)
            with engine.connect() as conn:
                assert conn.execute(select(Case.status)).scalar_one() == "open"
                assert conn.execute(select(CsatSurvey.state)).scalar_one() == "asked"
            await text(hooks, "STOP", "SM" + "6" * 32)
            normalize(engine)
            with engine.connect() as conn:
                opted = conn.execute(select(Contact.csat_opt_out_at)).scalar_one()
                cases = conn.execute(select(func.count()).select_from(Case)).scalar_one()
            assert opted is not None and cases == 1
            # Resolved again later: the person is never asked again.
            with engine.begin() as conn:
                conn.execute(update(CsatSurvey).values(state="answered", rating=3))
                conn.execute(update(Case).values(status="resolved"))
            with engine.begin() as conn:
                conn.execute(delete(CsatSurvey))
            resolve_all(engine, 2)
            [done] = csat.plan_due(engine, settings, None)
            assert not done["asked"] and "opted out" in done["reason"]
