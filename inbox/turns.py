"""Turns: every wait for us gets its own due time, under the one SLA policy.

A turn starts with the inbound message that puts the ball in our court (the case's first
message, or a customer's follow-up after we answered) and ends with a person's reply. Turn 0
is the first response; later turns are next responses. The case's `due_at` is always the
due time of its open turn, so the queue (ordered by due_at) puts a waiting follow-up where
its own due time says, whatever channel it came on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, func, insert, select, update

from inbox.models import Case, CaseTurn

Action = Literal["start", "keep", "advance"]


@dataclass(frozen=True)
class OpenTurn:
    id: int
    seq: int
    due_at: datetime
    due_rule: str | None = None


def decide(open_turn: OpenTurn | None, candidate: datetime, *, reopened: bool) -> Action:
    """What an inbound message does to the case's turns.

    - no turn is waiting, or the case was resolved (a reopen): a new turn starts, due by
      the message's own due time;
    - a turn is already waiting: the customer writing again does not push the due time back
      (they would lose their place), but a content rule may bring it forward.
    """
    if open_turn is None or reopened:
        return "start"
    return "advance" if candidate < open_turn.due_at else "keep"


def open_turn(conn: Connection, case_id: int) -> OpenTurn | None:
    row = conn.execute(
        select(CaseTurn.id, CaseTurn.seq, CaseTurn.due_at, CaseTurn.due_rule)
        .where(
            CaseTurn.case_id == case_id,
            CaseTurn.responded_at.is_(None),
            CaseTurn.closed_at.is_(None),
        )
        .order_by(CaseTurn.seq.desc())
        .limit(1)
    ).first()
    return OpenTurn(row.id, row.seq, row.due_at, row.due_rule) if row is not None else None


def first_row(case_id: int, at: datetime, due: datetime, rule: str | None) -> dict[str, Any]:
    """Turn 0 of a case just opened, as a row (a batch writes many in one statement)."""
    return {"case_id": case_id, "seq": 0, "started_at": at, "due_at": due, "due_rule": rule}


def first(conn: Connection, case_id: int, at: datetime, due: datetime, rule: str | None) -> None:
    """Turn 0 of a case just opened (the case row carries the same due time)."""
    conn.execute(insert(CaseTurn).values(**first_row(case_id, at, due, rule)))


def inbound(
    conn: Connection,
    case_id: int,
    at: datetime,
    due: datetime,
    rule: str | None,
    *,
    reopened: bool,
) -> None:
    """A follow-up on an existing case (its row is locked by the caller): start or adjust the
    waiting turn and keep the case's due_at equal to it."""
    current = open_turn(conn, case_id)
    action = decide(current, due, reopened=reopened)
    if action == "keep":
        return
    if action == "advance":
        assert current is not None
        conn.execute(
            update(CaseTurn).where(CaseTurn.id == current.id).values(due_at=due, due_rule=rule)
        )
    else:
        if current is not None:  # resolved without a reply, now reopened: that wait ended
            conn.execute(update(CaseTurn).where(CaseTurn.id == current.id).values(closed_at=at))
        seq = conn.execute(
            select(func.coalesce(func.max(CaseTurn.seq) + 1, 0)).where(CaseTurn.case_id == case_id)
        ).scalar_one()
        conn.execute(
            insert(CaseTurn).values(
                case_id=case_id, seq=seq, started_at=at, due_at=due, due_rule=rule
            )
        )
    conn.execute(update(Case).where(Case.id == case_id).values(due_at=due, due_rule=rule))


def answered(conn: Connection, case_id: int, at: datetime, responder_id: int | None) -> None:
    """A person replied: the waiting turn, if any, is answered by them."""
    conn.execute(
        update(CaseTurn)
        .where(
            CaseTurn.case_id == case_id,
            CaseTurn.responded_at.is_(None),
            CaseTurn.closed_at.is_(None),
        )
        .values(responded_at=at, responder_id=responder_id)
    )


def fold_waits(
    into_wait: OpenTurn | None, source_wait: OpenTurn | None
) -> tuple[OpenTurn | None, OpenTurn | None]:
    """Of the two cases' waiting turns at a merge, (the one that keeps waiting, the one folded
    into it). The earlier due time wins, as the case row keeps the earlier promise; on a tie
    the surviving case's own turn does."""
    if into_wait is None or source_wait is None:
        return into_wait or source_wait, None
    if source_wait.due_at < into_wait.due_at:
        return source_wait, into_wait
    return into_wait, source_wait


def fold(
    conn: Connection,
    *,
    source_id: int,
    into_id: int,
    source_waits: bool,
    into_waits: bool,
    now: datetime,
) -> tuple[OpenTurn | None, dict[str, Any]]:
    """A merge moves the absorbed case's turns to the survivor, after its own (so its answered
    turns still count as next responses there), and leaves one turn waiting.

    `*_waits`: whether that case is still waiting for us (not resolved) once merged. A turn
    left open by a case that does not wait (resolved without a reply) ends now, as a reopen
    ends it. Returns the turn that waits (None: none does) and what an undo needs.
    """
    into_open, source_open = open_turn(conn, into_id), open_turn(conn, source_id)
    closed: list[int] = []
    if source_open is not None and not source_waits:
        closed.append(source_open.id)
        source_open = None
    if into_open is not None and not into_waits:
        closed.append(into_open.id)
        into_open = None
    waiting, folded = fold_waits(into_open, source_open)
    if folded is not None:
        closed.append(folded.id)
    if closed:
        conn.execute(update(CaseTurn).where(CaseTurn.id.in_(closed)).values(closed_at=now))
    base = conn.execute(
        select(func.coalesce(func.max(CaseTurn.seq) + 1, 0)).where(CaseTurn.case_id == into_id)
    ).scalar_one()
    moved: list[list[int]] = []
    for turn_id, seq in conn.execute(
        select(CaseTurn.id, CaseTurn.seq)
        .where(CaseTurn.case_id == source_id)
        .order_by(CaseTurn.seq)
    ).all():
        conn.execute(
            update(CaseTurn)
            .where(CaseTurn.id == turn_id)
            .values(case_id=into_id, seq=base + len(moved))
        )
        moved.append([turn_id, seq])
    return waiting, {"moved": moved, "closed": closed}


def unfold(conn: Connection, record: dict[str, Any], *, source_id: int, into_id: int) -> None:
    """Undo `fold`: the absorbed case's turns go back under their own numbers, and a wait the
    merge ended waits again, unless its case has another open turn by now (a follow-up
    since the merge started one)."""
    for turn_id, seq in record.get("moved", []):
        conn.execute(
            update(CaseTurn)
            .where(CaseTurn.id == turn_id, CaseTurn.case_id == into_id)
            .values(case_id=source_id, seq=seq)
        )
    for turn_id in record.get("closed", []):
        case_id = conn.execute(
            select(CaseTurn.case_id).where(CaseTurn.id == turn_id)
        ).scalar_one_or_none()
        if case_id is None or open_turn(conn, case_id) is not None:
            continue
        conn.execute(
            update(CaseTurn)
            .where(CaseTurn.id == turn_id, CaseTurn.responded_at.is_(None))
            .values(closed_at=None)
        )
