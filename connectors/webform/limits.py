"""The form's and the status page's rate limits: token buckets in the store.

The same table, arithmetic and code as the acknowledgements' (inbox.models.AckBucket,
normalizer.ack_limits `take_buckets`), under keys of their own (`webform:...`), so every
instance draws on the same buckets. A post takes from its client address's bucket and the global
one, all or none. Posts without a proof of work draw on stricter buckets of their own.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from connectors.webform.settings import WebformSettings
from inbox.db import read, write
from inbox.models import AckBucket
from normalizer.ack_limits import take_buckets
from normalizer.acks import Bucket, refill
from normalizer.intake import commit_batches

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
    """`take` in the caller's transaction (the intake's admission check, the grouped taker)."""
    return take_buckets(conn, buckets, now)


def level(engine: Engine, bucket: Bucket, now: datetime) -> float:
    """The bucket's level now (full when never drawn on): what the difficulty reads."""
    with read(engine) as conn:
        row = conn.execute(
            select(AckBucket.tokens, AckBucket.updated_at).where(AckBucket.key == bucket.key)
        ).one_or_none()
    return float(bucket.burst) if row is None else refill(row.tokens, row.updated_at, now, bucket)


class BucketTaker:
    """`await take(buckets, now)` from asyncio handlers, grouped: whatever arrives while one
    transaction commits is taken in the next one, in arrival order, so under load one commit
    (one fsync on SQLite) covers many posts instead of one each. Each take still sees the
    ones before it: they run one after the other in the same transaction."""

    def __init__(self, engine: Engine, *, max_batch: int = 256) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="webform-buckets", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def take(self, buckets: list[Bucket], now: datetime) -> str | None:
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()
        self._queue.put([(buckets, now, future, loop)])
        return await future

    def _run(self) -> None:
        commit_batches(self._queue, self.max_batch, self._commit)

    def _commit(self, batch: list[_Job]) -> None:
        outcomes: list[str | BaseException | None]
        try:
            with write(self.engine) as conn:
                outcomes = [take_in(conn, buckets, now) for buckets, now, _, _ in batch]
        except Exception as exc:  # not taken: each caller must know (a 503 from the handler)
            outcomes = [exc] * len(batch)
        for (_, _, future, loop), outcome in zip(batch, outcomes, strict=True):
            loop.call_soon_threadsafe(_settle, future, outcome)


_Job = tuple[list[Bucket], datetime, "asyncio.Future[str | None]", asyncio.AbstractEventLoop]


def _settle(future: asyncio.Future[str | None], outcome: str | BaseException | None) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
