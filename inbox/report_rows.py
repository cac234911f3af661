"""The report's read side: the cases of a period as `CaseRow`s, and nothing else.

Two statements: the cases (with the visibility of each case's first inbound message) and the
ETA every acknowledgement promised, which the normalizer records in the audit log's
`acknowledgement.queued` row (after.eta_at) in the transaction that queues it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from inbox.models import AuditLog, Case, CaseTurn, Message, Team, User
from inbox.outbox import ACK_QUEUED
from inbox.report import CaseRow, Turn

ACK_ACTION = ACK_QUEUED  # written by every channel through inbox.outbox


def fetch(
    conn: Connection, since: datetime, until: datetime, *, channel: str | None = None
) -> list[CaseRow]:
    """The cases first heard from in [since, until), of one channel if given (a drill-down
    into a channel's figure reads that channel's cases, not the whole period's)."""
    period = (Case.first_inbound_at >= since) & (Case.first_inbound_at < until)
    if channel is not None:
        period = period & (Case.channel == channel)
    # Each case's first inbound message: one grouped pass over the period's messages, which
    # both databases hash-join; a per-case correlated subquery cost a lookup per case.
    first_ids = (
        select(Message.case_id, func.min(Message.id).label("first_id"))
        .join(Case, Case.id == Message.case_id)
        .where(Message.direction == "inbound", period)
        .group_by(Message.case_id)
        .subquery()
    )
    first_message = Message.__table__.alias("first_message")
    etas: dict[int, datetime] = {}
    promised = conn.execute(
        select(AuditLog.case_id, AuditLog.after)
        .join(Case, Case.id == AuditLog.case_id)
        .where(AuditLog.action == ACK_ACTION, period)
        .order_by(AuditLog.id)
    )
    for case_id, after in promised:
        value = (after or {}).get("eta_at")
        if case_id is not None and isinstance(value, str) and case_id not in etas:
            etas[case_id] = datetime.fromisoformat(value.replace("Z", "+00:00"))
    turns = _turns(conn, period)
    rows = conn.execute(
        select(
            Case.id,
            Case.reference,
            Case.channel,
            first_message.c.visibility,
            Case.status,
            Case.first_inbound_at,
            Case.first_response_at,
            Case.resolved_at,
            Case.due_at,
            Case.followups,
            Case.ack_state,
            Case.reopens,
            Case.assignee_id,
            Case.language,
            Case.team_id,
        )
        .outerjoin(first_ids, first_ids.c.case_id == Case.id)
        .outerjoin(first_message, first_message.c.id == first_ids.c.first_id)
        .where(period)
        .order_by(Case.id)
    )
    names = {u.id: u.name for u in conn.execute(select(User.id, User.name))}
    team_names = {t.id: t.name for t in conn.execute(select(Team.id, Team.name))}
    out = []
    for r in rows:
        first, later = turns.get(r.id, (None, ()))
        # The first response is judged against turn 0's due time: the case's own due_at
        # has moved on to the open follow-up's. Cases from before turns have only due_at.
        owner = r.assignee_id or (first.responder_id if first is not None else None)
        out.append(
            CaseRow(
                id=r.id,
                reference=r.reference or f"#{r.id}",
                channel=r.channel,
                visibility=r.visibility or "private",
                status=r.status,
                first_inbound_at=r.first_inbound_at,
                first_response_at=r.first_response_at,
                resolved_at=r.resolved_at,
                due_at=first.due_at if first is not None else r.due_at,
                followups=r.followups,
                ack_state=r.ack_state,
                eta_at=etas.get(r.id),
                next_turns=later,
                reopens=r.reopens,
                agent=names.get(owner) if owner is not None else None,
                language=r.language or "en",
                team=team_names.get(r.team_id) if r.team_id is not None else None,
            )
        )
    return out


def _turns(conn: Connection, period: Any) -> dict[int, tuple[Any, tuple[Turn, ...]]]:
    """Per case of the period: its turn 0 (due time, who answered) and its later turns."""
    found: dict[int, tuple[Any, list[Turn]]] = {}
    query = (
        select(
            CaseTurn.case_id,
            CaseTurn.seq,
            CaseTurn.started_at,
            CaseTurn.due_at,
            CaseTurn.responded_at,
            CaseTurn.responder_id,
            CaseTurn.closed_at,
        )
        .join(Case, Case.id == CaseTurn.case_id)
        .where(period)
        .order_by(CaseTurn.case_id, CaseTurn.seq)
    )
    for t in conn.execute(query):
        _, later = found.setdefault(t.case_id, (None, []))
        if t.seq == 0:
            found[t.case_id] = (t, later)
        else:
            later.append(Turn(t.started_at, t.due_at, t.responded_at, t.closed_at))
    return {case_id: (first, tuple(later)) for case_id, (first, later) in found.items()}


def audit_entries(
    conn: Connection,
    *,
    actor: str | None = None,
    action: str | None = None,
    reference: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """The audit log filtered, oldest first (the export's order, the chain's order)."""
    query = (
        select(
            AuditLog.id,
            AuditLog.at,
            AuditLog.actor,
            AuditLog.action,
            AuditLog.before,
            AuditLog.after,
            AuditLog.hmac,
            Case.reference,
        )
        .outerjoin(Case, Case.id == AuditLog.case_id)
        .order_by(AuditLog.id)
        .limit(limit)
    )
    if actor:
        query = query.where(AuditLog.actor == actor)
    if action:
        query = query.where(AuditLog.action == action)
    if reference:
        query = query.where(Case.reference == reference)
    if start is not None:
        query = query.where(AuditLog.at >= start)
    if end is not None:
        query = query.where(AuditLog.at < end)
    return [
        {
            "id": row.id,
            "at": row.at.isoformat(),
            "actor": row.actor,
            "action": row.action,
            "case": row.reference,
            "before": row.before,
            "after": row.after,
            "hmac": row.hmac,
        }
        for row in conn.execute(query)
    ]
