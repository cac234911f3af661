"""Reddit acknowledgements and outbox delivery with the real praw against the fake Reddit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from connectors.reddit.outbox import AckTarget, plan_ack, reply_route
from inbox import casework, queries
from inbox.accounts import Principal
from inbox.models import Case, Outbox
from inbox.outbox import claim
from normalizer.acks import AckLimits, AckSettings
from tests.channels.reddit.reddit_fake import FakeReddit, Fault
from tests.channels.reddit.reddit_support import (
    case_of_handle,
    connector,
    reddit_settings,
    routes,
    stored_keys,
)
from tests.support.helpers import normalize
from tests.support.inbox_helpers import make_user
from tests.support.outbox_helpers import attempts_of


@pytest.fixture
def fake() -> Iterator[FakeReddit]:
    with FakeReddit() as server:
        yield server


DANA_COMMENT = "t1_m5c0x4a"
DANA_PM = "t4_2kq8v1f"
# The default SLA (240 minutes), in the words an acknowledgement uses.
ETA = "within about 4 hours"
# Dana writes "Locked out of my account": the shipped content rule (account takeover,
# 60 minutes) makes her case due sooner, and her acknowledgement says so.
TAKEOVER_ETA = "within about an hour"


class Crash(BaseException):
    """A process dying: nothing in the connector catches it."""


def hold_back(fake: FakeReddit, key: str, fullname: str) -> dict[str, Any]:
    child = next(c for c in fake.listings[key] if c["data"]["name"] == fullname)
    fake.remove(key, fullname)
    return child


def case_row(engine, handle: str):
    (case_id,) = case_of_handle(engine, handle)
    with engine.connect() as conn:
        return conn.execute(select(Case).where(Case.id == case_id)).one()


def outcomes(engine, outbox_id: int) -> list[str]:
    return [outcome for outcome, _ in attempts_of(engine, outbox_id)]


def rows(engine, case_id: int):
    with engine.connect() as conn:
        return list(
            conn.execute(select(Outbox).where(Outbox.case_id == case_id).order_by(Outbox.id))
        )


# --- pure -----------------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


# The words of the promised time are the one wording's (tests/test_acks_pure.py).


TARGET = AckTarget(
    reference="C-000123",
    token="abcdefghijk2",
    due_at=NOW + timedelta(hours=4),
    fullname="t1_m5c0x4a",
    visibility="public",
    username="dana_k_22",
)


def test_a_public_item_gets_a_public_reply_with_nothing_personal(fake):
    plan = plan_ack(TARGET, reddit_settings(fake), "AcmeCloudSupport", NOW)
    assert plan.payload == {"mode": "reply", "thing_id": "t1_m5c0x4a"}
    assert "C-000123" in plan.body and ETA in plan.body
    for secret in ("dana", TARGET.token):
        assert secret not in plan.body


def test_the_queue_estimate_replaces_the_due_time_when_known(fake):
    # The shared estimate (normalizer.eta) said 20 minutes; the SLA due time says 4 hours.
    soon = replace(TARGET, eta_at=NOW + timedelta(minutes=20))
    plan = plan_ack(soon, reddit_settings(fake), "AcmeCloudSupport", NOW)
    assert "within about 30 minutes" in plan.body and ETA not in plan.body


@pytest.mark.parametrize(
    ("change", "withheld"),
    [
        ({"automated": "AutoModerator"}, "automated sender: AutoModerator"),
        ({"acknowledge": False}, "imported history is never acknowledged"),
        ({"username": ""}, "the author's account is deleted: nobody to answer"),
    ],
)
def test_some_cases_get_no_acknowledgement_and_say_why(fake, change, withheld):
    target = AckTarget(**{**TARGET.__dict__, **change})
    assert plan_ack(target, reddit_settings(fake), "AcmeCloudSupport", NOW).withheld == withheld


def test_the_public_template_cannot_carry_personal_fields(fake):
    from pydantic import ValidationError

    for template in (
        "Hi u/{username}: {reference}",
        "{reference} #{token}",
        "{reference.__class__}",
    ):
        with pytest.raises(ValidationError, match="only"):
            reddit_settings(fake, public_ack_template=template)


# --- end to end with the fake ----------------------------------------------------------------


def test_a_public_comment_then_a_private_message_from_one_person_is_one_case(engine, fake):
    pm = hold_back(fake, "message/inbox", DANA_PM)
    reddit = connector(engine, fake)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    reddit.deliver_once()
    fake.add("message/inbox", pm)  # she writes privately afterwards
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    reddit.deliver_once()

    case = case_row(engine, "dana_k_22")
    detail = queries.case_detail(engine, case.reference)
    assert detail is not None
    assert [(m["visibility"], m["channel"]) for m in detail["messages"]] == [
        ("public", "reddit"),
        ("private", "reddit"),
    ]
    # One acknowledgement, the public reply to her comment, as Reddit received it.
    replies = [f for f in fake.posted if f["thing_id"] == DANA_COMMENT]
    assert len(replies) == 1
    assert [r.state for r in rows(engine, case.id)] == ["sent"]
    assert not [f for f in fake.composed if f["to"].lower() == "dana_k_22"]
    body = replies[0]["text"]
    assert case.reference in body and TAKEOVER_ETA in body
    personal = [
        "dana",  # her name
        "example.net",  # the e-mail address in her private message
        "4471",  # her phone number's end
        "Locked out of my account",  # her private subject
        "2FA",
        "Same problem here",  # her own words
        case.token,  # the case token is a secret
    ]
    assert [p for p in personal if p.lower() in body.lower()] == []
    assert case.ack_state == "sent"


def test_a_private_message_gets_the_full_acknowledgement_privately(engine, fake):
    hold_back(fake, "r/acmecloud/comments", DANA_COMMENT)
    reddit = connector(engine, fake)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    reddit.deliver_once()

    case = case_row(engine, "dana_k_22")
    (sent,) = [f for f in fake.composed if f["to"] == "dana_k_22"]
    assert sent["subject"] == f"[{case.reference} #{case.token}] We received your message"
    assert case.reference in sent["text"] and TAKEOVER_ETA in sent["text"]
    assert "u/dana_k_22" in sent["text"]
    (row,) = rows(engine, case.id)
    assert row.state == "sent" and row.provider_id and row.provider_id.startswith("t4_")

    # Her answer to the acknowledgement threads back into the same case.
    fake.add(
        "message/inbox",
        fake.message(
            author="dana_k_22",
            subject="re: " + sent["subject"],
            body="Thanks, I can also send a photo of my ID.",
            created=fake.newest_created("message/inbox") + 10,
            first=row.provider_id,
            parent=row.provider_id,
        ),
    )
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    detail = queries.case_detail(engine, case.reference)
    assert detail is not None and len(detail["messages"]) == 2
    assert len(rows(engine, case.id)) == 1  # a follow-up gets no second acknowledgement


def test_with_public_replies_off_the_acknowledgement_goes_privately(engine, fake):
    reddit = connector(engine, fake, public_replies=False)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    reddit.deliver_once()
    assert fake.posted == []  # nothing public at all
    recipients = {f["to"].lower() for f in fake.composed}
    assert {"dana_k_22", "kestrel_dev", "throwaway_acme_9921", "mira-oak"} <= recipients


def test_automated_senders_get_no_acknowledgement_and_the_case_says_why(engine, fake):
    reddit = connector(engine, fake)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    reddit.deliver_once()
    for handle, reason in (
        ("reddit", "automated sender: a message from Reddit itself"),
        ("automoderator", "automated sender: AutoModerator"),
    ):
        case = case_row(engine, handle)
        assert (case.ack_state, case.ack_reason) == ("withheld", reason)
        assert rows(engine, case.id) == []
    assert not [f for f in fake.composed if f["to"].lower() in ("reddit", "automoderator")]


def test_our_own_replies_never_come_back_in_and_answers_to_them_thread(engine, fake):
    reddit = connector(engine, fake)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    reddit.deliver_once()
    ours = [
        c["data"]["name"]
        for c in fake.listings["r/acmecloud/comments"]
        if c["data"]["author"] == fake.account
    ]
    assert len(ours) == 1 + len(fake.posted)  # the fixture's own comment and our acks
    before = stored_keys(engine)

    report = connector(engine, fake).poll_once()  # a restart, with our replies listed
    assert stored_keys(engine) == before
    assert {s.key: s.own for s in report.sources}["r/acmecloud/comments"] == len(ours)

    # Dana answers our public acknowledgement: it arrives as a comment reply.
    case = case_row(engine, "dana_k_22")
    (ack,) = [r for r in rows(engine, case.id)]
    fake.add(
        "message/inbox",
        fake.inbox_reply(
            author="dana_k_22",
            body="Thank you! Anything I should do meanwhile?",
            created=fake.newest_created("message/inbox") + 10,
            parent=ack.provider_id,
            link="t3_1h98uwx",
            kind="comment_reply",
        ),
    )
    reddit.poll_once()
    (outcome,) = normalize(engine, connectors=routes(reddit))
    assert outcome.case_id == case.id
    assert outcome.decision is not None and outcome.decision.reason == "in-reply-to"


def test_a_crash_after_reddit_accepted_a_reply_is_found_and_never_resent(engine, fake):
    # Subreddits only, so every acknowledgement is a public reply.
    reddit = connector(engine, fake, sending_lease_seconds=0, inbox=False)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))

    def crash(_row):
        raise Crash

    reddit.delivery.after_send = crash
    with pytest.raises(Crash):
        reddit.deliver_once()
    (posted,) = fake.posted  # Reddit has the first reply; the process died before recording
    with engine.connect() as conn:
        held = {r.id: r.payload["thing_id"] for r in conn.execute(select(Outbox)).all()}
        assert {r.state for r in conn.execute(select(Outbox)).all()} == {"sending"}
    (first,) = [i for i, thing in held.items() if thing == posted["thing_id"]]

    restarted = connector(engine, fake, sending_lease_seconds=0, inbox=False)
    counts = restarted.deliver_once()
    assert counts.recovered == len(held)
    assert outcomes(engine, first) == ["unknown", "sent"]  # found, not resent
    for row_id in set(held) - {first}:
        assert outcomes(engine, row_id) == ["unknown", "retry", "sent"]
    with engine.connect() as conn:
        again = conn.execute(select(Outbox).where(Outbox.id == first)).one()
    assert again.state == "sent" and again.provider_id.startswith("t1_")
    assert sorted(f["thing_id"] for f in fake.posted) == sorted(held.values())


def test_a_crash_before_the_reply_left_is_checked_then_sent_once(engine, fake):
    reddit = connector(engine, fake, sending_lease_seconds=0)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    claimed = claim(engine, "reddit", "dead-worker", limit=100, lease=timedelta(0))
    assert claimed and fake.posted == []  # ... and the process died here

    counts = connector(engine, fake, sending_lease_seconds=0).deliver_once()
    assert counts.recovered == len(claimed)
    assert counts.sent == len(claimed)
    for row in claimed:
        assert outcomes(engine, row.id) == ["unknown", "retry", "sent"]
    assert len(fake.posted) + len(fake.composed) == len(claimed)


def test_a_429_on_sending_is_retried_later(engine, fake):
    fake.faults.append(Fault("POST", r"^api/comment$", 429, headers={"retry-after": "1"}))
    reddit = connector(engine, fake)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    first = reddit.deliver_once()
    assert first.retried == 1
    import time

    time.sleep(1.1)
    reddit.deliver_once()
    with engine.connect() as conn:
        states = conn.execute(select(Outbox.id, Outbox.state)).all()
    assert {s for _, s in states} == {"sent"}
    retried = [i for i, _ in states if outcomes(engine, i) == ["retry", "sent"]]
    assert len(retried) == 1


def test_a_locked_thread_gets_the_acknowledgement_privately(engine, fake):
    fake.locked.add(DANA_COMMENT)
    hold_back(fake, "message/inbox", DANA_PM)
    reddit = connector(engine, fake)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    reddit.deliver_once()
    reddit.deliver_once()
    case = case_row(engine, "dana_k_22")
    public, private = rows(engine, case.id)
    assert (public.state, private.state) == ("failed", "sent")
    assert "THREAD_LOCKED" in public.last_error
    assert private.payload["instead_of"] == public.id
    assert [f["to"] for f in fake.composed if f["to"] == "dana_k_22"] == ["dana_k_22"]
    assert case_row(engine, "dana_k_22").ack_state == "sent"


# --- agent replies from the inbox -------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "recipient", "expected"),
    [
        (
            {"visibility": "public", "in_reply_to_external_id": "t1_abc"},
            "dana_k_22",
            {"mode": "reply", "thing_id": "t1_abc"},
        ),
        (
            {"visibility": "private", "in_reply_to_external_id": "t4_xyz"},
            "dana_k_22",
            {"mode": "message", "to": "dana_k_22"},
        ),
        ({}, "u/dana_k_22", {"mode": "message", "to": "dana_k_22"}),
        ({"visibility": "public"}, "dana_k_22", {"mode": "message", "to": "dana_k_22"}),
    ],
)
def test_an_agent_reply_gets_a_reddit_route(payload, recipient, expected):
    route = reply_route({"author": "ann", **payload}, recipient)
    assert {k: route[k] for k in expected} == expected and route["author"] == "ann"


def test_an_agent_reply_to_a_public_comment_answers_that_comment(engine, fake):
    hold_back(fake, "message/inbox", DANA_PM)
    reddit = connector(engine, fake)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    reddit.deliver_once()  # the acknowledgement
    case = case_row(engine, "dana_k_22")
    agent = Principal(id=make_user(engine, "agent1"), name="agent1", role="agent", via="cli")
    casework.reply(
        engine,
        agent,
        case.reference,
        casework.ReplyRequest(text="Fixed on our side, please try again."),
        message_id_domain="support.example.com",
    )
    reddit.deliver_once()
    answers = [f for f in fake.posted if f["thing_id"] == DANA_COMMENT]
    assert [a["text"] for a in answers][-1] == "Fixed on our side, please try again."
    assert len(answers) == 2  # the acknowledgement, then the agent
    [reply] = [r for r in rows(engine, case.id) if r.kind == "reply"]
    assert (reply.state, reply.payload["mode"]) == ("sent", "reply")


def test_past_the_global_bucket_reddit_acknowledgements_are_withheld(engine, fake):
    # Reddit's acknowledgements are planned by the worker too, from the same stored buckets
    # as email.
    reddit = connector(engine, fake)
    reddit.poll_once()
    limits = AckLimits(global_burst=1, global_per_hour=0)
    normalize(engine, connectors=routes(reddit), acks=AckSettings(limits=limits))
    with engine.connect() as conn:
        cases = list(conn.execute(select(Case.id, Case.ack_state, Case.ack_reason)))
        acks = conn.execute(select(Outbox.case_id).where(Outbox.kind == "ack")).scalars().all()
    limited = [c for c in cases if c.ack_reason == "rate limit: global"]
    queued = [c for c in cases if c.ack_state == "queued"]
    # Every new case was planned as it was opened: none left waiting for a sweep.
    assert len(cases) >= 3 and all(c.ack_state is not None for c in cases)
    assert len(queued) == 1 and acks == [queued[0].id]
    assert len(limited) >= 2 and all(c.ack_state == "withheld" for c in limited)


def test_an_acknowledgement_not_sent_within_ack_max_age_hours_expires_unsent(engine, fake):
    # The worker queues as it opens the case; if Reddit's sender was away longer than the
    # connector's ack_max_age_hours (2 h here, shorter than the outbox's 24 h default),
    # the drainer expires the acknowledgement instead of answering hours late.
    reddit = connector(engine, fake, ack_max_age_hours=2)
    reddit.poll_once()
    normalize(engine, connectors=routes(reddit))
    with engine.begin() as conn:
        queued = conn.execute(select(Outbox.id).where(Outbox.kind == "ack")).scalars().all()
        assert queued, "the fixtures should open cases that get an acknowledgement"
        conn.execute(
            update(Outbox)
            .where(Outbox.id == queued[0])
            .values(created_at=datetime.now(UTC) - timedelta(hours=3))
        )
    reddit.deliver_once()
    with engine.connect() as conn:
        late = conn.execute(select(Outbox).where(Outbox.id == queued[0])).one()
        fresh = conn.execute(select(Outbox.state).where(Outbox.id.in_(queued[1:]))).scalars()
        assert set(fresh) <= {"sent"}
    assert late.state == "failed" and "expired" in (late.last_error or "")
    sent_to = {f["thing_id"] for f in fake.posted} | {f["to"] for f in fake.composed}
    assert late.payload.get("thing_id", late.payload.get("to")) not in sent_to
