"""The expected response time told to a customer: the queue ahead at the recent answer rate.

One estimate for every channel, so an email, a tweet and a Reddit comment opened at the same
moment are promised the same time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, func, or_, select

from inbox.config import BusinessHours, SlaSettings
from inbox.models import Case
from normalizer.acks import AckSettings, Eta, expected_response

# (connection, case id, case due time, now) -> when the case will likely be answered.
EtaEstimate = Callable[[Connection, int, datetime, datetime], datetime]


def estimate(
    conn: Connection,
    case_id: int,
    due_at: datetime,
    now: datetime,
    *,
    hours: BusinessHours,
    acks: AckSettings,
) -> Eta:
    """The expected response time from the queue ahead and the recent answer rate."""
    ahead_rows = (
        select(Case.id)
        .where(
            Case.status.in_(("new", "open")),
            Case.id != case_id,
            or_(Case.due_at < due_at, and_(Case.due_at == due_at, Case.id < case_id)),
        )
        .limit(acks.max_queue_count)
        .subquery()
    )
    ahead = conn.execute(select(func.count()).select_from(ahead_rows)).scalar_one()
    # The window starts no earlier than the first case: a week-old install has answered
    # a week's worth at most, and must not look slow for the days before it existed.
    first_case = conn.execute(
        select(Case.created_at).order_by(Case.id).limit(1)
    ).scalar_one_or_none()
    since = now - timedelta(days=acks.throughput_days)
    if first_case is not None and first_case > since:
        since = first_case
    answered = conn.execute(
        select(func.count())
        .select_from(Case)
        .where(Case.first_response_at >= since, Case.first_response_at <= now)
    ).scalar_one()
    return expected_response(
        now,
        ahead=ahead,
        answered=answered,
        since=since,
        due_at=due_at,
        hours=hours,
        min_answered=acks.min_answered,
    )


def queue_estimate(sla: SlaSettings, acks: AckSettings) -> EtaEstimate:
    """The estimate as a callable, for connectors that acknowledge on their own."""

    def at(conn: Connection, case_id: int, due_at: datetime, now: datetime) -> datetime:
        return estimate(conn, case_id, due_at, now, hours=sla.business_hours, acks=acks).at

    return at
