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
        select(CaseTurn.id, CaseTurn.seq, CaseTurn.due_at)
        .where(
            CaseTurn.case_id == case_id,
            CaseTurn.responded_at.is_(None),
            CaseTurn.closed_at.is_(None),
        )
        .order_by(CaseTurn.seq.desc())
        .limit(1)
    ).first()
    return OpenTurn(row.id, row.seq, row.due_at) if row is not None else None


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
