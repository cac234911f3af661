"""The report's read side: the cases of a period as `CaseRow`s, and nothing else.

Two statements: the cases (with the visibility of each case's first inbound message) and the
ETA every acknowledgement promised, which the normalizer records in the audit log's
`acknowledgement.queued` row (after.eta_at) in the transaction that queues it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from inbox.models import AuditLog, Case, Message
from inbox.outbox import ACK_QUEUED
from inbox.report import CaseRow

ACK_ACTION = ACK_QUEUED  # written by every channel through inbox.outbox


def fetch(conn: Connection, since: datetime, until: datetime) -> list[CaseRow]:
    # Each case's first inbound message: one grouped pass over the period's messages, which
    # both databases hash-join; a per-case correlated subquery cost a lookup per case.
    first_ids = (
        select(Message.case_id, func.min(Message.id).label("first_id"))
        .join(Case, Case.id == Message.case_id)
        .where(
            Message.direction == "inbound",
            (Case.first_inbound_at >= since) & (Case.first_inbound_at < until),
        )
        .group_by(Message.case_id)
        .subquery()
    )
    first_message = Message.__table__.alias("first_message")
    period = (Case.first_inbound_at >= since) & (Case.first_inbound_at < until)
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
            Case.language,
        )
        .outerjoin(first_ids, first_ids.c.case_id == Case.id)
        .outerjoin(first_message, first_message.c.id == first_ids.c.first_id)
        .where(period)
        .order_by(Case.id)
    )
    return [
        CaseRow(
            id=r.id,
            reference=r.reference or f"#{r.id}",
            channel=r.channel,
            visibility=r.visibility or "private",
            status=r.status,
            first_inbound_at=r.first_inbound_at,
            first_response_at=r.first_response_at,
            resolved_at=r.resolved_at,
            due_at=r.due_at,
            followups=r.followups,
            ack_state=r.ack_state,
            eta_at=etas.get(r.id),
            language=r.language or "en",
        )
        for r in rows
    ]


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
