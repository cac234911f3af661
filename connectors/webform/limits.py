"""The form's and the status page's rate limits: token buckets in the store.

The same table and arithmetic as the acknowledgements' (inbox.models.AckBucket,
normalizer.acks `take_tokens`), under keys of their own (`webform:...`), so every instance
draws on the same buckets. A post takes from its client address's bucket and the global
one, all or none. Posts without a proof of work draw on stricter buckets of their own.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Engine, select, update

from connectors.webform.settings import WebformSettings
from inbox.db import insert_ignore, read, write
from inbox.models import AckBucket
from normalizer.acks import Bucket, refill, take_tokens

REASON = "rate limit"


def form_buckets(settings: WebformSettings, address: str, js: bool) -> list[Bucket]:
    """The buckets one form post draws on: its address's, then the global one."""
    path = "js" if js else "nojs"
    if js:
        mine = (settings.per_address_burst, settings.per_address_per_hour)
        every = (settings.global_burst, settings.global_per_hour)
    else:
        mine = (settings.nojs_per_address_burst, settings.nojs_per_address_per_hour)
        every = (settings.nojs_global_burst, settings.nojs_global_per_hour)
    return [
        Bucket(f"webform:{path}:address:{address}"[:400], mine[0], mine[1], "address"),
        Bucket(f"webform:{path}:global", every[0], every[1], "global"),
    ]


def global_bucket(settings: WebformSettings) -> Bucket:
    return form_buckets(settings, "", True)[1]


def status_buckets(settings: WebformSettings, address: str) -> list[Bucket]:
    return [
        Bucket(
            f"webform:status:address:{address}"[:400],
            settings.status_per_address_burst,
            settings.status_per_address_per_hour,
            "address",
        )
    ]


def take(engine: Engine, buckets: list[Bucket], now: datetime) -> str | None:
    """A token from each bucket, or the name of the empty one (and none is taken)."""
    with write(engine) as conn:
        return take_in(conn, buckets, now)


def take_in(conn: Connection, buckets: list[Bucket], now: datetime) -> str | None:
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


def level(engine: Engine, bucket: Bucket, now: datetime) -> float:
    """The bucket's level now (full when never drawn on): what the difficulty reads."""
    with read(engine) as conn:
        row = conn.execute(
            select(AckBucket.tokens, AckBucket.updated_at).where(AckBucket.key == bucket.key)
        ).one_or_none()
    return float(bucket.burst) if row is None else refill(row.tokens, row.updated_at, now, bucket)
