"""Acknowledgement limits hold on Twitter too: the worker plans its acknowledgements with
the connector's route (which knows whether the app may send DMs), and they draw on the same
stored buckets as email."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from inbox.models import Case, Outbox
from normalizer.acks import AckLimits, AckSettings
from tests.channels.twitter.support import connector, routes, settings_for
from tests.support.helpers import normalize


async def test_past_the_global_bucket_twitter_acknowledgements_are_withheld(engine, fake):
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_mentions(asyncio.Event())
    # One acknowledgement for the whole desk, and none regained: the first eligible case
    # takes it, every other eligible case is withheld with the bucket's reason.
    limits = AckLimits(global_burst=1, global_per_hour=0)
    normalize(engine, connectors=routes(settings), acks=AckSettings(limits=limits))
    with engine.connect() as conn:
        acks = conn.execute(select(Outbox.case_id).where(Outbox.kind == "ack")).scalars().all()
        states = {
            row.id: (row.ack_state, row.ack_reason)
            for row in conn.execute(select(Case.id, Case.ack_state, Case.ack_reason))
        }
    queued = [case_id for case_id, (state, _) in states.items() if state == "queued"]
    limited = [c for c, (_, reason) in states.items() if reason == "rate limit: global"]
    assert len(states) >= 3, "the fake's mentions should open several cases"
    # Every new case was planned, in the transaction that opened it: none left unplanned.
    assert all(state is not None for state, _ in states.values())
    assert len(queued) == 1 and len(limited) >= 2
    assert acks == queued
    for case_id in limited:
        assert states[case_id] == ("withheld", "rate limit: global")
