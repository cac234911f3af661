"""Due times for every turn, through the real intake, normalizer and reply: a customer's
follow-up after we answered waits under the same SLA policy as a new case (business hours,
holidays, content rules; never the channel), and the queue orders by it.

Expected due times are worked out by hand from the calendar below. Every step, the agent's
replies too, happens at a time given to the code, so the calendar never meets the real clock
(it used to: the replies were stamped with today, and the story's order depended on the date
the suite ran)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from inbox import queries, turns
from inbox.accounts import Principal
from inbox.casework import ReplyRequest, reply
from inbox.config import BusinessHours, ContentRule, SlaSettings, StoreSettings
from inbox.models import Case, CaseTurn
from tests.support.helpers import ingest, normalize
from tests.support.inbox_helpers import DOMAIN, mail, make_user

# Friday 2026-12-11, 16:00 UTC; office 09:00-17:00 Monday to Friday; Monday the 14th is a
# holiday.
FRIDAY_4PM = datetime(2026, 12, 11, 16, 0, tzinfo=UTC)
SETTINGS = StoreSettings(
    sla=SlaSettings(
        first_response_minutes=240,
        business_hours=BusinessHours(
            enabled=True, start=time(9), end=time(17), holidays=[date(2026, 12, 14)]
        ),
        rules=[ContentRule(name="hacked", pattern=r"(?i)\bhacked\b", due_within_minutes=60)],
    )
)


def send(engine: Engine, body: str, at: datetime, *, msgid: str, reply_to: str = "") -> None:
    extra = f"In-Reply-To: <{reply_to}>\r\nReferences: <{reply_to}>\r\n" if reply_to else ""
    subject = "Re: My order" if reply_to else "My order"
    raw = mail("kim@example.org", subject, body, msgid=msgid, extra=extra)
    ingest(engine, raw, received_at=at)
    normalize(engine, SETTINGS)


def case_turns(engine: Engine) -> tuple[Any, list[Any]]:
    with engine.connect() as conn:
        case = conn.execute(select(Case)).one()
        rows = conn.execute(select(CaseTurn).order_by(CaseTurn.seq)).all()
    return case, list(rows)


def answer(
    engine: Engine, agent: Principal, reference: str, text: str, at: datetime
) -> tuple[Any, list[Any]]:
    """The agent replies at `at` (the code's clock, never the real one); the turns after."""
    reply(engine, agent, reference, ReplyRequest(text=text), message_id_domain=DOMAIN, now=at)
    return case_turns(engine)


def test_a_follow_up_after_our_answer_gets_its_own_due_time(engine: Engine) -> None:
    agent = Principal(id=make_user(engine, "sam"), name="sam", role="agent", via="cli")
    # Monday 09:00 + 4 working hours: 13:00 the same day.
    opened = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    send(engine, "Where is my order?", opened, msgid="a1@mail.example")
    case, rows = case_turns(engine)
    assert case.due_at == datetime(2026, 12, 7, 13, 0, tzinfo=UTC)
    assert [(t.seq, t.due_at, t.responded_at) for t in rows] == [(0, case.due_at, None)]

    answered = opened + timedelta(hours=1)
    case, rows = answer(engine, agent, case.reference, "It ships tomorrow.", answered)
    assert (rows[0].responded_at, rows[0].responder_id) == (answered, agent.id)

    # Friday 16:00: one working hour that day; Monday is a holiday; three more hours on
    # Tuesday from 09:00: due Tuesday 12:00.
    send(
        engine,
        "It did not arrive.",
        FRIDAY_4PM,
        msgid="a2@mail.example",
        reply_to="a1@mail.example",
    )
    case, rows = case_turns(engine)
    tuesday_noon = datetime(2026, 12, 15, 12, 0, tzinfo=UTC)
    assert [(t.seq, t.started_at, t.due_at) for t in rows[1:]] == [(1, FRIDAY_4PM, tuesday_noon)]
    assert case.due_at == tuesday_noon and case.status == "open"

    # Writing again while waiting does not push the due time back...
    send(
        engine,
        "Any news?",
        FRIDAY_4PM + timedelta(minutes=30),
        msgid="a3@mail.example",
        reply_to="a2@mail.example",
    )
    case, rows = case_turns(engine)
    assert len(rows) == 2 and case.due_at == tuesday_noon
    # ...but a content rule brings it forward: 16:45 + 60 working minutes is 15 min on
    # Friday and 45 on Tuesday: Tuesday 09:45.
    send(
        engine,
        "I think my account was hacked",
        FRIDAY_4PM + timedelta(minutes=45),
        msgid="a4@mail.example",
        reply_to="a3@mail.example",
    )
    case, rows = case_turns(engine)
    assert len(rows) == 2
    assert case.due_at == rows[1].due_at == datetime(2026, 12, 15, 9, 45, tzinfo=UTC)
    assert case.due_rule == rows[1].due_rule == "hacked"

    # Our next answer closes turn 1, by the same agent.
    secured = FRIDAY_4PM + timedelta(minutes=50)
    case, rows = answer(engine, agent, case.reference, "Secured.", secured)
    assert (rows[1].responded_at, rows[1].responder_id) == (secured, agent.id)


def test_the_queue_orders_by_the_follow_up_due_time(engine):
    agent = Principal(id=make_user(engine, "sam"), name="sam", role="agent", via="cli")
    settings = StoreSettings()  # 240 min, wall-clock time
    old = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    raw = mail("old@example.org", "Old question", "Hello", msgid="o1@mail.example")
    ingest(engine, raw, received_at=old)
    normalize(engine, settings)
    [reference] = [c["reference"] for c in queries.list_cases(engine)]
    answer(engine, agent, reference, "Answer", old + timedelta(minutes=30))
    # A newer case, due at 2026-12-01 14:00, and then the old case's follow-up at 11:00:
    # due 15:00, so it queues after the newer case although the case is older.
    ingest(
        engine,
        mail("new@example.org", "New question", "Hi", msgid="n1@mail.example"),
        received_at=old + timedelta(hours=2),
    )
    ingest(
        engine,
        mail(
            "old@example.org",
            "Re: Old question",
            "Still there?",
            msgid="o2@mail.example",
            extra="In-Reply-To: <o1@mail.example>\r\n",
        ),
        received_at=old + timedelta(hours=3),
    )
    normalize(engine, settings)
    listed = queries.list_cases(engine)
    assert [c["subject"] for c in listed] == ["New question", "Old question"]
    assert [c["due_at"] for c in listed] == ["2026-12-01T14:00:00Z", "2026-12-01T15:00:00Z"]


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("open_due", "candidate", "reopened", "action"),
    [
        (None, NOW, False, "start"),  # nothing waits: the message starts a turn
        (NOW, NOW + timedelta(hours=1), False, "keep"),  # writing again keeps the place
        (NOW, NOW - timedelta(hours=1), False, "advance"),  # a rule brings it forward
        (NOW, NOW, False, "keep"),
        (NOW, NOW + timedelta(hours=1), True, "start"),  # a reopen starts afresh
        (None, NOW, True, "start"),
    ],
)
def test_what_an_inbound_message_does_to_the_turns(open_due, candidate, reopened, action):
    current = turns.OpenTurn(1, 0, open_due) if open_due is not None else None
    assert turns.decide(current, candidate, reopened=reopened) == action
