"""The manager report from PostgreSQL's daily rollups (inbox/report_days.py, migration 0029)
gives the Python path's figures, exactly, whatever the rollups' state: never folded, folded,
changed since the fold (the triggers mark the day, the report reads it from the cases), and
folded again. The Python path (inbox/report.py) is the oracle; its own figures are checked
by hand in tests/test_audit_report.py.

Also: which columns mark a day, a change the fold did not see stays marked, one fold at a
time, the period's whole days, and the percentiles against a hand interpolation.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import re
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from inbox import report, report_days, report_rows, report_sql
from inbox.db import make_engine
from inbox.models import Base
from inbox.report import AuditSettings
from tests import test_turns
from tests.support.smtp_support import (
    STOP_WITHIN_S,
    ParityProcess,
    daemon_settings,
    running,
    wait_for,
)
from tests.test_audit_report import EVENTS, OLD, Event, parity_cli, seed
from tests.test_report_sql import comparable

MIGRATION = importlib.import_module("inbox.migrations.versions.0029_report_days")


@pytest.fixture
def pg(pg_database: str) -> Iterator[Engine]:
    """The suite's PostgreSQL store, emptied (the rollups are PostgreSQL's: SQLite reads
    every case into Python, and these tests have nothing to run there)."""
    engine = make_engine(pg_database, busy_timeout_ms=15000)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield engine
    engine.dispose()


def reports(
    engine: Engine, since: datetime, until: datetime, parity_on: str = "first_response"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Python path's report and the rollups' report of one period, at one "now"."""
    now = datetime.now(UTC)
    with engine.connect() as conn:
        rows = report_rows.fetch(conn, since, until)
        python = report.build(
            rows, now=now, since=since, until=until, threshold=2.0, parity_on=parity_on
        )
        rolled = report_days.build(
            conn, now=now, since=since, until=until, threshold=2.0, parity_on=parity_on
        )
    return comparable(python), comparable(rolled)


def marked_days(engine: Engine) -> set[date]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT day FROM report_dirty")).scalars())


def period() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=30), now


@pytest.mark.parametrize("parity_on", ["first_response", "next_response"])
@pytest.mark.parametrize("folded", [False, True], ids=["never-folded", "folded"])
def test_the_rollups_give_the_python_paths_figures(pg: Engine, parity_on: str, folded: bool):
    seed(pg, [*EVENTS, OLD])
    if folded:
        done = report_days.fold(pg)
        assert done.days and not marked_days(pg)
    python, rolled = reports(pg, *period(), parity_on=parity_on)
    assert python["channels"]["email"]["volume"] == 6  # the seed is there, OLD is not
    assert rolled == python


def test_the_report_reads_a_folded_day_from_its_rollup_and_a_changed_day_from_the_cases(
    pg: Engine,
) -> None:
    seed(pg, EVENTS)
    report_days.fold(pg)
    # A folded day's rollup row says 100 cases more: the report reads the rollup, not the
    # cases (a check of where the figures come from, not a state the code makes).
    with pg.begin() as conn:
        day = conn.execute(
            text(
                "UPDATE report_days SET volume = volume + 100 WHERE ctid = "
                "(SELECT min(ctid) FROM report_days WHERE volume > 0) RETURNING day"
            )
        ).scalar_one()
    python, rolled = reports(pg, *period())
    assert rolled["total"]["volume"] == python["total"]["volume"] + 100
    # A case of that day changes: the day is marked and read from the cases again.
    with pg.begin() as conn:
        conn.execute(
            text(
                "UPDATE cases SET followups = followups + 1 WHERE id = "
                "(SELECT min(id) FROM cases WHERE first_inbound_at::date = :day)"
            ),
            {"day": day},
        )
    assert day in marked_days(pg)
    python, rolled = reports(pg, *period())
    assert rolled == python
    # And a fold recomputes it from the cases.
    assert day in report_days.fold(pg).days
    assert not marked_days(pg)
    python, rolled = reports(pg, *period())
    assert rolled == python


# Changes to the seeded cases, each in a column the report reads, made after a fold. The
# day each touches is marked, so the report is exact before the next fold and after it.
CHANGES = {
    "resolve an open case": "UPDATE cases SET status = 'resolved', resolved_at = "
    "first_inbound_at + interval '7 hours' WHERE id = (SELECT min(id) FROM cases "
    "WHERE status <> 'resolved')",
    "answer an unanswered case": "UPDATE cases SET first_response_at = first_inbound_at + "
    "interval '33 minutes', status = 'open' WHERE id = (SELECT min(id) FROM cases "
    "WHERE first_response_at IS NULL)",
    "reopen a resolved case": "UPDATE cases SET status = 'open', reopens = reopens + 1 "
    "WHERE id = (SELECT min(id) FROM cases WHERE status = 'resolved')",
    "move a case to another channel": "UPDATE cases SET channel = 'sms' WHERE id = "
    "(SELECT min(id) FROM cases WHERE channel = 'email')",
    "assign a case to another agent": "UPDATE cases SET assignee_id = (SELECT max(id) FROM "
    "users) WHERE id = (SELECT min(id) FROM cases WHERE assignee_id IS NULL)",
    "detect another language": "UPDATE cases SET language = 'de' WHERE id = "
    "(SELECT max(id) FROM cases)",
    "move a case's first message to another day": "UPDATE cases SET first_inbound_at = "
    "first_inbound_at - interval '3 days' WHERE id = (SELECT min(id) FROM cases)",
    "answer a waiting follow-up": "UPDATE case_turns SET responded_at = started_at + "
    "interval '12 minutes' WHERE id = (SELECT min(id) FROM case_turns WHERE seq >= 1 AND "
    "responded_at IS NULL)",
    "close a waiting follow-up": "UPDATE case_turns SET closed_at = started_at + "
    "interval '1 hour' WHERE id = (SELECT max(id) FROM case_turns WHERE seq >= 1 AND "
    "responded_at IS NULL)",
    "a new follow-up": "INSERT INTO case_turns (case_id, seq, started_at, due_at) "
    "SELECT c.id, (SELECT max(seq) + 1 FROM case_turns WHERE case_id = c.id), "
    "c.first_inbound_at + interval '2 hours', c.first_inbound_at + interval '3 hours' "
    "FROM cases c WHERE c.id = (SELECT min(id) FROM cases WHERE status <> 'resolved')",
    "a follow-up deleted": "DELETE FROM case_turns WHERE id = (SELECT max(id) FROM "
    "case_turns WHERE seq >= 1)",
    # The promised time is the audit log's on the Python path (report_rows), copied to the
    # case in the same transaction by the real code: only the state changes here.
    "an acknowledgement sent": "UPDATE cases SET ack_state = 'sent' WHERE id = (SELECT "
    "min(id) FROM cases WHERE ack_state IS DISTINCT FROM 'sent')",
    "a new case today": "INSERT INTO cases (reference, token, contact_id, status, channel, "
    "subject, due_at, first_inbound_at, last_activity_at, created_at, followups, reopens) "
    "SELECT 'N-' || substr(md5(random()::text), 1, 12), 'tttttttttttt', min(id), 'new', "
    "'reddit', 'new', now() AT TIME ZONE 'UTC' + interval '1 hour', "
    "now() AT TIME ZONE 'UTC' - interval '1 minute', "
    "now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', 0, 0 FROM contacts",
}


@pytest.mark.parametrize("parity_on", ["first_response", "next_response"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_after_the_fold_is_in_the_next_report(
    pg: Engine, change: str, parity_on: str
) -> None:
    seed(pg, [*EVENTS, OLD])
    report_days.fold(pg)
    with pg.begin() as conn:
        assert conn.execute(text(CHANGES[change])).rowcount == 1
    assert marked_days(pg), "the change marked no day"
    python, rolled = reports(pg, *period(), parity_on=parity_on)
    assert rolled == python
    report_days.fold(pg)
    python, rolled = reports(pg, *period(), parity_on=parity_on)
    assert rolled == python


def test_the_real_intake_report_is_the_python_paths(pg: Engine) -> None:
    test_turns.test_a_follow_up_after_our_answer_gets_its_own_due_time(pg)
    since, until = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)
    python, rolled = reports(pg, since, until)
    assert python["total"]["next_turns"] == 1 and python["agents"]["sam"]["volume"] == 1
    assert rolled == python
    report_days.fold(pg, now=until)
    python, rolled = reports(pg, since, until)
    assert rolled == python


def test_the_report_on_postgresql_is_the_rollups(engine: Engine) -> None:
    seed(engine, EVENTS)
    read: list[list[Any]] = []
    now = datetime.now(UTC)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            expected = report_days.build(
                conn,
                now=now,
                since=now - timedelta(days=30),
                until=now,
                threshold=2.0,
                rows_read=read.append,
            )
        data = report_days.compute(
            conn, now=now, since=now - timedelta(days=30), until=now, threshold=2.0
        )
    assert report_days.uses_rollups(engine.dialect.name) == (engine.dialect.name == "postgresql")
    if read:
        assert read[0] and comparable(data) == comparable(expected)
    assert data["channels"]["email"]["volume"] == 6


def reads() -> set[str]:
    """The columns of cases (c) and case_turns (t) the rollups are computed from."""
    found = re.findall(r"\b([ct])\.(\w+)", report_days.AGGREGATE)
    return {f"{alias}.{column}" for alias, column in found}


def test_the_triggers_watch_every_column_the_rollups_read() -> None:
    watched = {f"c.{c}" for c in MIGRATION.CASE_COLUMNS} | {
        f"t.{c}" for c in MIGRATION.TURN_COLUMNS
    }
    # The joins' keys: a case's id never changes, and a turn's case is watched.
    keys = {"c.id", "t.case_id", "t.seq"}
    assert reads() <= watched | keys
    assert {"c.status", "c.first_response_at", "t.responded_at"} <= reads()


# A value of each watched column of cases that differs from the seed's.
NEW_VALUE = {
    "first_inbound_at": "first_inbound_at - interval '1 second'",
    "channel": "'web'",
    "side": "'public'",
    "language": "'fr'",
    "assignee_id": "NULL",
    "first_responder_id": "(SELECT max(id) FROM users)",
    "team_id": "NULL",
    "status": "'pending_customer'",
    "ack_state": "'failed'",
    "ack_eta_at": "first_inbound_at + interval '9 hours'",
    "first_response_at": "first_inbound_at + interval '1 minute'",
    "first_due_at": "first_inbound_at + interval '99 hours'",
    "due_at": "due_at + interval '1 second'",
    "resolved_at": "first_inbound_at + interval '99 hours'",
    "followups": "followups + 1",
    "reopens": "reopens + 1",
}


def test_an_update_marks_its_day_when_it_changes_what_the_report_reads(pg: Engine) -> None:
    assert set(NEW_VALUE) == set(MIGRATION.CASE_COLUMNS)
    seed(pg, [Event("email", "private", 30, 5, None, 4, agent="ann")])
    report_days.fold(pg)
    for column, value in NEW_VALUE.items():
        with pg.begin() as conn:
            if column == "team_id":  # the seed has none: give it one first
                conn.execute(text("INSERT INTO teams (name, created_at) VALUES ('t', now())"))
                value = "(SELECT max(id) FROM teams)"
            conn.execute(text(f"UPDATE cases SET {column} = {value}"))  # noqa: S608
        assert marked_days(pg), f"an update of {column} marked no day"
        report_days.fold(pg)
    # What the report does not read marks nothing: the subject, the last activity.
    with pg.begin() as conn:
        conn.execute(text("UPDATE cases SET subject = 'other', last_activity_at = now()"))
        conn.execute(text("UPDATE case_turns SET responder_id = NULL"))
        # The same values again: no change, no mark.
        conn.execute(text("UPDATE cases SET status = status, followups = followups"))
    assert marked_days(pg) == set()
    # The side and the promised time were set on the case alone here (the real code derives
    # them with the messages and the audit log, which the Python path reads): the grouping
    # sets' report, which reads the case as the rollups do, is the oracle.
    now = datetime.now(UTC)
    since, until = period()
    with pg.connect() as conn:
        rolled = report_days.build(conn, now=now, since=since, until=until, threshold=2.0)
        grouped = report_sql.build(conn, now=now, since=since, until=until, threshold=2.0)
    assert rolled == grouped
    assert rolled["channels"]["web"]["volume"] == 1


def test_a_change_the_fold_did_not_see_stays_marked(pg: Engine) -> None:
    """A transaction still open while the fold runs: its mark is not the fold's to delete."""
    seed(pg, EVENTS)
    with pg.connect() as writer:
        writer.execute(
            text(
                "UPDATE cases SET status = 'resolved', resolved_at = first_inbound_at + "
                "interval '5 hours' WHERE id = (SELECT min(id) FROM cases WHERE status <> "
                "'resolved')"
            )
        )
        folded = report_days.fold(pg)  # the writer has not committed
        assert folded.days and not marked_days(pg)
        writer.commit()
    assert marked_days(pg)
    python, rolled = reports(pg, *period())
    assert rolled == python


def test_one_fold_at_a_time(pg: Engine) -> None:
    seed(pg, EVENTS)
    with pg.connect() as other:
        other.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": report_days.FOLD_LOCK})
        assert report_days.fold(pg) == report_days.Folded(busy=True)
    assert report_days.fold(pg).days


def test_a_fold_covers_the_newest_days_never_folded_first(pg: Engine) -> None:
    seed(pg, EVENTS)  # cases over the last 13 days
    with pg.begin() as conn:
        conn.execute(text("DELETE FROM report_dirty"))  # as a store upgraded to 0029
        newest = conn.execute(text("SELECT max(first_inbound_at)::date FROM cases")).scalar_one()
    now = datetime.combine(newest, datetime.min.time(), UTC) + timedelta(hours=12)
    first = report_days.fold(pg, now=now, max_new_days=2)
    assert first.days == (newest - timedelta(days=1), newest)
    second = report_days.fold(pg, now=now, max_new_days=2)
    assert second.days == (newest - timedelta(days=3), newest - timedelta(days=2))
    python, rolled = reports(pg, *period())
    assert rolled == python


@pytest.mark.parametrize("table", ["cases", "case_turns"])
def test_truncating_the_cases_or_turns_empties_the_rollups(pg: Engine, table: str) -> None:
    seed(pg, EVENTS)
    report_days.fold(pg)
    with pg.begin() as conn:
        conn.execute(text(f"TRUNCATE {table} CASCADE"))
        left = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM report_days) + (SELECT count(*) FROM "
                "report_folded) + (SELECT count(*) FROM report_dirty)"
            )
        ).scalar_one()
    assert left == 0


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute)


# (since, until) -> the whole days [lo, hi) and the ranges read from the cases.
PERIODS: list[tuple[datetime, datetime, date, date, list[tuple[datetime, datetime]]]] = [
    # From a midnight to a midnight: whole days only.
    (at(1), at(8), date(2026, 12, 1), date(2026, 12, 8), []),
    # "The last 30 days" at 10:30: the first day's end and today's start.
    (
        at(1, 10, 30),
        at(8, 10, 30),
        date(2026, 12, 2),
        date(2026, 12, 8),
        [(at(1, 10, 30), at(2)), (at(8), at(8, 10, 30))],
    ),
    # Within one day, or across one midnight without a whole day: one range.
    (at(3, 9), at(3, 17), date(2026, 12, 4), date(2026, 12, 4), [(at(3, 9), at(3, 17))]),
    (at(3, 9), at(4, 2), date(2026, 12, 4), date(2026, 12, 4), [(at(3, 9), at(4, 2))]),
    # A midnight start and a partial last day.
    (at(3), at(5, 1), date(2026, 12, 3), date(2026, 12, 5), [(at(5), at(5, 1))]),
]


@pytest.mark.parametrize(("since", "until", "lo", "hi", "ranges"), PERIODS)
def test_the_period_is_whole_days_and_the_ranges_around_them(
    since: datetime,
    until: datetime,
    lo: date,
    hi: date,
    ranges: list[tuple[datetime, datetime]],
) -> None:
    got_lo, got_hi, starts, ends = report_days.period_parts(since, until)
    assert (got_lo, got_hi) == (lo, hi)
    assert list(zip(starts, ends, strict=True)) == ranges
    # Together they are the period, each instant once.
    whole = (hi - lo).days * 86400 if hi > lo else 0
    parts = sum((b - a).total_seconds() for a, b in ranges)
    assert whole + parts == (until - since).total_seconds()


def by_hand(values: list[float], p: float) -> float:
    """The p-quantile by sorting and interpolating between the two ranks around it."""
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    below, above = ordered[math.floor(position)], ordered[math.ceil(position)]
    return below + (above - below) * (position - math.floor(position))


@pytest.mark.parametrize(
    "values",
    [
        [42.0],
        [5.0, 1.0],
        [3.0, 3.0, 3.0],
        [-60.0, 0.0, 0.5, 7200.25, 86400.0],
        [float(v) for v in range(1000, 0, -7)],
        [random.Random(7).uniform(0, 3 * 86400) for _ in range(999)],
    ],
    ids=["one", "two", "ties", "negative", "descending", "random"],
)
def test_the_percentiles_are_the_interpolated_ranks(values: list[float]) -> None:
    import numpy as np

    got = report_days.percentiles(np.array(values), [0.5, 0.9])
    assert got == pytest.approx([by_hand(values, 0.5), by_hand(values, 0.9)], rel=1e-12)
    assert report_days.percentiles(np.empty(0), [0.5]) is None


def test_the_fold_interval_setting_defaults_to_a_minute() -> None:
    assert AuditSettings().rollup_interval_s == 60
    with pytest.raises(ValueError, match="rollup_interval_s"):
        AuditSettings(rollup_interval_s=-1)


def values_sent(engine: Engine, values: list[float]) -> Callable[[], Any]:
    def run() -> Any:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT array_send(CAST(:v AS float8[]))"), {"v": values}
            ).scalar_one()

    return run


def test_array_send_is_read_back_exactly(pg: Engine) -> None:
    values = [0.1, -2.5, 1e-6, 86400.000001, 1765000000.123456]
    assert report_days.values_of(values_sent(pg, values)()).tolist() == values
    assert len(report_days.values_of(values_sent(pg, [])())) == 0
    assert len(report_days.values_of(None)) == 0
    # A NULL among the values would shift every value after it: refused, not misread.
    with pytest.raises(ValueError, match="without NULLs"):
        report_days.values_of(values_sent(pg, [1.0, None, 2.0])())  # type: ignore[list-item]


def test_parity_run_folds_what_changed(pg: Engine, pg_database: str, tmp_path: Path) -> None:
    """The daemon folds every `[audit] rollup_interval_s`: the seeded days get their
    rollups and their marks go, without anyone running a report."""
    seed(pg, EVENTS)
    assert marked_days(pg)
    settings, _, web_port = daemon_settings(
        tmp_path, pg_database, extra={"audit": {"rollup_interval_s": 1}}
    )
    parity = ParityProcess.run(settings, log_path=tmp_path / "parity.log")
    with running(parity):
        parity.wait_for_port(web_port)
        wait_for(lambda: not marked_days(pg), message="the daemon's fold")
        parity.signal(signal.SIGTERM)
        assert parity.wait(timeout=STOP_WITHIN_S) == 0, parity.log()
    with pg.connect() as conn:
        folded = set(conn.execute(text("SELECT day FROM report_folded")).scalars())
        seeded = set(conn.execute(text("SELECT first_inbound_at::date FROM cases")).scalars())
    assert seeded <= folded
    python, rolled = reports(pg, *period())
    assert rolled == python


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_the_fold_command(engine: Engine, db_url: str, tmp_path: Path, as_json: bool) -> None:
    seed(engine, EVENTS)
    out = parity_cli(db_url, tmp_path, "fold", *(["--json"] if as_json else []))
    assert out.returncode == 0, out.stderr
    if engine.dialect.name != "postgresql":
        assert "PostgreSQL only" in out.stderr
        return
    # Every day from the first case's to today: the days between with no case are folded
    # too (as empty), so the report reads none of them from the cases.
    with engine.connect() as conn:
        first = conn.execute(text("SELECT min(first_inbound_at)::date FROM cases")).scalar_one()
    today = datetime.now(UTC).date()
    days = [first + timedelta(days=n) for n in range((today - first).days + 1)]
    if as_json:
        assert json.loads(out.stdout) == {"days": [d.isoformat() for d in days], "busy": False}
    else:
        assert out.stdout.strip() == f"folded {len(days)} day(s): {days[0]} to {days[-1]}"
    assert not marked_days(engine)


def test_writers_and_folds_at_once_end_exact(pg: Engine) -> None:
    """Four writers change cases and turns in many short transactions while folds run
    beside them; whichever fold saw whichever change, the report is exact at the end (and
    after one more fold)."""
    seed(pg, [*EVENTS, OLD])
    report_days.fold(pg)
    changes = list(CHANGES.values())
    stop = threading.Event()
    failures: list[BaseException] = []
    refused: list[int] = []

    def writer(seed_: int) -> None:
        chosen = random.Random(seed_)
        try:
            for _ in range(25):
                try:
                    with pg.begin() as conn:
                        conn.execute(text(chosen.choice(changes)))
                except IntegrityError:
                    # Two writers numbered the same case's next turn at once: one of them
                    # rolled back, which the report must not see either.
                    refused.append(1)
        except BaseException as exc:  # the test fails on it below
            failures.append(exc)

    def folder() -> None:
        try:
            while not stop.is_set():
                report_days.fold(pg)
        except BaseException as exc:
            failures.append(exc)

    folding = threading.Thread(target=folder)
    folding.start()
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    folding.join()
    assert not failures, failures
    python, rolled = reports(pg, *period())
    assert rolled == python
    report_days.fold(pg)
    python, rolled = reports(pg, *period())
    assert rolled == python
