"""The SLA policy: business time, weekends, holidays, DST, and content rules that only bring
a due time forward. Expected instants are worked out by hand from a calendar.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from inbox.config import BusinessHours, ContentRule, SlaSettings
from inbox.sla import add_business_time, business_time_between, due_time


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


OFF = BusinessHours()
UTC_OFFICE = BusinessHours(enabled=True)  # Mon-Fri 09:00-17:00 UTC
BERLIN = BusinessHours(enabled=True, timezone="Europe/Berlin")
CHRISTMAS = BusinessHours(
    enabled=True, timezone="Europe/Berlin", holidays=[date(2026, 12, 24), date(2026, 12, 25)]
)
# A night desk, every day 01:00-04:00 local: the spring-forward hour falls inside it.
BERLIN_NIGHTS = BusinessHours(
    enabled=True,
    timezone="Europe/Berlin",
    days=[1, 2, 3, 4, 5, 6, 7],
    start=time(1, 0),
    end=time(4, 0),
)

BUSINESS_TIME = [
    # name, start, minutes, hours, expected
    ("disabled: wall-clock time", utc(2026, 11, 20, 16, 0), 240, OFF, utc(2026, 11, 20, 20, 0)),
    ("within the day", utc(2026, 11, 19, 10, 0), 120, UTC_OFFICE, utc(2026, 11, 19, 12, 0)),
    ("fills the day exactly", utc(2026, 11, 19, 9, 0), 480, UTC_OFFICE, utc(2026, 11, 19, 17, 0)),
    ("before opening", utc(2026, 11, 19, 6, 30), 30, UTC_OFFICE, utc(2026, 11, 19, 9, 30)),
    ("after closing", utc(2026, 11, 17, 18, 0), 60, UTC_OFFICE, utc(2026, 11, 18, 10, 0)),
    # Friday 16:00 + 2 h: one hour on Friday, one on Monday.
    ("over the weekend", utc(2026, 11, 20, 16, 0), 120, UTC_OFFICE, utc(2026, 11, 23, 10, 0)),
    ("sent on Saturday", utc(2026, 11, 21, 11, 0), 60, UTC_OFFICE, utc(2026, 11, 23, 10, 0)),
    ("sent on Sunday night", utc(2026, 11, 22, 23, 59), 1, UTC_OFFICE, utc(2026, 11, 23, 9, 1)),
    ("three working days", utc(2026, 11, 23, 9, 0), 3 * 480, UTC_OFFICE, utc(2026, 11, 25, 17, 0)),
    # Berlin in winter is UTC+1: opens 08:00 UTC, closes 16:00 UTC.
    ("Berlin, winter", utc(2026, 11, 19, 15, 30), 60, BERLIN, utc(2026, 11, 20, 8, 30)),
    # Thursday 24 and Friday 25 December are holidays; Wednesday 23 16:30 CET + 60 min:
    # 30 min on Wednesday, 30 min on Monday 28.
    ("holidays", utc(2026, 12, 23, 15, 30), 60, CHRISTMAS, utc(2026, 12, 28, 8, 30)),
    # DST starts Sunday 29 March 2026. Friday 27th 16:00 CET (15:00 UTC) + 2 h: one hour
    # on Friday, one on Monday 30th, which opens at 09:00 CEST = 07:00 UTC.
    ("Berlin, spring forward", utc(2026, 3, 27, 15, 0), 120, BERLIN, utc(2026, 3, 30, 8, 0)),
    # DST ends Sunday 25 October 2026. Friday 23rd 16:00 CEST (14:00 UTC) + 2 h: Monday 26th
    # opens at 09:00 CET = 08:00 UTC.
    ("Berlin, fall back", utc(2026, 10, 23, 14, 0), 120, BERLIN, utc(2026, 10, 26, 9, 0)),
    # On 29 March 01:00-04:00 local is 00:00-02:00 UTC: two hours, not three. 150 minutes
    # from 00:00 UTC use those two hours, then 30 minutes from 01:00 CEST on the 30th
    # (23:00 UTC on the 29th).
    ("the missing hour", utc(2026, 3, 29, 0, 0), 150, BERLIN_NIGHTS, utc(2026, 3, 29, 23, 30)),
    # On 25 October 01:00-04:00 local is 23:00 UTC (24th) to 03:00 UTC: four hours.
    ("the repeated hour", utc(2026, 10, 24, 23, 0), 240, BERLIN_NIGHTS, utc(2026, 10, 25, 3, 0)),
]


@pytest.mark.parametrize(
    ("start", "minutes", "hours", "expected"),
    [row[1:] for row in BUSINESS_TIME],
    ids=[row[0] for row in BUSINESS_TIME],
)
def test_add_business_time(start, minutes, hours, expected):
    due = add_business_time(start, minutes, hours)
    assert due == expected
    assert due.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("start", "minutes", "hours", "expected"),
    [row[1:] for row in BUSINESS_TIME],
    ids=[row[0] for row in BUSINESS_TIME],
)
def test_business_time_between_undoes_it(start, minutes, hours, expected):
    assert business_time_between(start, expected, hours) == timedelta(minutes=minutes)


def test_no_working_day_at_all_falls_back_to_wall_clock():
    every_day_a_holiday = BusinessHours(
        enabled=True,
        days=[1],
        holidays=[date(2026, 11, 23) + timedelta(weeks=w) for w in range(200)],
    )
    start = utc(2026, 11, 20, 12, 0)
    assert add_business_time(start, 60, every_day_a_holiday) == start + timedelta(minutes=60)


# --- content rules --------------------------------------------------------------------------

TAKEOVER = ContentRule(
    name="account takeover",
    pattern=r"(?i)\b(hacked|locked out|account (was )?(stolen|compromised))\b",
    due_within_minutes=60,
)
LEGAL = ContentRule(name="legal", pattern=r"(?i)\blawyer\b", due_within_minutes=30)
SLOWER = ContentRule(name="feedback", pattern=r"(?i)\bfeedback\b", due_within_minutes=600)
SLA = SlaSettings(first_response_minutes=240, rules=[TAKEOVER, LEGAL, SLOWER])
T = utc(2026, 11, 19, 10, 0)

RULES = [
    ("no rule matches", "Invoice question", "Where is my invoice?", T + timedelta(hours=4), None),
    ("subject matches", "I was HACKED", "please help", T + timedelta(hours=1), "account takeover"),
    (
        "text matches",
        "Help",
        "I am locked out since Monday",
        T + timedelta(hours=1),
        "account takeover",
    ),
    (
        "the earliest of two rules",
        "Hacked",
        "my lawyer will call you",
        T + timedelta(minutes=30),
        "legal",
    ),
    # A rule with a longer target never pushes the due time back.
    (
        "a slower rule is ignored",
        "Feedback",
        "some feedback on the app",
        T + timedelta(hours=4),
        None,
    ),
    ("a word inside another word", "Unhacked", "hackedness", T + timedelta(hours=4), None),
]


@pytest.mark.parametrize(
    ("subject", "text", "expected", "rule"),
    [row[1:] for row in RULES],
    ids=[row[0] for row in RULES],
)
def test_due_time_rules_only_bring_forward(subject, text, expected, rule):
    assert due_time(T, subject, text, SLA) == (expected, rule)


def test_rules_use_business_hours_too():
    sla = SlaSettings(first_response_minutes=240, business_hours=UTC_OFFICE, rules=[TAKEOVER])
    friday_late = utc(2026, 11, 20, 16, 30)
    # 30 minutes on Friday, 30 on Monday; the default target would be Monday 12:30.
    assert due_time(friday_late, "hacked", "", sla) == (
        utc(2026, 11, 23, 9, 30),
        "account takeover",
    )
    assert due_time(friday_late, "hello", "", sla) == (utc(2026, 11, 23, 12, 30), None)


def test_due_time_takes_no_channel():
    # The policy's signature is the promise: nothing channel-shaped can reach it.
    import inspect

    assert list(inspect.signature(due_time).parameters) == ["start", "subject", "text", "sla"]
