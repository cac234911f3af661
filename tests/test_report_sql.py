"""The PostgreSQL report (inbox/report_sql.py) gives the Python path's figures, exactly, on
the tests' data sets: the known-answer seed of tests/test_audit_report.py (on both parity
measures) and the cases made through the real intake, normalizer and replies of
tests/test_turns.py. The Python path is the oracle; its own figures are checked by hand there.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from inbox import report, report_rows, report_sql
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
    python.pop("generated_at"), sql.pop("generated_at")
    # The ages of the oldest open cases count from each path's own "now".
    for data in (python, sql):
        for groups in (data["channels"], data["sides"], data["agents"], {"": data["total"]}):
            for figures in groups.values():
                for key in ("oldest_open_age_s", "oldest_unanswered_age_s"):
                    figures[key] = figures[key] is not None
    assert sql == python


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
        data = report_sql.compute(
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
        data = report_sql.compute(
            conn, now=now, since=now - timedelta(days=30), until=now, threshold=2.0
        )
    # Buckets: <15 min, 15 min-1 h, 1-4 h, 4-8 h, 8-24 h, 1-3 days, 3 days and more.
    assert data["histogram"]["channels"]["sms"] == [2, 1, 1, 1, 0, 1, 1]
