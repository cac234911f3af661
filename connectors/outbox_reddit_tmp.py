"""A minimal, channel-neutral outbox claim and record, until the outbox of issue 4 is merged.

Temporary by name: the Reddit branch needed to deliver before the outbox framework landed.
Nothing here knows Reddit; the merge replaces these calls with the framework's own and
deletes this module. It keeps DESIGN.md's promise for channels without a provider-side id:
- a row is claimed atomically (one UPDATE under SQLite's writer lock, `FOR UPDATE SKIP
  LOCKED` on PostgreSQL), so two senders never hold one row;
- a claim is a lease: a row still "sending" after its lease belongs to a sender that died,
  and becomes "unknown", never "queued", because the provider may have accepted it;
- every attempt is recorded with its outcome and error.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, select, update

from inbox.db import is_sqlite, write
from inbox.models import Outbox, OutboxAttempt, utcnow
from inbox.outbox import enqueue as enqueue  # one way to queue a row, for every channel


@dataclass(frozen=True)
class Claimed:
    id: int
    case_id: int | None
    kind: str
    channel: str
    recipient: str
    subject: str
    body: str
    payload: dict[str, Any]
    attempts: int


def _claimed(row: Any) -> Claimed:
    return Claimed(
        id=row.id,
        case_id=row.case_id,
        kind=row.kind,
        channel=row.channel,
        recipient=row.recipient,
        subject=row.subject,
        body=row.body,
        payload=dict(row.payload or {}),
        attempts=row.attempts,
    )


def claim(
    engine: Engine, channel: str, worker: str, *, limit: int, lease_s: float
) -> list[Claimed]:
    """Lease up to `limit` due rows of `channel` to `worker`: state "sending", attempts + 1.

    While a row is "sending", `next_attempt_at` holds the end of its lease.
    """
    now = utcnow()
    due = and_(Outbox.channel == channel, Outbox.state == "queued", Outbox.next_attempt_at <= now)
    values = {
        "state": "sending",
        "claimed_by": worker,
        "attempts": Outbox.attempts + 1,
        "next_attempt_at": now + timedelta(seconds=lease_s),
    }
    with write(engine) as conn:
        if is_sqlite(conn):
            ids = select(Outbox.id).where(due).order_by(Outbox.next_attempt_at, Outbox.id)
            rows = conn.execute(
                update(Outbox)
                .where(Outbox.id.in_(ids.limit(limit).scalar_subquery()))
                .values(**values)
                .returning(*Outbox.__table__.c)
            ).all()
        else:
            locked = list(
                conn.execute(
                    select(Outbox.id)
                    .where(due)
                    .order_by(Outbox.next_attempt_at, Outbox.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            rows = (
                conn.execute(
                    update(Outbox)
                    .where(Outbox.id.in_(locked))
                    .values(**values)
                    .returning(*Outbox.__table__.c)
                ).all()
                if locked
                else []
            )
    return sorted((_claimed(r) for r in rows), key=lambda c: c.id)


def _attempt(conn: Connection, row_id: int, outcome: str, error: str | None) -> None:
    conn.execute(
        insert(OutboxAttempt).values(outbox_id=row_id, at=utcnow(), outcome=outcome, error=error)
    )


def _finish(
    engine: Engine, row_id: int, worker: str, outcome: str, error: str | None, **values: Any
) -> bool:
    """Move a row this worker holds out of "sending"; False when the lease was lost meanwhile."""
    with write(engine) as conn:
        changed = conn.execute(
            update(Outbox)
            .where(Outbox.id == row_id, Outbox.state == "sending", Outbox.claimed_by == worker)
            .values(**values)
        ).rowcount
        _attempt(conn, row_id, outcome, error)
        return bool(changed)


def record_sent(engine: Engine, row_id: int, worker: str, provider_id: str | None) -> bool:
    now = utcnow()
    return _finish(
        engine,
        row_id,
        worker,
        "sent",
        None,
        state="sent",
        provider_id=provider_id,
        sent_at=now,
        last_error=None,
    )


def record_retry(engine: Engine, row_id: int, worker: str, error: str, delay_s: float) -> bool:
    return _finish(
        engine,
        row_id,
        worker,
        "retry",
        error,
        state="queued",
        last_error=error,
        next_attempt_at=utcnow() + timedelta(seconds=delay_s),
    )


def record_failed(engine: Engine, row_id: int, worker: str, error: str) -> bool:
    return _finish(engine, row_id, worker, "failed", error, state="failed", last_error=error)


def record_unknown(engine: Engine, row_id: int, worker: str, error: str) -> bool:
    """The provider may or may not have it: check before any retry."""
    return _finish(engine, row_id, worker, "unknown", error, state="unknown", last_error=error)


def expire_leases(engine: Engine, channel: str, now: datetime | None = None) -> list[int]:
    """Rows found "sending" after their lease ran out: their sender crashed. -> "unknown"."""
    now = now or utcnow()
    error = "found sending after its lease ran out: the sender stopped mid-send"
    with write(engine) as conn:
        ids = list(
            conn.execute(
                update(Outbox)
                .where(
                    Outbox.channel == channel,
                    Outbox.state == "sending",
                    Outbox.next_attempt_at < now,
                )
                .values(state="unknown", last_error=error)
                .returning(Outbox.id)
            ).scalars()
        )
        for row_id in ids:
            _attempt(conn, row_id, "unknown", error)
    return sorted(ids)


def unknown_rows(engine: Engine, channel: str, limit: int = 20) -> list[Claimed]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Outbox)
            .where(Outbox.channel == channel, Outbox.state == "unknown")
            .order_by(Outbox.id)
            .limit(limit)
        ).all()
    return [_claimed(r) for r in rows]


def resolve_unknown(
    engine: Engine, row_id: int, *, provider_id: str | None = None, found: bool
) -> bool:
    """After checking with the provider: found -> "sent"; not there -> "queued" again."""
    with write(engine) as conn:
        if found:
            values: dict[str, Any] = {
                "state": "sent",
                "provider_id": provider_id,
                "sent_at": utcnow(),
                "last_error": None,
            }
            outcome, error = "sent", "found at the provider after an unknown outcome"
        else:
            values = {"state": "queued", "next_attempt_at": utcnow()}
            outcome, error = "retry", "not found at the provider: sending again"
        changed = conn.execute(
            update(Outbox).where(Outbox.id == row_id, Outbox.state == "unknown").values(**values)
        ).rowcount
        if changed:
            _attempt(conn, row_id, outcome, error)
        return bool(changed)


def backoff(attempts: int, *, base_s: float = 30.0, cap_s: float = 3600.0) -> float:
    """Exponential backoff with full jitter (so many rows failing together spread out)."""
    ceiling = min(cap_s, base_s * 2 ** max(0, attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


def attempts_of(engine: Engine, row_ids: Sequence[int]) -> dict[int, list[tuple[str, str | None]]]:
    """Each row's attempts in order: (outcome, error); for status views and tests."""
    result: dict[int, list[tuple[str, str | None]]] = {i: [] for i in row_ids}
    with engine.connect() as conn:
        for row in conn.execute(
            select(OutboxAttempt.outbox_id, OutboxAttempt.outcome, OutboxAttempt.error)
            .where(OutboxAttempt.outbox_id.in_(list(row_ids)))
            .order_by(OutboxAttempt.id)
        ):
            result[row.outbox_id].append((row.outcome, row.error))
    return result
