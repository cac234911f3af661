"""A minimal, channel-neutral outbox: enqueue, claim atomically, record each attempt.

Written for the Twitter connector while the outbox of issue 4 was built on another branch;
it keeps DESIGN.md's promise with the existing `outbox` / `outbox_attempts` tables and no
schema change, so it can be swapped for that module (or merged into it) without migration:
- a row is claimed by one UPDATE (SQLite, under its single writer lock) or with
  FOR UPDATE SKIP LOCKED (PostgreSQL), so no row is handed out twice;
- every attempt is recorded with its outcome and error;
- retries back off exponentially with jitter, up to a maximum, then fail;
- a row found "sending" by the channel's single poller (see poller_lock) belonged to a
  process that died mid-send: for channels without an idempotency key it becomes
  "unknown", never silently re-sent.
An acknowledgement's outcome is also written to its case (ack_state, ack_reason) and to
the audit log, because "acknowledgement sent or withheld" is a system decision on a case.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, select, update

from inbox import audit
from inbox.db import is_sqlite, write
from inbox.models import Case, MessageRef, Outbox, OutboxAttempt, utcnow
from inbox.outbox import enqueue as enqueue  # one way to queue a row, for every channel

MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class OutboxItem:
    id: int
    case_id: int | None
    kind: str
    channel: str
    recipient: str
    subject: str
    body: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


def backoff_seconds(
    attempts: int, *, base: float = 30.0, cap: float = 3600.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with +-20% jitter: 30 s, 60 s, 2 min ... capped at an hour."""
    delay = min(base * 2.0 ** min(max(attempts - 1, 0), 30), cap)
    return delay * (rng or random).uniform(0.8, 1.2)


def claim(engine: Engine, channel: str, worker: str) -> OutboxItem | None:
    """The next due row of `channel`, now "sending" and ours; None when nothing is due."""
    now = utcnow()
    due = and_(Outbox.channel == channel, Outbox.state == "queued", Outbox.next_attempt_at <= now)
    # Look before taking the write lock: on SQLite every write transaction, even an empty
    # one, briefly holds up intake, and most polls find nothing to send.
    with engine.connect() as conn:
        if conn.execute(select(Outbox.id).where(due).limit(1)).first() is None:
            return None
    with write(engine) as conn:
        if is_sqlite(conn):
            oldest = select(Outbox.id).where(due).order_by(Outbox.next_attempt_at, Outbox.id)
            row = conn.execute(
                update(Outbox)
                .where(Outbox.id == oldest.limit(1).scalar_subquery(), Outbox.state == "queued")
                .values(state="sending", claimed_by=worker, attempts=Outbox.attempts + 1)
                .returning(*Outbox.__table__.c)
            ).one_or_none()
        else:
            found = conn.execute(
                select(Outbox.id)
                .where(due)
                .order_by(Outbox.next_attempt_at, Outbox.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).scalar_one_or_none()
            if found is None:
                return None
            row = conn.execute(
                update(Outbox)
                .where(Outbox.id == found)
                .values(state="sending", claimed_by=worker, attempts=Outbox.attempts + 1)
                .returning(*Outbox.__table__.c)
            ).one()
        return None if row is None else _item(row)


def _attempt(conn: Connection, item_id: int, outcome: str, error: str | None) -> None:
    conn.execute(
        insert(OutboxAttempt).values(outbox_id=item_id, at=utcnow(), outcome=outcome, error=error)
    )


def _ack_outcome(
    conn: Connection, item_id: int, state: str, reason: str | None, details: dict[str, Any]
) -> None:
    row = conn.execute(select(Outbox.kind, Outbox.case_id).where(Outbox.id == item_id)).one()
    if row.kind != "ack" or row.case_id is None:
        return
    conn.execute(
        update(Case).where(Case.id == row.case_id).values(ack_state=state, ack_reason=reason)
    )
    audit.append(
        conn,
        actor="system",
        action=f"ack.{state}",
        case_id=row.case_id,
        after={"outbox_id": item_id, "reason": reason, **details},
    )


def record_sent(
    engine: Engine,
    item_id: int,
    provider_id: str | None,
    *,
    note: str | None = None,
    refs: Sequence[str] = (),
) -> None:
    """Mark a row sent. `refs` (the platform ids of what was posted) join its case's thread
    refs, so a customer's answer to our reply threads into the case."""
    with write(engine) as conn:
        now = utcnow()
        conn.execute(
            update(Outbox)
            .where(Outbox.id == item_id)
            .values(state="sent", provider_id=provider_id, sent_at=now, last_error=note)
        )
        _attempt(conn, item_id, "sent", note)
        case_id = conn.execute(select(Outbox.case_id).where(Outbox.id == item_id)).scalar_one()
        if case_id is not None and refs:
            conn.execute(
                insert(MessageRef),
                [{"ref": r, "case_id": case_id, "message_id": None} for r in refs],
            )
        _ack_outcome(conn, item_id, "sent", note, {"provider_id": provider_id})


def record_retry(engine: Engine, item_id: int, error: str, at: datetime) -> None:
    with write(engine) as conn:
        conn.execute(
            update(Outbox)
            .where(Outbox.id == item_id)
            .values(state="queued", next_attempt_at=at, last_error=error, claimed_by=None)
        )
        _attempt(conn, item_id, "retry", error)


def release(engine: Engine, item_id: int, error: str, at: datetime) -> None:
    """Give a claimed row back without counting an attempt: it was never tried (we paused)."""
    with write(engine) as conn:
        conn.execute(
            update(Outbox)
            .where(Outbox.id == item_id)
            .values(
                state="queued",
                next_attempt_at=at,
                last_error=error,
                claimed_by=None,
                attempts=Outbox.attempts - 1,
            )
        )


def record_failed(engine: Engine, item_id: int, error: str) -> None:
    with write(engine) as conn:
        conn.execute(
            update(Outbox).where(Outbox.id == item_id).values(state="failed", last_error=error)
        )
        _attempt(conn, item_id, "failed", error)
        _ack_outcome(conn, item_id, "failed", error, {})


def record_unknown(engine: Engine, item_id: int, error: str) -> None:
    with write(engine) as conn:
        conn.execute(
            update(Outbox).where(Outbox.id == item_id).values(state="unknown", last_error=error)
        )
        _attempt(conn, item_id, "unknown", error)
        _ack_outcome(conn, item_id, "unknown", error, {})


def orphans_to_unknown(engine: Engine, channel: str, reason: str) -> list[int]:
    """Rows of `channel` left "sending" by a dead process become "unknown".

    Only the holder of the channel's poller lock may call this: it proves no live process
    is in the middle of sending them.
    """
    with write(engine) as conn:
        ids = list(
            conn.execute(
                select(Outbox.id).where(Outbox.channel == channel, Outbox.state == "sending")
            ).scalars()
        )
        for item_id in ids:
            conn.execute(
                update(Outbox)
                .where(Outbox.id == item_id)
                .values(state="unknown", last_error=reason)
            )
            _attempt(conn, item_id, "unknown", reason)
            _ack_outcome(conn, item_id, "unknown", reason, {})
        return ids


def unknown_rows(engine: Engine, channel: str, limit: int = 50) -> list[OutboxItem]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(*Outbox.__table__.c)
            .where(Outbox.channel == channel, Outbox.state == "unknown")
            .order_by(Outbox.id)
            .limit(limit)
        ).all()
    return [_item(r) for r in rows]


def _item(row: Any) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        case_id=row.case_id,
        kind=row.kind,
        channel=row.channel,
        recipient=row.recipient,
        subject=row.subject,
        body=row.body,
        payload=dict(row.payload or {}),
        attempts=row.attempts,
        created_at=row.created_at,
    )


def note_checked(engine: Engine, item_id: int, note: str) -> None:
    """Remember that an unknown row was looked for at the provider and not found."""
    with write(engine) as conn:
        payload = conn.execute(select(Outbox.payload).where(Outbox.id == item_id)).scalar_one()
        conn.execute(
            update(Outbox)
            .where(Outbox.id == item_id)
            .values(
                payload={**(payload or {}), "checked_at": utcnow().isoformat()}, last_error=note
            )
        )


def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
