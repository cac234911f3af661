"""The outbox in the store: queue, claim, record attempts, recover after a crash, read back.

Channel-neutral: every connector that sends (email, SMS, Twitter and Reddit) drains its
channel's rows with these calls, so each keeps the outbox's promise the same way
(docs/architecture/promises.md, promise 7):
- a row is claimed atomically (one conditional UPDATE under SQLite's single writer; FOR
  UPDATE SKIP LOCKED on PostgreSQL), so two senders never take the same row, and the claim
  is a lease (`claimed_until`);
- every real attempt is counted once (when its outcome is recorded) and logged with its
  outcome and error, in the transaction that moves the row;
- a row left "sending" by a process that died is recovered once its lease ends: resent when
  the channel has an id receivers deduplicate on (email's Message-ID), otherwise marked
  "unknown", to be looked up at the provider (`unknown_rows`, `resolve_unknown`) or left
  for an agent to decide; never sent again blindly;
- an acknowledgement's outcome (sent, failed, unknown) is written to its case (ack_state,
  ack_reason) and to the audit log, the same way for every channel, because "acknowledgement
  sent or withheld" is a system decision on a case.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, func, insert, or_, select, update
from sqlalchemy.orm import aliased

from inbox import audit
from inbox.channels import MESSAGE_ID_CHANNELS
from inbox.db import is_sqlite, write
from inbox.models import Blob, Case, MessageRef, Outbox, OutboxAttempt, utcnow
from inbox.references import bare_message_id

STATES = ("queued", "sending", "sent", "delivered", "failed", "undelivered", "unknown")
# States after which we never send a row again on our own.
FINAL_STATES = frozenset({"sent", "delivered", "failed", "undelivered"})


def enqueue(
    conn: Connection,
    *,
    case_id: int | None,
    kind: str,
    channel: str,
    recipient: str,
    subject: str = "",
    body: str = "",
    payload: dict[str, Any] | None = None,
    created_by: str = "system",
) -> int:
    """Queue one outbound message inside the caller's transaction."""
    now = utcnow()
    return int(
        conn.execute(
            insert(Outbox)
            .values(
                case_id=case_id,
                kind=kind,
                channel=channel,
                recipient=recipient,
                subject=subject,
                body=body,
                payload=payload or {},
                state="queued",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                created_by=created_by,
            )
            .returning(Outbox.id)
        ).scalar_one()
    )


def last_sent_to(conn: Connection, channel: str, recipient: str, kind: str) -> datetime | None:
    """When we last queued a `kind` message for this recipient on this channel."""
    value: datetime | None = conn.execute(
        select(func.max(Outbox.created_at)).where(
            Outbox.channel == channel, Outbox.recipient == recipient, Outbox.kind == kind
        )
    ).scalar_one_or_none()
    return value


def backoff(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry).

    Exponential and capped, with "equal jitter": half the delay is fixed so retries never
    bunch up at zero, half random so many rows (or pollers) failing together don't retry
    together. The one retry curve of every sender, and of the pollers that back off too.
    """
    # The exponent is bounded so that a huge attempt number cannot overflow a float.
    ceiling: float = min(cap, base * 2.0 ** min(max(0, attempt - 1), 64))
    return ceiling / 2 + rand() * ceiling / 2


def has_work(engine: Engine, channel: str, now: datetime | None = None) -> bool:
    """Whether `channel` has a due row or one left "sending" past its lease.

    Asked before any write transaction: on SQLite a write transaction, even an empty one,
    holds the one write lock that intake needs, and most polls find nothing to do.
    """
    now = now or utcnow()
    with engine.connect() as conn:
        found = conn.execute(
            select(Outbox.id)
            .where(
                Outbox.channel == channel,
                or_(
                    and_(Outbox.state == "queued", Outbox.next_attempt_at <= now),
                    and_(Outbox.state == "sending", Outbox.claimed_until < now),
                ),
            )
            .limit(1)
        ).first()
        conn.rollback()
    return found is not None


@dataclass(frozen=True)
class OutFile:
    """A file that goes out with a row (an agent's attachment), its bytes read at claim."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Claimed:
    """A row handed to one sender, with what it needs to build the message."""

    id: int
    case_id: int | None
    kind: str
    channel: str
    recipient: str
    subject: str
    body: str
    payload: dict[str, Any]
    attempts: int  # attempts made before this one (the claim does not count one)
    message_id_header: str | None
    created_at: datetime
    case_reference: str | None
    case_token: str | None
    # The row's attachments (payload "attachments", each a blob), in the order given.
    files: tuple[OutFile, ...] = ()


def _files(conn: Connection, payload: dict[str, Any]) -> tuple[OutFile, ...]:
    listed = [a for a in payload.get("attachments") or [] if isinstance(a, dict)]
    if not listed:
        return ()
    shas = [str(a.get("sha256")) for a in listed]
    data = {
        r.sha256: bytes(r.data)
        for r in conn.execute(select(Blob.sha256, Blob.data).where(Blob.sha256.in_(shas)))
    }
    return tuple(
        OutFile(str(a.get("filename") or "attachment"), str(a.get("content_type")), data[sha])
        for a, sha in zip(listed, shas, strict=True)
        if sha in data
    )


def _claimed(box: Any, header: str | None, files: tuple[OutFile, ...] = ()) -> Claimed:
    """A Claimed from a row of the outbox joined with its case's reference and token."""
    return Claimed(
        id=box.id,
        case_id=box.case_id,
        kind=box.kind,
        channel=box.channel,
        recipient=box.recipient,
        subject=box.subject,
        body=box.body,
        payload=dict(box.payload or {}),
        attempts=box.attempts,
        message_id_header=header,
        created_at=box.created_at,
        case_reference=box.reference,
        case_token=box.token,
        files=files,
    )


def in_turn(now: datetime) -> ColumnElement[bool]:
    """True for an outbox row no earlier row of its case on its channel goes before.

    Without it, two drainers (two instances on PostgreSQL, each with a batch) could send a
    case's two replies at once and the customer read the second first. An earlier row
    being sent, or due, holds the later ones back until it is done; one waiting out its
    backoff does not, or a message that keeps failing would hold its case's others for
    hours. Rows of no case (alerts, digests) are never held.
    """
    earlier = aliased(Outbox)
    return ~(
        select(earlier.id)
        .where(
            earlier.case_id == Outbox.case_id,
            earlier.channel == Outbox.channel,
            earlier.id < Outbox.id,
            or_(
                earlier.state == "sending",
                and_(earlier.state == "queued", earlier.next_attempt_at <= now),
            ),
        )
        .exists()
    )


def claim(
    engine: Engine,
    channel: str,
    worker: str,
    *,
    limit: int,
    lease: timedelta,
    assign_id: Callable[[int, str | None, str | None], str | None] | None = None,
    now: datetime | None = None,
) -> list[Claimed]:
    """Move up to `limit` due rows of `channel` from queued to sending, for `worker` alone.

    A case's messages on a channel go in the order they were queued: a row is not taken
    while an earlier one of its case on its channel is being sent or is due (`in_turn`).

    `assign_id(row_id, reference, token)` gives a row that has none its provider-visible id
    (email's Message-ID) in this same transaction, before anything is sent, so a resend after
    a crash carries the very same id.
    """
    now = now or utcnow()
    due = and_(
        Outbox.channel == channel,
        Outbox.state == "queued",
        Outbox.next_attempt_at <= now,
        in_turn(now),
    )
    values = {"state": "sending", "claimed_by": worker, "claimed_until": now + lease}
    with write(engine) as conn:
        if is_sqlite(conn):
            # One UPDATE under SQLite's single writer lock is atomic.
            ids = list(
                conn.execute(
                    update(Outbox)
                    .where(
                        Outbox.id.in_(
                            select(Outbox.id)
                            .where(due)
                            .order_by(Outbox.next_attempt_at, Outbox.id)
                            .limit(limit)
                            .scalar_subquery()
                        )
                    )
                    .values(**values)
                    .returning(Outbox.id)
                ).scalars()
            )
        else:
            ids = list(
                conn.execute(
                    select(Outbox.id)
                    .where(due)
                    .order_by(Outbox.next_attempt_at, Outbox.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if ids:
                conn.execute(update(Outbox).where(Outbox.id.in_(ids)).values(**values))
        if not ids:
            return []
        rows = list(
            conn.execute(
                select(*Outbox.__table__.c, Case.reference, Case.token)
                .join(Case, Case.id == Outbox.case_id, isouter=True)
                .where(Outbox.id.in_(ids))
                .order_by(Outbox.id)
            )
        )
        claimed: list[Claimed] = []
        for box in rows:
            header = box.message_id_header
            if header is None and assign_id is not None:
                header = assign_id(box.id, box.reference, box.token)
                conn.execute(
                    update(Outbox).where(Outbox.id == box.id).values(message_id_header=header)
                )
            claimed.append(_claimed(box, header, _files(conn, dict(box.payload or {}))))
        return claimed


@dataclass(frozen=True)
class Result:
    """What one attempt came to, as the connector classified it."""

    outcome: str  # sent | retry | failed | unknown
    # Why it failed; for "sent", an optional note (for example how an unknown was resolved).
    error: str | None = None
    next_attempt_at: datetime | None = None  # for retry
    provider_id: str | None = None
    # Platform ids of what was posted (a tweet, a Reddit comment): they join the case's thread
    # refs, so the customer's answer to our message threads into the case.
    refs: Sequence[str] = ()


_ROW_STATE = {"sent": "sent", "retry": "queued", "failed": "failed", "unknown": "unknown"}
# What the case shows about its acknowledgement once the outbox knows.
_ACK_STATE = {"sent": "sent", "failed": "failed", "unknown": "unknown"}
_ACK_REASON_MAX = 256  # the width of cases.ack_reason


def _log_attempt(
    conn: Connection, outbox_id: int, outcome: str, error: str | None, now: datetime
) -> None:
    conn.execute(
        insert(OutboxAttempt).values(outbox_id=outbox_id, at=now, outcome=outcome, error=error)
    )


def _add_refs(conn: Connection, case_id: int | None, refs: Sequence[str]) -> None:
    if case_id is not None and refs:
        conn.execute(
            insert(MessageRef), [{"ref": r, "case_id": case_id, "message_id": None} for r in refs]
        )


# The audit actions of planning an acknowledgement, the same for every channel: the manager
# report reads each case's promised time (after.eta_at) from ACK_QUEUED, so a channel that
# named it differently, or skipped it, dropped out of "promise kept" (Twitter and Reddit did).
ACK_QUEUED = "acknowledgement.queued"
ACK_WITHHELD = "acknowledgement.withheld"


def audit_ack_queued(
    conn: Connection,
    case_id: int,
    *,
    outbox_id: int,
    channel: str,
    recipient: str,
    eta_at: datetime,
    audit_head: tuple[int | None, str | None] | None = None,
    **details: Any,
) -> None:
    """Audit an acknowledgement queued, with the time it promises, in the caller's
    transaction (the one that queues it). The case keeps the first promise for the report."""
    conn.execute(
        update(Case).where(Case.id == case_id, Case.ack_eta_at.is_(None)).values(ack_eta_at=eta_at)
    )
    audit.append(
        conn,
        actor="system",
        action=ACK_QUEUED,
        case_id=case_id,
        after={
            "outbox_id": outbox_id,
            "channel": channel,
            "recipient": recipient,
            "eta_at": eta_at.isoformat(),
            **details,
        },
        head=audit_head,
    )


def audit_ack_withheld(
    conn: Connection,
    case_id: int,
    *,
    reason: str,
    audit_head: tuple[int | None, str | None] | None = None,
    **details: Any,
) -> None:
    """Audit why a new case gets no acknowledgement (a system decision on the case)."""
    audit.append(
        conn,
        actor="system",
        action=ACK_WITHHELD,
        case_id=case_id,
        after={"reason": reason, **details},
        head=audit_head,
    )


def _ack_outcome(
    conn: Connection,
    outbox_id: int,
    state: str,
    reason: str | None,
    provider_id: str | None = None,
) -> None:
    """Write an acknowledgement's outcome to its case and the audit log; other rows: nothing.

    One place for every channel, so the case page, the manager report and the audit log say
    the same thing whichever channel the acknowledgement went out on.
    """
    row = conn.execute(
        select(Outbox.kind, Outbox.case_id, Outbox.channel).where(Outbox.id == outbox_id)
    ).one()
    if row.kind != "ack" or row.case_id is None:
        return
    conn.execute(
        update(Case)
        .where(Case.id == row.case_id)
        .values(ack_state=state, ack_reason=reason[:_ACK_REASON_MAX] if reason else None)
    )
    audit.append(
        conn,
        actor="system",
        action=f"ack.{state}",
        case_id=row.case_id,
        after={
            "outbox_id": outbox_id,
            "channel": row.channel,
            "reason": reason,
            "provider_id": provider_id,
        },
    )


def _held_by(worker: str) -> ColumnElement[bool]:
    """A row `worker` claimed and is still sending (not taken over since)."""
    return and_(Outbox.state == "sending", Outbox.claimed_by == worker)


def _ours(outbox_id: int, worker: str) -> ColumnElement[bool]:
    return and_(Outbox.id == outbox_id, _held_by(worker))


def record(
    engine: Engine,
    row: Claimed,
    worker: str,
    result: Result,
    *,
    then: Callable[[Connection], None] | None = None,
) -> bool:
    """Record one attempt and move the row on, in one transaction.

    Counts the attempt, adds `result.refs` to the case's thread refs when sent, and writes an
    acknowledgement's outcome to its case and the audit log. `then(conn)` runs in the same
    transaction when the row was still ours (a channel's follow-up, such as queueing a
    private acknowledgement instead of a public one that failed), so a crash cannot keep
    one without the other.

    Returns False when the row was no longer ours (our lease ran out and it was recovered);
    the attempt is recorded all the same, since it happened.
    """
    now = utcnow()
    state = _ROW_STATE[result.outcome]
    values: dict[str, Any] = {
        "state": state,
        "attempts": Outbox.attempts + 1,
        "last_error": result.error,
        "claimed_by": None,
        "claimed_until": None,
    }
    if result.outcome == "retry":
        values["next_attempt_at"] = result.next_attempt_at or now
    if result.outcome == "sent":
        values["sent_at"] = now
    if result.provider_id:
        values["provider_id"] = result.provider_id
    with write(engine) as conn:
        _log_attempt(conn, row.id, result.outcome, result.error, now)
        mine = conn.execute(update(Outbox).where(_ours(row.id, worker)).values(**values)).rowcount
        if not mine:
            return False
        if state == "sent":
            _add_refs(conn, row.case_id, result.refs)
        if state in _ACK_STATE:
            _ack_outcome(conn, row.id, _ACK_STATE[state], result.error, result.provider_id)
        if then is not None:
            then(conn)
    return True


def renew(engine: Engine, rows: Sequence[Claimed], worker: str, until: datetime) -> set[int]:
    """Restart the sending lease of claimed rows still waiting their turn, in one statement;
    the ids still ours. A row missing from them is no longer ours (its lease ran out while
    the rows before it were sent, and another process took it over): it must not be sent
    here.

    A batch is claimed with one lease, so without this the last of its rows would have
    what the others' sends left of it: a sender bounded per row (X's wait for media
    processing, below the lease) would not be bounded per batch.
    """
    if not rows:
        return set()
    with write(engine) as conn:
        return set(
            conn.execute(
                update(Outbox)
                .where(Outbox.id.in_([r.id for r in rows]), _held_by(worker))
                .values(claimed_until=until)
                .returning(Outbox.id)
            ).scalars()
        )


def release(engine: Engine, row: Claimed, worker: str, reason: str, at: datetime) -> bool:
    """Give a claimed row back, due at `at`, without counting an attempt: it was never sent
    (the sender stopped, or paused before trying). False when the row was no longer ours."""
    with write(engine) as conn:
        return bool(
            conn.execute(
                update(Outbox)
                .where(_ours(row.id, worker))
                .values(
                    state="queued",
                    next_attempt_at=at,
                    last_error=reason,
                    claimed_by=None,
                    claimed_until=None,
                )
            ).rowcount
        )


def recover(
    engine: Engine,
    channel: str,
    *,
    resend: bool,
    sole_sender: bool = False,
    now: datetime | None = None,
) -> int:
    """Deal with rows left "sending" past their lease by a process that died mid-send.

    `resend` is for channels whose receivers drop a copy by its id (email: the same
    Message-ID goes out again, at least once). Elsewhere the provider may or may not have
    taken the message, so the row becomes "unknown": never sent again blindly.

    `sole_sender` is for a caller that is provably the channel's only sender, because it
    holds the channel's poller lock and has not started sending: every row still "sending"
    was then left by a process that died, so its lease need not run out first.

    The interrupted attempt is counted here, since the claim did not count it.
    """
    now = now or utcnow()
    stale = Outbox.state == "sending"
    if not sole_sender:
        stale = and_(stale, Outbox.claimed_until < now)
    if resend:
        error = "interrupted while sending; sent again with the same id"
        values: dict[str, Any] = {"state": "queued", "next_attempt_at": now}
    else:
        error = "interrupted while sending; the provider may or may not have it"
        values = {"state": "unknown"}
    moved = 0
    with write(engine) as conn:
        stuck = list(
            conn.execute(select(Outbox.id).where(Outbox.channel == channel, stale)).scalars()
        )
        for outbox_id in stuck:
            if not conn.execute(
                update(Outbox)
                .where(Outbox.id == outbox_id, stale)
                .values(
                    attempts=Outbox.attempts + 1,
                    last_error=error,
                    claimed_by=None,
                    claimed_until=None,
                    **values,
                )
            ).rowcount:
                continue
            moved += 1
            _log_attempt(conn, outbox_id, "unknown", error, now)
            if not resend:
                _ack_outcome(conn, outbox_id, "unknown", error)
    return moved


def unknown_rows(engine: Engine, channel: str, limit: int = 50) -> list[Claimed]:
    """Rows of `channel` whose outcome is unknown, oldest first, to look up at the provider."""
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                select(*Outbox.__table__.c, Case.reference, Case.token)
                .join(Case, Case.id == Outbox.case_id, isouter=True)
                .where(Outbox.channel == channel, Outbox.state == "unknown")
                .order_by(Outbox.id)
                .limit(limit)
            )
        )
    return [_claimed(box, box.message_id_header) for box in rows]


def resolve_unknown(
    engine: Engine,
    outbox_id: int,
    *,
    found: bool,
    provider_id: str | None = None,
    refs: Sequence[str] = (),
    note: str | None = None,
) -> bool:
    """An unknown row after its connector looked for it at the provider.

    Found: it was sent (no attempt is counted; the one that sent it was counted already),
    with its thread refs and, for an acknowledgement, the outcome on the case and in the
    audit log. Not found: queued to be sent now. False when the row was no longer unknown.
    """
    now = utcnow()
    if found:
        note = note or "found at the provider after an unknown outcome"
        values: dict[str, Any] = {
            "state": "sent",
            "provider_id": provider_id,
            "sent_at": now,
            "last_error": note,
        }
        outcome = "sent"
    else:
        note = note or "not found at the provider: sending again"
        values = {"state": "queued", "next_attempt_at": now, "last_error": note}
        outcome = "retry"
    with write(engine) as conn:
        if not conn.execute(
            update(Outbox).where(Outbox.id == outbox_id, Outbox.state == "unknown").values(**values)
        ).rowcount:
            return False
        _log_attempt(conn, outbox_id, outcome, note, now)
        if found:
            case_id = conn.execute(
                select(Outbox.case_id).where(Outbox.id == outbox_id)
            ).scalar_one()
            _add_refs(conn, case_id, refs)
            _ack_outcome(conn, outbox_id, "sent", note, provider_id)
    return True


def note_checked(engine: Engine, outbox_id: int, note: str) -> None:
    """Remember that an unknown row was looked for at the provider and not found.

    The row stays unknown (for a channel that leaves such rows to an agent rather than
    risk posting twice); `payload.checked_at` tells its connector not to look again.
    """
    with write(engine) as conn:
        payload = conn.execute(select(Outbox.payload).where(Outbox.id == outbox_id)).scalar_one()
        conn.execute(
            update(Outbox)
            .where(Outbox.id == outbox_id)
            .values(
                payload={**(payload or {}), "checked_at": utcnow().isoformat()}, last_error=note
            )
        )


def requeue(engine: Engine, outbox_id: int) -> bool:
    """Send a failed or unknown row again (an operator's or agent's decision)."""
    with write(engine) as conn:
        return bool(
            conn.execute(
                update(Outbox)
                .where(Outbox.id == outbox_id, Outbox.state.in_(("failed", "unknown")))
                .values(state="queued", next_attempt_at=utcnow(), attempts=0, last_error=None)
            ).rowcount
        )


def mark(
    engine: Engine,
    channel: str,
    state: str,
    *,
    provider_id: str | None = None,
    message_id_header: str | None = None,
    error: str | None = None,
) -> int:
    """A provider's later word on a sent row (delivered, undelivered), found by its id."""
    if state not in ("delivered", "undelivered"):
        raise ValueError(f"a provider can report delivered or undelivered, not {state!r}")
    if provider_id is None and message_id_header is None:
        return 0
    condition = (
        Outbox.provider_id == provider_id
        if provider_id is not None
        else Outbox.message_id_header == bare_message_id(message_id_header or "")
    )
    with write(engine) as conn:
        return int(
            conn.execute(
                update(Outbox)
                .where(Outbox.channel == channel, condition, Outbox.state.in_(("sent", "unknown")))
                .values(state=state, last_error=error)
            ).rowcount
        )


def report_delivery(
    conn: Connection, *, message_id_header: str, outcome: str, reason: str
) -> list[int]:
    """What a delivery status notification said about our email with this Message-ID.

    In the caller's transaction (the normalizer files the DSN itself in the same one).
    "undelivered" and "delivered" move sent (or unknown) rows on; "delayed" only notes the
    reason, since the remote MTA is still trying. An acknowledgement's case shows the
    outcome, and every move is audited: an agent must see that the customer never heard back.
    """
    if outcome not in ("undelivered", "delivered", "delayed"):
        raise ValueError(f"a delivery report says undelivered, delivered or delayed: {outcome!r}")
    rows = list(
        conn.execute(
            select(Outbox.id, Outbox.kind, Outbox.case_id, Outbox.state).where(
                # A delivery status notification names the Message-ID of the mail it
                # reports on: only the rows of a channel that sends one can match.
                Outbox.channel.in_(sorted(MESSAGE_ID_CHANNELS)),
                Outbox.message_id_header == bare_message_id(message_id_header),
                Outbox.state.in_(("sent", "unknown", "delivered")),
            )
        )
    )
    moved: list[int] = []
    for row in rows:
        if outcome == "delayed" or row.state == outcome:
            conn.execute(update(Outbox).where(Outbox.id == row.id).values(last_error=reason))
            continue
        conn.execute(
            update(Outbox).where(Outbox.id == row.id).values(state=outcome, last_error=reason)
        )
        moved.append(row.id)
        if row.case_id is not None:
            record_report(conn, row, outcome, reason)
    return moved


def record_report(conn: Connection, row: Any, state: str, reason: str) -> None:
    """A provider's report moved outbox `row` (id, kind, case_id, its old state) to `state`:
    an acknowledgement's case shows it, and the move is audited, whichever channel reported
    it (a mail server's DSN, a WhatsApp status webhook)."""
    if row.kind == "ack":
        conn.execute(
            update(Case)
            .where(Case.id == row.case_id)
            .values(ack_state=state, ack_reason=reason[:256])
        )
    audit.append(
        conn,
        actor="system",
        action=f"{row.kind}.{state}",
        case_id=row.case_id,
        before={"outbox_id": row.id, "state": row.state},
        after={"outbox_id": row.id, "state": state, "reason": reason},
    )


# --- read side ---------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _summary(box: Any, reference: str | None) -> dict[str, Any]:
    return {
        "id": box.id,
        "channel": box.channel,
        "kind": box.kind,
        "recipient": box.recipient,
        "case": reference,
        "state": box.state,
        "attempts": box.attempts,
        "last_error": box.last_error,
        "subject": box.subject,
        "message_id": box.message_id_header,
        "provider_id": box.provider_id,
        "created_at": _iso(box.created_at),
        "next_attempt_at": _iso(box.next_attempt_at) if box.state == "queued" else None,
        "sent_at": _iso(box.sent_at),
    }


def list_rows(
    engine: Engine,
    *,
    states: Sequence[str] | None = None,
    channel: str | None = None,
    case_reference: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Outbox rows, newest first: what `parity outbox list --json` prints."""
    query = (
        select(*Outbox.__table__.c, Case.reference)
        .join(Case, Case.id == Outbox.case_id, isouter=True)
        .order_by(Outbox.id.desc())
    )
    if states:
        query = query.where(Outbox.state.in_(states))
    if channel:
        query = query.where(Outbox.channel == channel)
    if case_reference:
        query = query.where(Case.reference == case_reference)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [_summary(row, row.reference) for row in conn.execute(query)]


def counts(engine: Engine) -> dict[str, dict[str, Any]]:
    """Per channel: rows in each state, and when the oldest queued row was queued."""
    result: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for channel, state, number, oldest in conn.execute(
            select(Outbox.channel, Outbox.state, func.count(), func.min(Outbox.created_at))
            .group_by(Outbox.channel, Outbox.state)
            .order_by(Outbox.channel, Outbox.state)
        ):
            entry = result.setdefault(
                channel, {"states": dict.fromkeys(STATES, 0), "oldest_queued_at": None}
            )
            entry["states"][state] = int(number)
            if state == "queued":
                entry["oldest_queued_at"] = _iso(oldest)
    return result


def detail(engine: Engine, outbox_id: int) -> dict[str, Any] | None:
    """One row with its text and every attempt."""
    with engine.connect() as conn:
        row = conn.execute(
            select(*Outbox.__table__.c, Case.reference)
            .join(Case, Case.id == Outbox.case_id, isouter=True)
            .where(Outbox.id == outbox_id)
        ).one_or_none()
        if row is None:
            return None
        result = _summary(row, row.reference)
        result["body"] = row.body
        result["attempt_log"] = [
            {"at": _iso(a.at), "outcome": a.outcome, "error": a.error}
            for a in conn.execute(
                select(OutboxAttempt)
                .where(OutboxAttempt.outbox_id == outbox_id)
                .order_by(OutboxAttempt.id)
            )
        ]
        return result


def save_route(engine: Engine, outbox_id: int, payload: dict[str, Any]) -> None:
    """Keep the route a channel's sender chose for a row (how and where it is sent).

    Written before the first attempt, so that a check after a crash (was it sent?) looks
    where the send went.
    """
    with write(engine) as conn:
        conn.execute(update(Outbox).where(Outbox.id == outbox_id).values(payload=payload))
