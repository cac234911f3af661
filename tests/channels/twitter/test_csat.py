"""The satisfaction survey of a case that began as a public mention, on SQLite and PostgreSQL:
asked by Direct Message through tweepy and the fake X server, never by a public post."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from inbox import csat
from inbox.models import Case, CsatSurvey
from tests.channels.twitter.support import connector, routes, send_next, settings_for
from tests.channels.twitter.test_outbox import ANN, ANN_TWEET, only
from tests.support.helpers import normalize

SECRET = b"test-csat-secret-0123456789"


async def test_a_public_mention_is_surveyed_by_dm_only(engine, fake):
    only(fake, ANN_TWEET)
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_mentions(asyncio.Event())
    normalize(engine, connectors=routes(settings))
    acked = send_next(twitter)
    assert acked is not None and acked[1] == "sent"
    tweets_before = list(fake.posted_tweets)
    with engine.begin() as conn:
        conn.execute(
            update(Case).values(
                status="resolved", resolved_at=datetime.now(UTC) - timedelta(hours=2)
            )
        )
    section = csat.CsatSettings(enabled=True, public_url="https://support.example.com")
    [done] = csat.plan_due(engine, section, SECRET)
    assert done["asked"] and done["mode"] == "link"
    with engine.connect() as conn:
        survey = conn.execute(select(CsatSurvey)).one()
    assert survey.side == "public"  # counted on the public side, asked in private
    sent = send_next(twitter)
    assert sent is not None
    row, outcome = sent
    assert outcome == "sent" and row.payload["mode"] == "dm"
    assert fake.posted_tweets == tweets_before  # no public post
    [dm] = fake.posted_dms
    assert dm["to"] == ANN
    assert csat.survey_url(section.public_url, csat.sign(SECRET, survey.id)) in dm["text"]
