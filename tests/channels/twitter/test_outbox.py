"""Twitter acknowledgements and the twitter outbox, through tweepy and the fake X server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import select, update

from connectors.twitter.outbox import reply_route
from inbox import casework, queries
from inbox.accounts import Principal
from inbox.config import SlaSettings
from inbox.models import Case, Identity, Outbox, OutboxAttempt
from normalizer.acks import AckSettings, describe_eta
from normalizer.eta import queue_estimate
from normalizer.threads import case_tag
from tests.channels.twitter.fake_x import ACCOUNT_ID
from tests.channels.twitter.support import (
    connector,
    intake_count,
    routes,
    send_next,
    settings_for,
    until,
)
from tests.support.helpers import ingest_and_normalize, normalize
from tests.support.inbox_helpers import make_user

ANN = "1398765432109876543"
ANN_TWEET = "2123706672739255506"
CHLOE = "1123581321345589144"


def mail(message_id: str, date: str, text: str) -> bytes:
    return (
        "From: Ann Example <ann@example.org>\r\n"
        "To: help@support.example.com\r\n"
        "Subject: Locked out of my account\r\n"
        f"Message-ID: <{message_id}@example.org>\r\n"
        f"Date: {date}\r\n"
        "\r\n"
        f"{text}\r\n"
    ).encode()


def case_by_handle(engine, handle: str) -> dict[str, Any]:
    for summary in queries.list_cases(
        engine, statuses=("new", "open", "pending_customer", "resolved")
    ):
        if any(i["handle"] == handle for i in summary["contact"]["identities"]):
            detail = queries.case_detail(engine, summary["reference"])
            assert detail is not None
            return detail
    raise AssertionError(f"no case for {handle}")


def attempts(engine, outbox_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(OutboxAttempt.outcome)
                .where(OutboxAttempt.outbox_id == outbox_id)
                .order_by(OutboxAttempt.id)
            ).scalars()
        )


def outbox_rows(engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Outbox).order_by(Outbox.id)))


def only(fake, *ids: str) -> None:
    fake.mentions = [t for t in fake.mentions if t["id"] in ids]
    fake.dm_events = [e for e in fake.dm_events if e["id"] in ids]


async def test_mention_then_email_from_linked_identities_is_one_case_and_the_reply_is_impersonal(
    engine, fake
):
    # Ann wrote by email a month ago; that case was resolved long since.
    old = ingest_and_normalize(
        engine, mail("old", "Mon, 19 Oct 2026 08:00:00 +0000", "Old question about invoices.")
    )
    with engine.begin() as conn:
        conn.execute(
            update(Case)
            .where(Case.id == old.case_id)
            .values(status="resolved", resolved_at=datetime.now(UTC) - timedelta(days=30))
        )
    # Now she tweets at us.
    only(fake, ANN_TWEET)
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_mentions(asyncio.Event())
    # The worker plans the acknowledgement in the transaction that opens the case.
    planned_from = datetime.now(UTC)
    [mention] = normalize(engine, connectors=routes(settings))
    planned_by = datetime.now(UTC)
    [planned] = [r for r in outbox_rows(engine) if r.channel == "twitter"]
    assert (planned.case_id, planned.kind, planned.payload["mode"]) == (
        mention.case_id,
        "ack",
        "tweet",
    )
    done = send_next(twitter)
    assert done is not None
    _item, outcome = done
    assert outcome == "sent"

    # An agent sees it is the same person and links her email identity to this contact.
    with engine.begin() as conn:
        contact_id = conn.execute(
            select(Case.contact_id).where(Case.id == mention.case_id)
        ).scalar_one()
        conn.execute(
            update(Identity)
            .where(Identity.kind == "email", Identity.handle == "ann@example.org")
            .values(contact_id=contact_id)
        )
    follow_up = ingest_and_normalize(
        engine,
        mail("new", "Fri, 20 Nov 2026 09:40:00 +0000", "I also tweeted you about this."),
    )
    assert follow_up.case_id == mention.case_id
    case = case_by_handle(engine, ANN)
    assert [m["channel"] for m in case["messages"]] == ["twitter", "email"]
    assert case["channels"] == ["twitter", "email"]
    assert case["acknowledgement"]["state"] == "sent"

    # The public reply: reference and ETA, in reply to her tweet, nothing personal.
    [tweet] = fake.posted_tweets
    assert tweet["referenced_tweets"] == [{"type": "replied_to", "id": ANN_TWEET}]
    due = datetime.fromisoformat(case["due_at"].replace("Z", "+00:00"))
    assert case["reference"] in tweet["text"]
    # The one wording of every channel, for the due time as seen while it was planned.
    words = {describe_eta(at, due, "UTC") for at in (planned_from, planned_by)}
    assert any(w in tweet["text"] for w in words), (words, tweet["text"])
    assert "Direct Message" in tweet["text"]
    with engine.connect() as conn:
        token = conn.execute(select(Case.token).where(Case.id == mention.case_id)).scalar_one()
    lowered = tweet["text"].lower()
    for personal in (
        "ann@example.org",
        "example.org",
        "ann example",
        "ann",
        "ann_exmpl",
        "locked out of my account",
        case["subject"].lower(),
        "phone was stolen",
        token,
    ):
        assert personal not in lowered, personal
    # A customer's answer to our reply threads by our tweet id as well.
    [row] = [r for r in outbox_rows(engine) if r.channel == "twitter"]
    assert row.provider_id == tweet["id"] and row.state == "sent"
    assert attempts(engine, row.id) == ["sent"]


async def test_our_own_acknowledgement_dm_comes_back_and_is_not_a_message(engine, fake):
    only(fake, "2123733088465847506")  # Chloé's DM
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_dms(asyncio.Event())
    [first] = normalize(engine, connectors=routes(settings))
    done = send_next(twitter)
    assert done is not None
    item, outcome = done
    assert item.payload["mode"] == "dm"
    assert outcome == "sent"

    [dm] = fake.posted_dms
    case = case_by_handle(engine, CHLOE)
    with engine.connect() as conn:
        token = conn.execute(select(Case.token).where(Case.id == first.case_id)).scalar_one()
    assert dm["to"] == CHLOE and dm["sender_id"] == ACCOUNT_ID
    assert case_tag(case["reference"], token) in dm["text"]  # the full acknowledgement
    # The fake now lists our DM among the account's DM events, as X does.
    assert any(e["id"] == dm["id"] for e in fake.dm_events)

    before = intake_count(engine)
    again = connector(engine, settings)
    await again.poll_dms(asyncio.Event())
    assert again.streams["dms"].skipped_own == 1
    assert intake_count(engine) == before
    assert normalize(engine) == []
    assert [m["from"] for m in case_by_handle(engine, CHLOE)["messages"]] == [CHLOE]


async def test_public_replies_off_sends_the_acknowledgement_by_dm(engine, fake):
    only(fake, ANN_TWEET)
    settings = settings_for(fake, public_replies=False)
    twitter = connector(engine, settings)
    await twitter.poll_mentions(asyncio.Event())
    normalize(engine, connectors=routes(settings))
    [planned] = outbox_rows(engine)
    assert planned.payload["mode"] == "dm"
    done = send_next(twitter)
    assert done is not None
    _item, outcome = done
    assert outcome == "sent"
    assert fake.posted_tweets == []
    [dm] = fake.posted_dms
    assert dm["to"] == ANN
    case = case_by_handle(engine, ANN)
    assert case["reference"] in dm["text"]
    assert case["acknowledgement"]["state"] == "sent"


async def test_without_public_replies_or_dm_access_the_case_records_why(engine, fake):
    only(fake, ANN_TWEET)
    # This app may not read or send DMs: X answers 403 on the DM endpoint.
    fake.inject("/dm_events", 403, "errors/403_unsupported_authentication.json", times=1000)
    settings = settings_for(fake, public_replies=False)
    twitter = connector(engine, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(twitter.run(stop))
    try:
        await until(lambda: intake_count(engine) == 1)
        # The 403 is stored (the worker reads it) before the stream shows "disabled".
        await until(lambda: twitter.streams["dms"].state == "disabled")
        await asyncio.to_thread(partial(normalize, engine, connectors=routes(settings)))
        await until(lambda: case_by_handle(engine, ANN)["acknowledgement"]["state"] is not None)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    ack = case_by_handle(engine, ANN)["acknowledgement"]
    assert ack["state"] == "withheld"
    assert "public replies are off" in ack["reason"] and "direct messages" in ack["reason"]
    assert twitter.streams["dms"].state == "disabled"
    assert twitter.streams["mentions"].state == "ok"  # the mentions stream carries on
    assert fake.posted_tweets == [] and fake.posted_dms == []
    assert outbox_rows(engine) == []


async def test_a_dm_acknowledgement_x_refuses_is_failed_with_the_reason_on_the_case(engine, fake):
    only(fake, "2123733088465847506")
    fake.users[CHLOE]["dm_closed"] = True  # she no longer accepts DMs from us
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_dms(asyncio.Event())
    normalize(engine, connectors=routes(settings))
    done = send_next(twitter)
    assert done is not None
    _item, outcome = done
    assert outcome == "failed"
    ack = case_by_handle(engine, CHLOE)["acknowledgement"]
    assert ack["state"] == "failed"
    assert "not permitted to send a message" in ack["reason"]
    assert send_next(twitter) is None  # not retried forever


async def test_a_429_on_send_is_retried_after_the_reset(engine, fake):
    only(fake, ANN_TWEET)
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_mentions(asyncio.Event())
    normalize(engine, connectors=routes(settings))
    fake.inject("/2/tweets", 429, "errors/429_too_many_requests.json", method="POST", reset_in=1.0)
    done = send_next(twitter)
    assert done is not None
    item, outcome = done
    assert outcome == "retry"
    assert send_next(twitter) is None  # not before the reset
    reset = int(fake.requests("/2/tweets", "POST")[-1].at + 1.0)  # what the fake announced
    await asyncio.sleep(max(0.0, reset + 1.05 - time.time()))
    again = send_next(twitter)
    assert again is not None and again[0].id == item.id
    assert again[1] == "sent"
    assert len(fake.posted_tweets) == 1
    assert attempts(engine, item.id) == ["retry", "sent"]


async def test_a_send_whose_answer_is_lost_is_unknown_then_found_at_x(engine, fake):
    only(fake, ANN_TWEET)
    settings = settings_for(fake)
    twitter = connector(engine, settings, api_timeout=(2.0, 1.0))
    await twitter.poll_mentions(asyncio.Event())
    normalize(engine, connectors=routes(settings))
    fake.hold_posts = True  # X posts the tweet, but its answer never arrives
    done = await asyncio.to_thread(send_next, twitter)
    assert done is not None
    _item, outcome = done
    assert outcome == "unknown"
    # The drainer looks an unknown row up at X on its next pass (Twitter's own loop did so
    # straight after the send).
    await asyncio.to_thread(twitter.delivery.drain_once)
    [tweet] = fake.posted_tweets
    [row] = outbox_rows(engine)
    # Looked up on our own timeline rather than posted again.
    assert row.state == "sent" and row.provider_id == tweet["id"]
    assert attempts(engine, row.id) == ["unknown", "sent"]
    assert case_by_handle(engine, ANN)["acknowledgement"]["state"] == "sent"


async def test_a_send_that_never_reached_x_stays_unknown_for_an_agent(engine, fake):
    only(fake, ANN_TWEET)
    settings = settings_for(fake)
    twitter = connector(engine, settings, api_timeout=(2.0, 1.0))
    await twitter.poll_mentions(asyncio.Event())
    normalize(engine, connectors=routes(settings))
    fake.drop_posts = True  # the request is swallowed: nothing is posted, no answer
    done = await asyncio.to_thread(send_next, twitter)
    assert done is not None
    _item, outcome = done
    assert outcome == "unknown"
    # The drainer looks an unknown row up at X on its next pass (Twitter's own loop did so
    # straight after the send).
    await asyncio.to_thread(twitter.delivery.drain_once)
    assert fake.posted_tweets == []
    [row] = outbox_rows(engine)
    assert row.state == "unknown"
    assert "left for an agent" in row.last_error
    assert send_next(twitter) is None  # never re-sent on a guess
    assert case_by_handle(engine, ANN)["acknowledgement"]["state"] == "unknown"


async def test_a_reply_to_our_public_reply_threads_back_into_the_case(engine, fake):
    only(fake, ANN_TWEET)
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_mentions(asyncio.Event())
    [first] = normalize(engine, connectors=routes(settings))
    done = send_next(twitter)
    assert done is not None and done[1] == "sent"
    [ours] = fake.posted_tweets
    with engine.begin() as conn:
        conn.execute(
            update(Case)
            .where(Case.id == first.case_id)
            .values(status="resolved", resolved_at=datetime.now(UTC) - timedelta(days=1))
        )
    # Ann answers our reply a day after the case was resolved.
    fake.add_mention(
        ANN,
        "@ParityDesk thanks, but it happened again this morning",
        conversation_id=ours["conversation_id"],
        in_reply_to_user_id=ACCOUNT_ID,
        referenced_tweets=[{"type": "replied_to", "id": ours["id"]}],
    )
    await twitter.poll_mentions(asyncio.Event())
    [answer] = normalize(engine)
    assert answer.case_id == first.case_id
    assert answer.decision is not None and answer.decision.action == "reopen"
    assert answer.decision.reason.startswith("in-reply-to")


async def test_a_renamed_account_keeps_its_identity_and_the_new_handle(engine, fake):
    only(fake, ANN_TWEET)
    settings = settings_for(fake)
    await connector(engine, settings).poll_mentions(asyncio.Event())
    normalize(engine)
    fake.users[ANN] = {
        **fake.users[ANN],
        "username": "ann_example_2026",
        "public_metrics": {**fake.users[ANN]["public_metrics"], "followers_count": 230},
    }
    fake.add_mention(ANN, "@ParityDesk new handle, same problem")
    await connector(engine, settings).poll_mentions(asyncio.Event())
    [later] = normalize(engine)
    case = case_by_handle(engine, ANN)
    assert later.decision is not None and later.decision.follow_up
    [identity] = case["contact"]["identities"]
    assert identity["handle"] == ANN  # the user id: the same identity, the same contact
    assert identity["name"] == "Ann Example (@ann_example_2026)"
    assert identity["facts"]["username"] == "ann_example_2026"
    assert identity["facts"]["followers_count"] == 230
    assert len(case["messages"]) == 2


# --- agent replies from the inbox -------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"author": "ann", "visibility": "public", "in_reply_to_external_id": "99"},
            {"mode": "tweet", "in_reply_to_tweet_id": "99"},
        ),
        (
            {"author": "ann", "visibility": "private", "in_reply_to_external_id": "7"},
            {"mode": "dm"},
        ),
        ({"author": "ann"}, {"mode": "dm"}),  # nothing public to answer: never a public post
        ({"author": "ann", "visibility": "public"}, {"mode": "dm"}),
    ],
)
def test_an_agent_reply_gets_a_twitter_route(payload, expected):
    route = reply_route(payload)
    assert {k: route[k] for k in expected} == expected
    assert route["author"] == "ann"  # the inbox's own fields stay on the row


async def test_an_agent_reply_to_a_mention_is_a_public_reply_to_that_tweet(engine, fake):
    only(fake, ANN_TWEET)
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_mentions(asyncio.Event())
    normalize(engine, connectors=routes(settings))  # the acknowledgement comes first
    reference = case_by_handle(engine, ANN)["reference"]
    agent = Principal(id=make_user(engine, "agent1"), name="agent1", role="agent", via="cli")
    casework.reply(
        engine,
        agent,
        reference,
        casework.ReplyRequest(text="We have restored access; check your DMs."),
        message_id_domain="support.example.com",
    )
    sent = []
    while (done := send_next(twitter)) is not None:
        sent.append((done[0].kind, done[1]))
    assert sent == [("ack", "sent"), ("reply", "sent")]
    reply_tweet = fake.posted_tweets[-1]
    assert reply_tweet["text"] == "We have restored access; check your DMs."
    assert reply_tweet["referenced_tweets"] == [{"type": "replied_to", "id": ANN_TWEET}]
    [row] = [r for r in outbox_rows(engine) if r.kind == "reply"]
    assert row.payload["mode"] == "tweet" and row.provider_id == reply_tweet["id"]


async def test_the_public_acknowledgement_promises_the_same_queue_estimate_as_email(engine, fake):
    # Six cases were answered in the last hours, so the estimate comes from the queue and
    # the answer rate, not from the SLA due time.
    for n in range(6):
        done = ingest_and_normalize(
            engine, mail(f"old{n}", "Fri, 20 Nov 2026 08:00:00 +0000", f"Question {n}")
        )
        with engine.begin() as conn:
            conn.execute(
                update(Case)
                .where(Case.id == done.case_id)
                .values(
                    status="resolved",
                    created_at=datetime.now(UTC) - timedelta(hours=2),
                    first_response_at=datetime.now(UTC) - timedelta(minutes=5 + n),
                    resolved_at=datetime.now(UTC),
                )
            )
    only(fake, ANN_TWEET)
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_mentions(asyncio.Event())
    # The worker plans the acknowledgement with its queue estimate as it opens the case.
    [mention] = normalize(engine, connectors=routes(settings))
    assert mention.case_id is not None
    case_id = mention.case_id
    with engine.connect() as conn:
        due_at = conn.execute(select(Case.due_at).where(Case.id == case_id)).scalar_one()
    store, acks = SlaSettings(), AckSettings()
    shared = queue_estimate(store, acks)

    def promised_now() -> str:
        with engine.connect() as conn:
            now = datetime.now(UTC)
            return describe_eta(now, shared(conn, case_id, due_at, now), "UTC")

    # Recomputed straight after planning: the queue has not moved since, and the words
    # round to a quarter hour; either side of a rounding step is accepted.
    before = promised_now()
    after = promised_now()
    sent = send_next(twitter)
    assert sent is not None and sent[1] == "sent"
    [tweet] = fake.posted_tweets
    assert before in tweet["text"] or after in tweet["text"], tweet["text"]
    # Six answers within minutes make the queue fast: sooner than the 4-hour SLA due time.
    assert describe_eta(datetime.now(UTC), due_at, "UTC") not in tweet["text"]
