"""Snooze: a case leaves the queue until a time, or until the customer answers.

Coming back is a query condition, not a job: the queue, claim-next and the search's
"open" filter all ask `awake()` in SQL, so a snoozed case is back the moment its time
passes or a newer customer message is filed, with no daemon to run or to miss. A timed
snooze also ends early when the customer writes (a helpdesk never hides an answer behind
a timer). `is_awake` says the same thing in Python, for tables of cases in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, not_, or_, select

from inbox.models import Case, Message

# Further ahead than this is not a snooze but a wish to forget the case.
MAX_SNOOZE = timedelta(days=366)


class BadSnooze(ValueError):
    pass


@dataclass(frozen=True)
class SnoozeState:
    until: datetime | None
    after_message_id: int | None


def check_until(until: datetime | None, now: datetime) -> datetime | None:
    """A snooze time as stored: aware, in the future, at most MAX_SNOOZE ahead."""
    if until is None:
        return None
    if until.tzinfo is None:
        raise BadSnooze("give the time with its zone (for example 2026-12-08T09:00:00Z)")
    if until <= now:
        raise BadSnooze("a snooze ends in the future")
    if until - now > MAX_SNOOZE:
        raise BadSnooze("a snooze ends within a year")
    return until


def is_awake(snooze: SnoozeState, newest_inbound_id: int | None, now: datetime) -> bool:
    """Whether a case is in the queue as far as snoozing goes (the SQL below, in Python)."""
    if snooze.after_message_id is None:
        return True  # not snoozed
    if newest_inbound_id is not None and newest_inbound_id > snooze.after_message_id:
        return True  # the customer answered
    return snooze.until is not None and snooze.until <= now


def _answered() -> Any:
    return exists(
        select(Message.id).where(
            Message.case_id == Case.id,
            Message.direction == "inbound",
            Message.id > Case.snooze_after_message_id,
        )
    )


def awake(now: datetime) -> Any:
    """SQL: the case is not snoozed, or its snooze has ended (time passed or answered)."""
    return or_(
        Case.snooze_after_message_id.is_(None),
        and_(Case.snoozed_until.is_not(None), Case.snoozed_until <= now),
        _answered(),
    )


def asleep(now: datetime) -> Any:
    """SQL: the case is snoozed right now."""
    return not_(awake(now))
