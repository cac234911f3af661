"""Satisfaction surveys (issue 23): the pure decisions by tables, then the store on SQLite
and PostgreSQL: known-answer results computed by hand, one survey per case, the throttle,
the opt-out, and the email survey sent through the real outbox and relay to an SMTP sink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from inbox import csat
from inbox.channels import CHANNEL_FACTS, PUBLIC_CHANNEL_NAMES
from inbox.csat import Ask, CsatSettings, SurveyFacts
from inbox.models import Case, Contact, CsatSurvey, Identity, Message, Outbox, utcnow
from tests.support.inbox_helpers import case_row, email_case, make_user
from tests.support.outbox_helpers import audit_actions, drainer_for
from tests.support.sink import Sink

SECRET = b"test-csat-secret-0123456789"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

# --- pure: a reply to an open survey -----------------------------------------------------------

ANSWERS: list[tuple[str, int | str | None]] = [
    ("5", 5),
    (" 4 ", 4),
    ("3.", 3),
    ("4/5", 4),
    ("1!", 1),
    ("4\n", 4),
    ("6", None),
    ("0", None),
    ("45", None),
    ("5 stars but the delivery was late", None),
    ("٣", None),  # an Arabic-Indic digit: only ASCII 1-5 is a rating
    ("STOP", "stop"),
    ("Stop.", "stop"),
    ("unsubscribe", "stop"),
    ("stop sending me invoices twice", None),
    ("", None),
    ("5" + " " * 100, None),
]


@pytest.mark.parametrize(("text", "expected"), ANSWERS)
def test_a_reply_is_a_rating_stop_or_an_ordinary_message(text: str, expected: Any) -> None:
    assert csat.parse_answer(text) == expected


# --- pure: whether and how a case is asked ------------------------------------------------------


def facts(channel: str, **kw: Any) -> SurveyFacts:
    values: dict[str, Any] = {
        "case_channel": channel,
        "handle": "someone",
        "opted_out": False,
        "last_asked_at": None,
        "last_inbound_at": NOW - timedelta(hours=2),
        "now": NOW,
        "throttle": timedelta(days=7),
        "link_ready": True,
    }
    values.update(kw)
    return SurveyFacts(**values)


def test_every_channel_says_how_it_is_asked_and_public_ones_only_in_private() -> None:
    for name, channel in CHANNEL_FACTS.items():
        decided = csat.decide(facts(name))
        if channel.survey == "none":
            assert isinstance(decided, str)
            continue
        assert isinstance(decided, Ask), (name, decided)
        assert decided.mode == channel.survey
        # The question goes where a reply goes (a call is asked by text), always privately.
        assert decided.channel == channel.reply_channel
        assert "private" in CHANNEL_FACTS[decided.channel].visibilities
    # Every channel with public messages has private ones too: it is asked by DM.
    assert PUBLIC_CHANNEL_NAMES and all(
        isinstance(csat.decide(facts(n)), Ask) for n in PUBLIC_CHANNEL_NAMES
    )


def _reply_channel() -> str:
    return next(n for n, c in CHANNEL_FACTS.items() if c.survey == "reply")


def _link_channel() -> str:
    return next(n for n, c in CHANNEL_FACTS.items() if c.survey == "link")


def _window_channel() -> tuple[str, int]:
    name, channel = next((n, c) for n, c in CHANNEL_FACTS.items() if c.reply_window.free_hours)
    return name, channel.reply_window.free_hours


SKIPS: list[tuple[str, dict[str, Any], str]] = [
    ("opted out", {"opted_out": True}, "opted out"),
    ("no identity", {"handle": None}, "no identity"),
    ("asked 3 days ago", {"last_asked_at": NOW - timedelta(days=3)}, "was asked at"),
    ("no rating page", {"link_ready": False}, "no rating page"),
]


@pytest.mark.parametrize(("kw", "reason"), [s[1:] for s in SKIPS], ids=[s[0] for s in SKIPS])
def test_a_case_is_not_asked_and_says_why(kw: dict[str, Any], reason: str) -> None:
    decided = csat.decide(facts(_link_channel(), **kw))
    assert isinstance(decided, str) and reason in decided


def test_the_throttle_ends_and_a_reply_channel_needs_no_page() -> None:
    assert isinstance(
        csat.decide(facts(_link_channel(), last_asked_at=NOW - timedelta(days=8))), Ask
    )
    assert isinstance(csat.decide(facts(_reply_channel(), link_ready=False)), Ask)


def test_a_closed_reply_window_is_not_written_into() -> None:
    name, hours = _window_channel()
    inside = facts(name, last_inbound_at=NOW - timedelta(hours=hours - 1))
    outside = facts(name, last_inbound_at=NOW - timedelta(hours=hours + 1))
    assert isinstance(csat.decide(inside), Ask)
    decided = csat.decide(outside)
    assert isinstance(decided, str) and "reply window" in decided


# --- pure: the signed link ---------------------------------------------------------------------


def test_a_link_token_names_its_survey_and_nothing_else() -> None:
    token = csat.sign(SECRET, 42)
    assert csat.verify(SECRET, token) == 42
    assert csat.verify(b"another secret", token) is None
    assert csat.verify(SECRET, token.replace("42-", "43-")) is None
    assert csat.verify(SECRET, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    for junk in ("", "42", "-", "x-y", "9" * 40 + "-abc", token + "x" * 80):
        assert csat.verify(SECRET, junk) is None


# --- pure: the figures --------------------------------------------------------------------------


def test_the_figures_of_a_list_by_hand() -> None:
    # 5 asked; answers 5, 4, 2: rate 3/5 = 60 %, average 11/3 = 3.67, CSAT 2/3 = 66.67 %.
    result = csat.figures([5, None, 4, 2, None])
    assert (result.asked, result.answered) == (5, 3)
    assert result.response_rate_pct == 60.0
    assert result.average == 3.67
    assert result.csat_pct == 66.67
    assert result.ratings == {1: 0, 2: 1, 3: 0, 4: 1, 5: 1}
    empty = csat.figures([None, None])
    assert (empty.response_rate_pct, empty.average, empty.csat_pct) == (0.0, None, None)


# --- the store: known answers ------------------------------------------------------------------


def _survey(
    engine: Engine,
    reference: str,
    *,
    channel: str,
    side: str = "private",
    agent_id: int | None = None,
    rating: int | None = None,
    state: str = "asked",
    at: datetime = NOW,
) -> None:
    case = case_row(engine, reference)
    with engine.begin() as conn:
        conn.execute(
            insert(CsatSurvey).values(
                case_id=case.id,
                contact_id=case.contact_id,
                identity_id=None,
                case_channel=channel,
                channel=channel,
                side=side,
                agent_id=agent_id,
                mode="none" if state == "skipped" else "link",
                state="answered" if rating is not None else state,
                language="en",
                asked_at=at,
                rating=rating,
                answered_at=at if rating is not None else None,
            )
        )


def test_results_per_channel_side_and_agent_by_hand(engine: Engine) -> None:
    link, reply = _link_channel(), _reply_channel()
    ann = make_user(engine, "ann")
    bob = make_user(engine, "bob")
    refs = [email_case(engine, f"p{n}@example.org", f"Question {n}") for n in range(9)]
    # link: ratings 5 (ann), 4 (ann), 2 (bob), unanswered (bob) -> 4 asked, 3 answered
    _survey(engine, refs[0], channel=link, agent_id=ann, rating=5)
    _survey(engine, refs[1], channel=link, agent_id=ann, rating=4, side="public")
    _survey(engine, refs[2], channel=link, agent_id=bob, rating=2)
    _survey(engine, refs[3], channel=link, agent_id=bob)
    # reply: 1 (nobody assigned), unanswered (ann)
    _survey(engine, refs[4], channel=reply, rating=1)
    _survey(engine, refs[5], channel=reply, agent_id=ann)
    # Not counted: a skipped survey, and one asked before the period.
    _survey(engine, refs[6], channel=link, state="skipped")
    _survey(engine, refs[7], channel=link, rating=1, at=NOW - timedelta(days=40))
    since, until = NOW - timedelta(days=30), NOW + timedelta(seconds=1)

    by_channel = csat.csat_by(engine, "channel", since, until)
    assert set(by_channel) == {link, reply}
    # link: asked 4, answered 3 (75 %), average (5+4+2)/3 = 3.67, satisfied 2/3 = 66.67 %.
    assert by_channel[link] | {"ratings": None} == {
        "asked": 4,
        "answered": 3,
        "response_rate_pct": 75.0,
        "average": 3.67,
        "csat_pct": 66.67,
        "ratings": None,
    }
    assert by_channel[link]["ratings"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}
    # reply: asked 2, answered 1 (50 %), average 1, satisfied 0 %.
    assert (by_channel[reply]["asked"], by_channel[reply]["response_rate_pct"]) == (2, 50.0)
    assert (by_channel[reply]["average"], by_channel[reply]["csat_pct"]) == (1.0, 0.0)

    by_agent = csat.csat_by(engine, "agent", since, until)
    # ann: 5, 4, unanswered -> 3 asked, 2 answered, avg 4.5, CSAT 100 %.
    assert (by_agent["ann"]["asked"], by_agent["ann"]["answered"]) == (3, 2)
    assert (by_agent["ann"]["average"], by_agent["ann"]["csat_pct"]) == (4.5, 100.0)
    # bob: 2, unanswered -> 2 asked, 1 answered, CSAT 0 %.
    assert (by_agent["bob"]["asked"], by_agent["bob"]["csat_pct"]) == (2, 0.0)
    assert by_agent["(unassigned)"]["asked"] == 1

    by_side = csat.csat_by(engine, "side", since, until)
    # public: the one 4 -> 100 %; private: 5, 2, -, 1, - -> 5 asked, 3 answered, 1 of 3 happy.
    assert (by_side["public"]["asked"], by_side["public"]["csat_pct"]) == (1, 100.0)
    assert (by_side["private"]["asked"], by_side["private"]["answered"]) == (5, 3)
    assert by_side["private"]["csat_pct"] == 33.33

    whole = csat.report(engine, since, until)
    # 6 asked, 4 answered: 5, 4, 2, 1 -> average 3.0, CSAT 50 %.
    assert whole["total"]["asked"] == 6
    assert (whole["total"]["average"], whole["total"]["csat_pct"]) == (3.0, 50.0)
    text = csat.text_table(whole)
    assert "ann" in text and "66.7%" in text


# --- the store: asking -------------------------------------------------------------------------


def settings(**kw: Any) -> CsatSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "public_url": "https://support.example.com",
        "delay_minutes": 60,
    }
    values.update(kw)
    return CsatSettings(**values)


def resolve(engine: Engine, reference: str, at: datetime, assignee: int | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Case)
            .where(Case.reference == reference)
            .values(status="resolved", resolved_at=at, first_response_at=at, assignee_id=assignee)
        )


def surveys(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(CsatSurvey).order_by(CsatSurvey.id)))


def survey_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Outbox).where(Outbox.kind == "survey")))


def test_an_email_case_gets_one_link_survey_through_the_relay(engine: Engine, sink: Sink) -> None:
    ann = make_user(engine, "ann")
    reference = email_case(engine, "carol@example.org", "Refund for order 1182")
    now = utcnow()
    resolve(engine, reference, now - timedelta(minutes=30), assignee=ann)
    # Not yet: resolved 30 minutes ago, the delay is an hour.
    assert csat.plan_due(engine, settings(), SECRET, now) == []
    resolve(engine, reference, now - timedelta(minutes=61), assignee=ann)
    later = now
    [done] = csat.plan_due(engine, settings(), SECRET, later)
    assert done["asked"] and done["mode"] == "link"
    # One survey per case: planning again asks nothing.
    assert csat.plan_due(engine, settings(), SECRET, later + timedelta(hours=1)) == []
    [survey] = surveys(engine)
    [row] = survey_rows(engine)
    case = case_row(engine, reference)
    assert (survey.state, survey.agent_id, survey.outbox_id) == ("asked", ann, row.id)
    assert row.recipient == "carol@example.org" and row.payload["visibility"] == "private"
    url = csat.survey_url("https://support.example.com", csat.sign(SECRET, survey.id))
    assert url in row.body
    assert row.subject == f"[{reference} #{case.token}] How did we do?"
    assert ("csat.sent", {"survey_id": survey.id, "outbox_id": row.id, "channel": row.channel,
            "mode": "link"}) in audit_actions(engine, case.id)  # fmt: skip
    # On the timeline, so an agent sees what was asked.
    with engine.connect() as conn:
        kinds = [m.meta.get("kind") for m in conn.execute(select(Message.meta).where(
            Message.case_id == case.id, Message.direction == "outbound"))]  # fmt: skip
    assert kinds == ["survey"]
    # Through the real relay to a real SMTP server.
    report = drainer_for(engine, sink).drain_once()
    assert report.sent == 2  # the case's acknowledgement, and the survey
    [delivery] = [d for d in sink.delivered if d.parsed()["Subject"] == row.subject]
    message = delivery.parsed()
    assert delivery.rcpt_tos == ["carol@example.org"]
    assert message["Subject"] == row.subject
    assert message["Auto-Submitted"] == "auto-generated"
    assert url in message.get_content()
    # The rating is recorded once; a second click changes it while the survey is open.
    assert csat.record_rating(engine, survey.id, 4, None, 7, later)
    assert csat.record_rating(engine, survey.id, 5, "Quick and kind", 7, later)
    [answered] = surveys(engine)
    assert (answered.state, answered.rating, answered.comment) == ("answered", 5, "Quick and kind")
    assert not csat.record_rating(engine, survey.id, 3, None, 7, later + timedelta(days=8))
    assert [a for a, _ in audit_actions(engine, case.id)].count("csat.answered") == 2


def test_the_contact_is_throttled_then_opts_out(engine: Engine) -> None:
    # One person with three addresses (as an agent linking them would make it), a case each.
    first = email_case(engine, "dave@example.org", "Parcel lost")
    second = email_case(engine, "dave@work.example", "Another question")
    third = email_case(engine, "dave@home.example", "And another")
    contact = case_row(engine, first).contact_id
    olds = {r: case_row(engine, r).contact_id for r in (second, third)}
    with engine.begin() as conn:
        for reference, old in olds.items():
            conn.execute(
                update(Identity).where(Identity.contact_id == old).values(contact_id=contact)
            )
            conn.execute(update(Case).where(Case.reference == reference).values(contact_id=contact))
    now = utcnow()
    resolve(engine, first, now - timedelta(hours=3))
    resolve(engine, second, now - timedelta(hours=2))
    done = csat.plan_due(engine, settings(), SECRET, now)
    assert [d["asked"] for d in done] == [True, False]
    assert "was asked at" in done[1]["reason"]
    asked, skipped = surveys(engine)
    assert (skipped.state, skipped.mode, skipped.outbox_id) == ("skipped", "none", None)
    assert len(survey_rows(engine)) == 1
    # The opt-out link: recorded on the contact, and no survey follows, throttle or not.
    assert csat.opt_out_by_survey(engine, asked.id, now)
    with engine.connect() as conn:
        opted = conn.execute(
            select(Contact.csat_opt_out_at).where(Contact.id == asked.contact_id)
        ).scalar_one()
    assert opted is not None
    resolve(engine, third, now - timedelta(hours=2))
    [last] = csat.plan_due(engine, settings(throttle_days=0), SECRET, now)
    assert not last["asked"] and "opted out" in last["reason"]
    assert len(survey_rows(engine)) == 1
    case = case_row(engine, first)
    assert "csat.opted_out" in [a for a, _ in audit_actions(engine, case.id)]


def test_no_page_no_link_survey_and_a_reopened_case_is_not_asked(engine: Engine) -> None:
    first = email_case(engine, "erin@example.org", "Broken zip")
    second = email_case(engine, "frank@example.org", "Wrong size")
    now = utcnow()
    resolve(engine, first, now - timedelta(hours=2))
    resolve(engine, second, now - timedelta(hours=2))
    with engine.begin() as conn:
        conn.execute(
            update(Case).where(Case.reference == second).values(status="open", resolved_at=None)
        )
    [done] = csat.plan_due(engine, settings(public_url=""), SECRET, now)
    assert done["case"] == first and "no rating page" in done["reason"]
    # Old cases are never asked when surveys are turned on.
    third = email_case(engine, "gina@example.org", "Old one")
    resolve(engine, third, now - timedelta(days=10))
    assert csat.plan_due(engine, settings(), SECRET, now) == []
