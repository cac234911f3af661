"""Acknowledgement limits hold on Twitter too: the connector plans its own acknowledgements
(it knows whether the app may send DMs), and draws on the same stored buckets as email."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from connectors.twitter.outbox import plan_acks
from inbox.models import Case, Outbox
from normalizer.acks import AckLimits
from tests.channels.twitter.support import connector, settings_for
from tests.support.helpers import normalize


async def test_past_the_global_bucket_twitter_acknowledgements_are_withheld(engine, fake):
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_mentions(asyncio.Event())
    normalize(engine)
    # One acknowledgement for the whole desk, and none regained: the first eligible case
    # takes it, every other eligible case is withheld with the bucket's reason.
    limits = AckLimits(global_burst=1, global_per_hour=0)
    planned = plan_acks(engine, settings, dm_available=True, limits=limits)
    queued = [p for p in planned if p.route is not None]
    limited = [p for p in planned if p.reason == "rate limit: global"]
    assert len(planned) >= 3, "the fake's mentions should open several cases"
    assert len(queued) == 1 and len(limited) >= 2
    with engine.connect() as conn:
        acks = conn.execute(select(Outbox.case_id).where(Outbox.kind == "ack")).scalars().all()
        states = {
            row.id: (row.ack_state, row.ack_reason)
            for row in conn.execute(select(Case.id, Case.ack_state, Case.ack_reason))
        }
    assert acks == [queued[0].case_id]
    for p in limited:
        assert states[p.case_id] == ("withheld", "rate limit: global")
