"""The one SLA policy: a case's due time from its first inbound message, for every channel.

Nothing here takes a channel, a follower count or a visibility: the signature itself is
the promise that the queue is channel-blind.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from inbox.config import BusinessHours, SlaSettings

_MAX_DAYS = 800  # a calendar with no working day at all must not loop forever


def add_business_time(start: datetime, minutes: int, hours: BusinessHours) -> datetime:
    """`start` plus `minutes` of working time under `hours` (wall-clock time when disabled)."""
    if not hours.enabled:
        return start + timedelta(minutes=minutes)
    zone = ZoneInfo(hours.timezone)
    remaining = timedelta(minutes=minutes)
    day = start.astimezone(zone).date()
    holidays = set(hours.holidays)
    for _ in range(_MAX_DAYS):
        if day.isoweekday() in hours.days and day not in holidays:
            opens = datetime.combine(day, hours.start, zone).astimezone(UTC)
            closes = datetime.combine(day, hours.end, zone).astimezone(UTC)
            begin = max(opens, start)
            if closes > begin:
                available = closes - begin
                if remaining <= available:
                    return begin + remaining
                remaining -= available
        day += timedelta(days=1)
    return start + timedelta(minutes=minutes)


def business_time_between(start: datetime, end: datetime, hours: BusinessHours) -> timedelta:
    """Working time elapsed between two instants (for ETAs and SLA attainment)."""
    if end <= start:
        return timedelta(0)
    if not hours.enabled:
        return end - start
    zone = ZoneInfo(hours.timezone)
    total = timedelta(0)
    day = start.astimezone(zone).date()
    last = end.astimezone(zone).date()
    holidays = set(hours.holidays)
    while day <= last:
        if day.isoweekday() in hours.days and day not in holidays:
            opens = datetime.combine(day, hours.start, zone).astimezone(UTC)
            closes = datetime.combine(day, hours.end, zone).astimezone(UTC)
            begin, finish = max(opens, start), min(closes, end)
            if finish > begin:
                total += finish - begin
        day += timedelta(days=1)
    return total


def due_time(
    start: datetime, subject: str, text: str, sla: SlaSettings
) -> tuple[datetime, str | None]:
    """The due time of a case opened at `start`, and the content rule that set it, if any.

    A rule only ever brings the due time forward.
    """
    due = add_business_time(start, sla.first_response_minutes, sla.business_hours)
    rule_name: str | None = None
    haystack = f"{subject}\n{text}"
    for rule in sla.rules:
        if rule.due_within_minutes is None:
            continue  # a rule that only tags (inbox.tags)
        if re.search(rule.pattern, haystack):
            candidate = add_business_time(start, rule.due_within_minutes, sla.business_hours)
            if candidate < due:
                due, rule_name = candidate, rule.name
    return due, rule_name
