"""The PostgreSQL report (inbox/report_sql.py) gives the Python path's figures, exactly, on
the tests' data sets: the known-answer seed of tests/test_audit_report.py (on both parity
measures) and the cases made through the real intake, normalizer and replies of
tests/test_turns.py. The Python path is the oracle; its own figures are checked by hand there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, event, text

from inbox import report, report_days, report_rows, report_sql
from tests import test_turns
from tests.test_audit_report import EVENTS, OLD, Event, seed


def both(engine: Engine, since: datetime, until: datetime, **kwargs: Any) -> tuple[Any, Any]:
    now = datetime.now(UTC)
    with engine.connect() as conn:
        rows = report_rows.fetch(conn, since, until)
        python = report.build(rows, now=now, since=since, until=until, threshold=2.0, **kwargs)
        sql = report_sql.build(conn, now=now, since=since, until=until, threshold=2.0, **kwargs)
    return python, sql


@pytest.fixture
def pg(engine: Engine) -> Engine:
    if engine.dialect.name != "postgresql":
        pytest.skip("the SQL path is PostgreSQL's; SQLite uses the Python path")
    return engine


@pytest.mark.parametrize("parity_on", ["first_response", "next_response"])
def test_the_sql_path_equals_the_python_path_on_the_known_answers(pg: Engine, parity_on: str):
    seed(pg, [*EVENTS, OLD])
    now = datetime.now(UTC)
    python, sql = both(pg, now - timedelta(days=30), now, parity_on=parity_on)
    assert python["channels"]["email"]["volume"] == 6  # the seed is there
    assert comparable(sql) == comparable(python)


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """The report without what depends on when each path ran: the ages of the oldest open
    cases count from each path's own "now"."""
    data.pop("generated_at")
    # (No agents at all: the report has no agents' table.)
    for groups in (data["channels"], data["sides"], data.get("agents", {}), {"": data["total"]}):
        for figures in groups.values():
            for key in ("oldest_open_age_s", "oldest_unanswered_age_s"):
                figures[key] = figures[key] is not None
    return data


def test_the_sql_path_equals_the_python_path_on_real_intake(pg: Engine) -> None:
    test_turns.test_a_follow_up_after_our_answer_gets_its_own_due_time(pg)
    python, sql = both(pg, datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC))
    python.pop("generated_at"), sql.pop("generated_at")
    assert python["total"]["next_turns"] == 1 and python["agents"]["sam"]["volume"] == 1
    assert sql == python


def test_the_report_takes_the_sql_path_on_postgresql_only(engine):
    seed(engine, EVENTS)
    now = datetime.now(UTC)
    with engine.connect() as conn:
        data = report_days.compute(
            conn, now=now, since=now - timedelta(days=30), until=now, threshold=2.0
        )
    assert data["channels"]["email"]["volume"] == 6
    assert report_sql.uses_sql(engine.dialect.name) == (engine.dialect.name == "postgresql")


# First responses on and beside the histogram's edges (15 min, 1 h, 4 h, 3 days), and one
# recorded before the message it answers (a clock skew): a response on an edge is in the
# bucket the edge opens, one before it (or negative) in the bucket below.
EDGE_RESPONSES_MIN = [15, 14.99, 60, 240, 3 * 24 * 60, 3 * 24 * 60 - 0.01, -1]


def test_the_histogram_puts_a_response_on_an_edge_above_it(engine: Engine) -> None:
    seed(engine, [Event("sms", "private", 24 * 5, m, None, 4) for m in EDGE_RESPONSES_MIN])
    now = datetime.now(UTC)
    with engine.connect() as conn:
        data = report_days.compute(
            conn, now=now, since=now - timedelta(days=30), until=now, threshold=2.0
        )
    # Buckets: <15 min, 15 min-1 h, 1-4 h, 4-8 h, 8-24 h, 1-3 days, 3 days and more.
    assert data["histogram"]["channels"]["sms"] == [2, 1, 1, 1, 0, 1, 1]


@contextmanager
def backends(engine: Engine) -> Iterator[list[int]]:
    """The server process (backend pid) each of the report's statements ran on."""
    pids: list[int] = []

    def record(conn: Connection, cursor: Any, statement: str, *rest: Any) -> None:
        if "percentile_cont" in statement:  # every statement of the report, and only those
            pids.append(conn.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield pids
    finally:
        event.remove(engine, "before_cursor_execute", record)


# A case on every statement's path (figures, later turns, weeks and histogram) that is
# committed by another connection after the report took its snapshot.
LATE = Event("email", "private", 3, 20, None, 4, 1, "sent", 3, turns=((1, 30, 4),), agent="cy")


@pytest.mark.parametrize("parity_on", ["first_response", "next_response"])
@pytest.mark.parametrize("begun", [False, True], ids=["own-transaction", "read-committed"])
def test_the_statements_run_on_several_connections_under_one_snapshot(
    pg: Engine, parity_on: str, begun: bool
) -> None:
    seed(pg, EVENTS)
    now = datetime.now(UTC)
    since = now - timedelta(days=30)
    with pg.connect() as conn:
        python = report.build(
            report_rows.fetch(conn, since, now),
            now=now,
            since=since,
            until=now,
            threshold=2.0,
            parity_on=parity_on,
        )
    with pg.connect() as conn, backends(pg) as pids:
        if begun:  # the caller's transaction is open, READ COMMITTED
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        sql = report_sql.build(
            conn,
            now=now,
            since=since,
            until=now,
            threshold=2.0,
            parity_on=parity_on,
            snapshot_taken=lambda: seed(pg, [LATE]),
        )
    with pg.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM cases")).scalar_one() == len(EVENTS) + 1
    # Four statements (five with the next responses' weeks), on more than one server process
    # (the pool has spare connections), none of which counted the late case.
    assert len(pids) == (5 if parity_on == "next_response" else 4)
    assert len(set(pids)) > 1
    assert sql["total"]["volume"] == len(EVENTS)
    assert comparable(sql) == comparable(python)


def test_a_transaction_that_wrote_gets_a_report_of_what_it_sees(pg: Engine) -> None:
    # Its rows are not committed: a connection importing its snapshot would not see them, so
    # the report runs on it alone.
    seed(pg, EVENTS)
    now = datetime.now(UTC)
    with pg.connect() as conn, backends(pg) as pids:
        moved = text(
            "UPDATE cases SET channel = 'sms'"
            " WHERE id = (SELECT min(id) FROM cases WHERE channel = 'email')"
        )
        conn.execute(moved)
        python, sql = both_on(conn, now - timedelta(days=30), now)
        own = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
    assert sql["channels"]["email"]["volume"] == 5 and sql["channels"]["sms"]["volume"] == 2
    assert set(pids) == {own}
    assert comparable(sql) == comparable(python)


def test_without_a_spare_connection_the_report_runs_on_the_callers(pg: Engine) -> None:
    seed(pg, EVENTS)
    now = datetime.now(UTC)
    # One connection in all; a report waiting for a second would fail after a second.
    single = create_engine(pg.url, pool_size=1, max_overflow=0, pool_timeout=1)
    try:
        with single.connect() as conn, backends(single) as pids:
            assert report_sql._spare(single) == 0  # not one to wait for
            python, sql = both_on(conn, now - timedelta(days=30), now)
    finally:
        single.dispose()
    assert len(pids) == 4 and len(set(pids)) == 1
    assert comparable(sql) == comparable(python)


def both_on(conn: Connection, since: datetime, until: datetime) -> tuple[Any, Any]:
    now = datetime.now(UTC)
    rows = report_rows.fetch(conn, since, until)
    python = report.build(rows, now=now, since=since, until=until, threshold=2.0)
    sql = report_sql.build(conn, now=now, since=since, until=until, threshold=2.0)
    return python, sql
