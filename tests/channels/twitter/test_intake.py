"""Twitter intake with the real tweepy client against the fake X server, on both databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from inbox.models import Message
from normalizer.intake import load_checkpoint
from tests.channels.twitter.fake_x import ACCOUNT_ID, backlog
from tests.channels.twitter.support import (
    connector,
    customer_dms,
    customer_mentions,
    intake_count,
    intake_keys,
    settings_for,
)
from tests.support.helpers import normalize


async def poll_both(conn) -> None:
    stop = asyncio.Event()
    await conn.poll_mentions(stop)
    await conn.poll_dms(stop)


async def test_two_overlapping_polls_with_a_restart_store_every_item_once(engine, fake):
    settings = settings_for(fake)
    first = connector(engine, settings)
    await poll_both(first)
    assert set(intake_keys(engine)) == customer_mentions(fake) | customer_dms(fake)
    newest_mention = max((t["id"] for t in fake.mentions), key=int)

    # The process restarts; meanwhile two people mention us and one writes a DM. The DM
    # endpoint returns everything again (it has no since_id): the overlap.
    now = datetime.now(UTC)
    fake.add_mention("1398765432109876543", "@ParityDesk still locked out, please", now)
    fake.add_mention("783214556", "@ParityDesk hello??", now + timedelta(seconds=1))
    fake.add_dm("1398765432109876543", "Here is the DM you asked for.", now)
    second = connector(engine, settings)
    await poll_both(second)

    expected = customer_mentions(fake) | customer_dms(fake)
    keys = intake_keys(engine)
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == expected
    # The second mentions poll asked only for what is newer than the first one saw.
    mention_calls = fake.requests("/mentions")
    assert mention_calls[-1].query.get("since_id") == newest_mention
    # Each item is one message after normalizing, and nothing from our own account.
    outcomes = normalize(engine)
    assert sorted(o.state for o in outcomes) == ["done"] * len(expected)
    with engine.connect() as conn:
        senders = list(conn.execute(select(Message.from_handle)).scalars())
    assert len(senders) == len(expected)
    assert ACCOUNT_ID not in senders
    # Polling again changes nothing.
    await poll_both(connector(engine, settings))
    assert intake_count(engine) == len(expected)


async def test_a_restart_in_the_middle_of_a_round_resumes_from_the_saved_page(engine, fake):
    fake.mentions = []
    backlog(fake, 250)
    # The third page fails (X has a bad moment): pages one and two are stored with a
    # checkpoint that names the page to read next.
    fake.inject("/mentions", 503, "errors/503_service_unavailable.json", when=_page(3))
    settings = settings_for(fake)
    first = connector(engine, settings)
    try:
        await first.poll_mentions(asyncio.Event())
        raise AssertionError("the 503 should have ended the round")
    except Exception as exc:
        assert "503" in str(exc)
    assert intake_count(engine) == 200
    saved = load_checkpoint(engine, "twitter", f"mentions:{ACCOUNT_ID}")
    assert saved is not None and saved["since_id"] is None
    token = saved["round"]["next_token"]

    second = connector(engine, settings)
    await second.poll_mentions(asyncio.Event())
    calls = fake.requests("/mentions")
    assert calls[-1].query.get("pagination_token") == token  # resumed, not restarted
    assert set(intake_keys(engine)) == customer_mentions(fake)
    assert intake_count(engine) == 250
    saved = load_checkpoint(engine, "twitter", f"mentions:{ACCOUNT_ID}")
    assert saved == {"since_id": max((t["id"] for t in fake.mentions), key=int)}


def _page(number: int):
    """Matches the request for page `number` of a round (counted by tokens seen so far)."""
    seen: list[str] = []

    def match(query: dict[str, str]) -> bool:
        token = query.get("pagination_token")
        if token and token not in seen:
            seen.append(token)
        return token is not None and len(seen) == number - 1 and seen[-1] == token

    return match


async def test_a_429_mid_poll_waits_for_the_reset_and_loses_nothing(engine, fake):
    fake.mentions = []
    backlog(fake, 250)
    rule = fake.inject(
        "/mentions", 429, "errors/429_too_many_requests.json", reset_in=1.0, when=_page(2)
    )
    conn = connector(engine, settings_for(fake))
    await conn.poll_mentions(asyncio.Event())

    assert rule.hits == 1
    calls = fake.requests("/mentions")
    refused = next(i for i, c in enumerate(calls) if c.status == 429)
    retry = calls[refused + 1]
    # The same page again, and not before the reset X announced.
    assert retry.query["pagination_token"] == calls[refused].query["pagination_token"]
    assert retry.status == 200
    reset = int(calls[refused].at + 1.0)
    assert retry.at >= reset
    assert set(intake_keys(engine)) == customer_mentions(fake)
    assert intake_count(engine) == 250
    budget = conn.health.details["rate_limits"]["mentions"]
    assert budget["limit"] == 450
    assert budget["remaining"] == 450 - 3  # three answered pages drew on the window


async def test_dm_polls_read_back_only_to_the_overlap_window(engine, fake):
    fake.dm_events = []
    start = datetime.now(UTC) - timedelta(hours=2)
    for i in range(250):  # one every 20 s: a page of 100 spans 33 minutes
        fake.add_dm("1398765432109876543", f"message {i}", start + timedelta(seconds=20 * i))
    settings = settings_for(fake, dm_overlap_seconds=300)
    await connector(engine, settings).poll_dms(asyncio.Event())
    assert len(fake.requests("/dm_events")) == 3
    assert intake_count(engine) == 250
    saved = load_checkpoint(engine, "twitter", f"dm_events:{ACCOUNT_ID}")
    newest = max(fake.dm_events, key=lambda e: int(e["id"]))
    assert saved is not None and saved["newest_id"] == newest["id"]

    # A late event inside the overlap window (listed by X after our poll) and a new one.
    late = fake.add_dm(
        "783214556", "sent a while ago, listed late", start + timedelta(seconds=20 * 249 - 60)
    )
    fresh = fake.add_dm("783214556", "a new one", datetime.now(UTC))
    await connector(engine, settings).poll_dms(asyncio.Event())
    assert len(fake.requests("/dm_events")) == 4  # one page was enough
    assert {f"dm:{late['id']}", f"dm:{fresh['id']}"} <= set(intake_keys(engine))
    assert intake_count(engine) == 252


async def test_our_own_tweets_and_dms_are_never_taken_in(engine, fake):
    conn = connector(engine, settings_for(fake))
    await poll_both(conn)
    own_tweets = sum(1 for t in fake.mentions if t["author_id"] == ACCOUNT_ID)
    own_dms = sum(1 for e in fake.dm_events if e["sender_id"] == ACCOUNT_ID)
    assert own_tweets == 1 and own_dms == 1  # the fixtures hold one of each
    assert conn.streams["mentions"].skipped_own == own_tweets
    assert conn.streams["dms"].skipped_own == own_dms
    assert not any(
        k.endswith(t["id"])
        for k in intake_keys(engine)
        for t in fake.mentions
        if t["author_id"] == ACCOUNT_ID
    )


async def test_requests_ask_for_the_fields_the_parser_needs(engine, fake):
    await poll_both(connector(engine, settings_for(fake)))
    mentions = fake.requests("/mentions")[0].query
    assert mentions["expansions"] == "author_id"
    assert {
        "conversation_id",
        "in_reply_to_user_id",
        "referenced_tweets",
        "created_at",
        "author_id",
    } <= set(mentions["tweet.fields"].split(","))
    assert {"public_metrics", "verified", "username"} <= set(mentions["user.fields"].split(","))
    dms = fake.requests("/dm_events")[0].query
    assert dms["expansions"] == "sender_id"
    assert {"sender_id", "dm_conversation_id", "created_at"} <= set(
        dms["dm_event.fields"].split(",")
    )
    # Facts arrive on the identity: stored, for agents.
    normalize(engine)
    from inbox import queries

    cases = queries.list_cases(engine)
    bob = next(
        c for c in cases if any(i["handle"] == "783214556" for i in c["contact"]["identities"])
    )
    facts = next(i["facts"] for i in bob["contact"]["identities"] if i["handle"] == "783214556")
    assert facts == {"username": "bigbob", "followers_count": 1204331, "verified": True}
