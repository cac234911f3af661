"""Acknowledgement token buckets, taken in the transaction that decides an acknowledgement.

The buckets' arithmetic is pure (normalizer/acks.py: `ack_buckets`, `take_tokens`); this is
its one edge to the store. The one acknowledgement planner (normalizer/ack_plan.py) calls
it for every channel, so the limits hold on every channel.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from inbox.db import insert_ignore
from inbox.models import AckBucket
from normalizer.acks import AckLimits, ack_buckets, take_tokens


def take_ack_tokens(
    conn: Connection, channel: str, recipient: str, limits: AckLimits, now: datetime
) -> str | None:
    """Take a token from each of the acknowledgement's buckets, or say which is empty.

    Stored, not kept in memory, so every instance draws on the same buckets; FOR UPDATE
    orders concurrent takers on PostgreSQL, SQLite's single writer orders them there. All
    three buckets give a token, or none does.
    """
    buckets = ack_buckets(channel, recipient, limits)
    conn.execute(
        insert_ignore(conn, AckBucket, ["key"]),
        [{"key": b.key, "tokens": float(b.burst), "updated_at": now} for b in buckets],
    )
    stored = {
        row.key: (row.tokens, row.updated_at)
        for row in conn.execute(
            select(AckBucket.key, AckBucket.tokens, AckBucket.updated_at)
            .where(AckBucket.key.in_([b.key for b in buckets]))
            .with_for_update()
        )
    }
    reason, levels = take_tokens(buckets, stored, now)
    for key, level in levels.items():
        conn.execute(
            update(AckBucket).where(AckBucket.key == key).values(tokens=level, updated_at=now)
        )
    return reason
