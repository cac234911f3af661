"""The one outbox every channel shares: its retry curve, and acknowledgement outcomes that
reach the case and the audit log the same way for email, SMS, Twitter and Reddit.

The end-to-end half sends a real acknowledgement on each channel, through the real client
(smtplib, twilio, tweepy, praw) against our local fakes, and expects the audit row computed
from the outbox row itself, so a channel that audited differently (or not at all) fails.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from connectors.config import OutboxSettings
from connectors.outbox import OutboxDrainer
from connectors.telegram.outbox import TelegramSender
from connectors.twilio.outbox import TwilioDrainer, TwilioSmsSender, make_client
from inbox import report_rows
from inbox.models import AuditLog, Case, Outbox, utcnow
from inbox.outbox import Result, backoff, claim, enqueue, record, recover
from inbox.secrets import Secret
from tests.channels.reddit.reddit_fake import FakeReddit
from tests.channels.reddit.reddit_support import connector as reddit_connector
from tests.channels.telegram.support import TOKEN as TELEGRAM_TOKEN
from tests.channels.telegram.support import deliver as telegram_deliver
from tests.channels.telegram.support import fake_bot_api
from tests.channels.telegram.support import settings as telegram_settings
from tests.channels.twilio.twilio_support import (
    ACCOUNT,
    TOKEN,
    Hooks,
    fake_twilio,
    fixture,
    settings,
)
from tests.channels.twitter.fake_x import FakeX
from tests.channels.twitter.support import connector as twitter_connector
from tests.channels.twitter.support import routes as twitter_routes
from tests.channels.twitter.support import send_next as twitter_send_next
from tests.channels.twitter.support import settings_for
from tests.support.helpers import ingest_and_normalize, normalize
from tests.support.inbox_helpers import bulk_cases
from tests.support.outbox_helpers import drainer_for, mail
from tests.support.sink import Sink

# --- the retry curve ------------------------------------------------------------------------


def ceiling_by_doubling(attempt: int, base: float, cap: float) -> float:
    """The longest wait before retry `attempt`, by doubling step by step (not by a power)."""
    ceiling = base
    for _ in range(attempt - 1):
        ceiling = min(cap, ceiling * 2)
    return min(cap, ceiling)


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "low", "high"),
    [
        # Worked out by hand: the ceiling is base doubled (attempt - 1) times, at most cap,
        # and every wait lies between half the ceiling and the ceiling.
        (1, 30.0, 3600.0, 15.0, 30.0),
        (2, 30.0, 3600.0, 30.0, 60.0),
        (3, 30.0, 3600.0, 60.0, 120.0),
        (7, 30.0, 3600.0, 960.0, 1920.0),
        (8, 30.0, 3600.0, 1800.0, 3600.0),  # 3840 s is past the cap
        (50, 30.0, 3600.0, 1800.0, 3600.0),
        (10_000, 30.0, 3600.0, 1800.0, 3600.0),  # no float overflow on a runaway count
        (0, 30.0, 3600.0, 15.0, 30.0),  # "before the first retry" waits like the first
        (1, 5.0, 900.0, 2.5, 5.0),  # the Twitter poller's curve after a failed poll
        (9, 5.0, 900.0, 450.0, 900.0),
        (3, 0.0, 3600.0, 0.0, 0.0),  # backoff_base_s = 0: retry at once (tests, bursts)
    ],
)
def test_backoff_stays_within_half_the_ceiling_and_the_ceiling(attempt, base, cap, low, high):
    assert backoff(attempt, base, cap, lambda: 0.0) == pytest.approx(low)
    assert backoff(attempt, base, cap, lambda: 1.0) == pytest.approx(high)
    rng = random.Random(attempt)
    for _ in range(200):
        assert low <= backoff(attempt, base, cap, rng.random) <= high


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 20])
def test_backoff_matches_a_ceiling_found_by_doubling(attempt):
    ceiling = ceiling_by_doubling(attempt, 30.0, 3600.0)
    assert backoff(attempt, 30.0, 3600.0, lambda: 0.5) == pytest.approx(ceiling * 0.75)


def test_backoff_spreads_rows_that_fail_together():
    rng = random.Random(11)
    waits = {round(backoff(4, 30.0, 3600.0, rng.random), 3) for _ in range(50)}
    assert len(waits) > 40  # jitter: fifty rows failing at once do not retry at once


# --- acknowledgement outcomes: the same audit row on every channel ------------------------


def ack_audits(engine: Engine) -> dict[int, list[tuple[str, dict[str, Any] | None]]]:
    """Outcome audit rows (ack.sent, ack.failed, ack.unknown) by outbox row."""
    found: dict[int, list[tuple[str, dict[str, Any] | None]]] = {}
    with engine.connect() as conn:
        for action, after in conn.execute(
            select(AuditLog.action, AuditLog.after)
            .where(AuditLog.action.in_(("ack.sent", "ack.failed", "ack.unknown")))
            .order_by(AuditLog.id)
        ):
            assert after is not None
            found.setdefault(int(after["outbox_id"]), []).append((action, after))
    return found


def sent_acks(engine: Engine, channel: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(*Outbox.__table__.c, Case.ack_state, Case.ack_reason)
                .join(Case, Case.id == Outbox.case_id)
                .where(Outbox.channel == channel, Outbox.kind == "ack")
                .order_by(Outbox.id)
            )
        )


def send_email_ack(engine: Engine, sink: Sink) -> None:
    ingest_and_normalize(engine, mail())
    assert drainer_for(engine, sink).drain_once().sent == 1


async def send_sms_ack(engine: Engine) -> None:
    with fake_twilio() as fake:
        async with Hooks(engine) as hooks:
            await hooks.post("/twilio/sms", fixture("sms"))
        normalize(engine)
        section = settings(api_base_url=fake.base_url)
        client = make_client(section, ACCOUNT, Secret(TOKEN))
        sender = TwilioSmsSender("sms", section, client, engine, status_callback=False)
        drainer = TwilioDrainer(engine, sender, OutboxSettings(), worker="test")
        report = await asyncio.to_thread(drainer.drain_once)
        assert report.sent == 1


async def send_twitter_ack(engine: Engine) -> None:
    fake = FakeX.from_fixtures()
    fake.start()
    try:
        fake.mentions = [t for t in fake.mentions if t["id"] == "2123706672739255506"]
        fake.dm_events = []
        twitter_settings = settings_for(fake)
        twitter = twitter_connector(engine, twitter_settings)
        await twitter.poll_mentions(asyncio.Event())
        normalize(engine, connectors=twitter_routes(twitter_settings))
        done = await asyncio.to_thread(twitter_send_next, twitter)
        assert done is not None
        assert done[1] == "sent"
    finally:
        fake.stop()


def send_reddit_ack(engine: Engine) -> None:
    with FakeReddit() as fake:
        # The subreddit only: every acknowledgement is a public reply.
        reddit = reddit_connector(engine, fake, inbox=False)
        reddit.poll_once()
        normalize(engine)
        assert reddit.delivery is not None
        assert reddit.deliver_once().sent >= 1


def send_telegram_ack(engine: Engine) -> None:
    telegram_deliver(engine, "text")
    with fake_bot_api() as fake:
        sender = TelegramSender(telegram_settings(fake.base_url), Secret(TELEGRAM_TOKEN))
        report = OutboxDrainer(engine, sender, OutboxSettings(), worker="test").drain_once()
    assert report.sent == 1


@pytest.mark.parametrize("channel", ["email", "sms", "twitter", "reddit", "telegram"])
async def test_a_sent_acknowledgement_is_audited_the_same_way_on_every_channel(
    engine: Engine, sink: Sink, channel: str
) -> None:
    if channel == "email":
        await asyncio.to_thread(send_email_ack, engine, sink)
    elif channel == "sms":
        await send_sms_ack(engine)
    elif channel == "twitter":
        await send_twitter_ack(engine)
    elif channel == "telegram":
        await asyncio.to_thread(send_telegram_ack, engine)
    else:
        await asyncio.to_thread(send_reddit_ack, engine)

    rows = sent_acks(engine, channel)
    assert rows and {r.state for r in rows} == {"sent"}
    audits = ack_audits(engine)
    for row in rows:
        # Expected from the outbox row alone: one outcome row, in one shape for all channels.
        assert audits.get(row.id) == [
            (
                "ack.sent",
                {
                    "outbox_id": row.id,
                    "channel": channel,
                    "reason": None,
                    "provider_id": row.provider_id,
                },
            )
        ]
        assert (row.ack_state, row.ack_reason) == ("sent", None)
    # Outcome rows belong to acknowledgements only, never to any other outbox row.
    assert set(audits) == {r.id for r in rows}


@pytest.mark.parametrize("channel", ["email", "sms", "twitter", "reddit"])
def test_failed_and_unknown_acknowledgements_are_audited_the_same_way(
    engine: Engine, channel: str
) -> None:
    """The store half of the promise: the calls every channel's sender makes."""
    cases = bulk_cases(engine, 2)
    with engine.begin() as conn:
        for case_id in cases:
            enqueue(
                conn,
                case_id=case_id,
                kind="ack",
                channel=channel,
                recipient="someone",
                body="We have your message.",
            )
    first, second = claim(engine, channel, "w1", limit=2, lease=timedelta(seconds=60))
    assert (first.case_id, second.case_id) == tuple(cases)
    reason = "refused: " + "x" * 400  # longer than cases.ack_reason holds
    assert record(engine, first, "w1", Result("failed", reason))
    # The second is left "sending" by a process that dies; its lease runs out.
    with engine.begin() as conn:
        conn.execute(
            update(Outbox)
            .where(Outbox.id == second.id)
            .values(claimed_until=utcnow() - timedelta(seconds=1))
        )
    resend = channel == "email"  # email goes again with the same Message-ID instead
    assert recover(engine, channel, resend=resend) == 1

    audits = ack_audits(engine)
    assert audits[first.id] == [
        (
            "ack.failed",
            {"outbox_id": first.id, "channel": channel, "reason": reason, "provider_id": None},
        )
    ]
    with engine.connect() as conn:
        states = {r.id: r.ack_state for r in conn.execute(select(Case.id, Case.ack_state))}
        ack_reason = conn.execute(select(Case.ack_reason).where(Case.id == cases[0])).scalar_one()
    assert states[cases[0]] == "failed" and ack_reason == reason[:256]
    if resend:
        assert second.id not in audits and states[cases[1]] is None
    else:
        [(action, after)] = audits[second.id]
        assert action == "ack.unknown" and after is not None
        assert (after["outbox_id"], after["channel"], after["provider_id"]) == (
            second.id,
            channel,
            None,
        )
        assert states[cases[1]] == "unknown"


@pytest.mark.parametrize("channel", ["email", "sms", "twitter", "reddit"])
async def test_every_channel_audits_the_time_its_acknowledgement_promised(
    engine: Engine, sink: Sink, channel: str
) -> None:
    """The manager report's "promise kept" reads the promised time from the audit log: a
    channel that planned its acknowledgements without that row (Twitter and Reddit did)
    dropped out of the figure."""
    if channel == "email":
        await asyncio.to_thread(send_email_ack, engine, sink)
    elif channel == "sms":
        await send_sms_ack(engine)
    elif channel == "twitter":
        await send_twitter_ack(engine)
    else:
        await asyncio.to_thread(send_reddit_ack, engine)

    rows = sent_acks(engine, channel)
    assert rows
    with engine.connect() as conn:
        queued = [
            (case_id, after)
            for case_id, after in conn.execute(
                select(AuditLog.case_id, AuditLog.after).where(
                    AuditLog.action == "acknowledgement.queued"
                )
            )
        ]
        report = {
            r.id: r
            for r in report_rows.fetch(
                conn, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
            )
        }
    assert sorted(after["outbox_id"] for _, after in queued) == sorted(r.id for r in rows)
    for case_id, after in queued:
        assert after["channel"] == channel
        promised = datetime.fromisoformat(after["eta_at"])
        assert report[case_id].eta_at == promised
