"""Acknowledgement token buckets, taken in the transaction that decides an acknowledgement.

The buckets' arithmetic is pure (normalizer/acks.py: `ack_buckets`, `take_tokens`); this is
its one edge to the store (`take_buckets`, which the contact form's limits use too). The one
acknowledgement planner (normalizer/ack_plan.py) calls it for every channel, so the limits
hold on every channel.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from inbox.db import insert_ignore
from inbox.models import AckBucket
from normalizer.acks import AckLimits, Bucket, ack_buckets, take_tokens


def take_ack_tokens(
    conn: Connection, channel: str, recipient: str, limits: AckLimits, now: datetime
) -> str | None:
    """Take a token from each of the acknowledgement's buckets, or say which is empty.

    Stored, not kept in memory, so every instance draws on the same buckets. All three
    buckets give a token, or none does.
    """
    return take_buckets(conn, ack_buckets(channel, recipient, limits), now)


def take_buckets(conn: Connection, buckets: list[Bucket], now: datetime) -> str | None:
    """A token from each bucket in `conn`'s transaction, or the reason of the empty one (and
    none is taken): the one edge to the store of the buckets' arithmetic, for the
    acknowledgements and for anything else rate-limited the same way (the contact form).

    FOR UPDATE orders concurrent takers on PostgreSQL, SQLite's single writer orders them
    there. A refusal writes nothing: a bucket's level is a function of its stored level and
    the time since (`refill`), so, the clock running forward, storing the refilled level
    would change no later answer, and a flood of refusals costs no writes.
    """
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
    if reason is None:
        for key, level in levels.items():
            conn.execute(
                update(AckBucket).where(AckBucket.key == key).values(tokens=level, updated_at=now)
            )
    return reason
