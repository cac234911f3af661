"""The manager audit report's time for 1,000,000 cases on PostgreSQL, as a ratio against one
GROUP BY query over the same rows, timed in the same run.

The report on PostgreSQL (inbox/report_sql.build) computes every figure in SQL: counts,
sums and exact percentiles (percentile_cont) per channel, side and agent, over the cases of
the period and their later turns (follow-ups), plus the weeks and the histogram. The
baseline is the cheapest honest SQL over the same rows: one
`SELECT channel, count(*), avg(first response) ... GROUP BY channel`.

With --python it also times the Python path (inbox/report_rows.fetch + inbox/report.build,
SQLite's path: every row read into Python) and checks both give the same figures.

The report's statements run at once on several connections under one snapshot
(report_sql.run_concurrently), so its time is about its longest statement's, not their sum.
With --explain it prints where the report's time goes: EXPLAIN ANALYZE of each statement
report_sql.build runs, each alone, against EXPLAIN ANALYZE of the baseline. With --floor it
times query shapes that a one-pass report would need (a hash aggregation over every case, the
later turns joined, a row per case and duration, the whole bucketed pass) against the
baseline in the same run: the least such a report could cost on this machine.

    .venv/bin/python bench/audit_report.py [--cases 1000000] [--runs 3] [--python]
        [--explain] [--floor]

Needs PostgreSQL (PARITY_BENCH_PG, else PARITY_TEST_PG, else postgres@127.0.0.1:5432). It
creates and drops its own database. Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, create_engine, event, text

from inbox import migrate, report, report_days, report_rows, report_sql
from inbox.db import make_engine
from inbox.models import utcnow
from inbox.report import BUCKET_EDGES

ADMIN = os.environ.get(
    "PARITY_BENCH_PG",
    os.environ.get("PARITY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
)

GROUP_BY = """
SELECT channel, count(*),
       avg(extract(epoch FROM first_response_at - first_inbound_at)),
       sum(CASE WHEN first_response_at <= due_at THEN 1 ELSE 0 END),
       sum(CASE WHEN first_response_at IS NULL AND status <> 'resolved' THEN 1 ELSE 0 END)
FROM cases WHERE first_inbound_at >= :since AND first_inbound_at < :until
GROUP BY channel
"""

# A case of an old day changes while nothing folds: the report reads that day from the
# cases. The change is its queue due time by a microsecond (the report judges the first
# response by first_due_at, which every bench case has), so the figures stay the others'.
# And back, then a fold, so the next run starts from folded days.
MARK_OLD_DAY = """
UPDATE cases SET due_at = due_at + interval '1 microsecond'
WHERE id = (SELECT min(id) FROM cases WHERE first_inbound_at >= now() - interval '27 days')
"""
UNMARK_OLD_DAY = MARK_OLD_DAY.replace("+ interval", "- interval")

# The five dimensions, as columns of the case (no join, no subquery per row).
_DIMS = "c.channel, c.side, c.language, COALESCE(c.assignee_id, c.first_responder_id), c.team_id"
_NAMED = (
    "c.channel AS d1, c.side AS d2, c.language AS d3,"
    " COALESCE(c.assignee_id, c.first_responder_id) AS d4, c.team_id AS d5"
)
_PERIOD = "c.first_inbound_at >= :since AND c.first_inbound_at < :until"
_TURNS = "LEFT JOIN case_turns t ON t.case_id = c.id AND t.seq >= 1"
_WEEK = "((c.first_inbound_at::date - DATE '2000-01-03') / 7)"
# A case's figures once per case: its turns' rows after the first repeat the case (the turns
# of a case are numbered 1, 2, ... without gaps: inbox/turns.py).
_ONCE = "(t.seq IS NULL OR t.seq = 1)"
# Only our own constants are formatted into these statements; the period is bound.
FLOOR = {
    "hash aggregation over every case, by the five dimensions": f"""
        SELECT {_DIMS}, count(*), sum(c.followups), min(c.first_inbound_at)
        FROM cases c WHERE {_PERIOD} GROUP BY 1, 2, 3, 4, 5""",  # noqa: S608
    "the same, the later turns joined": f"""
        SELECT {_DIMS}, count(*), count(t.seq), min(c.first_inbound_at)
        FROM cases c {_TURNS} WHERE {_PERIOD} GROUP BY 1, 2, 3, 4, 5""",  # noqa: S608
    "the same, four rows per case (one per duration), no expressions": f"""
        SELECT d1, d2, d3, d4, d5, k, count(*), min(first_inbound_at) FROM (
            SELECT {_NAMED}, c.first_inbound_at,
                   unnest(ARRAY[c.reopens::bigint, c.followups, c.reopens + 2,
                                c.followups + 7]) AS k
            FROM cases c {_TURNS} WHERE {_PERIOD}) AS r
        GROUP BY 1, 2, 3, 4, 5, 6""",  # noqa: S608
    "the whole pass: flags, six bucketed rows per case (week, duration bucket)": f"""
        SELECT d1, d2, d3, d4, d5, k, count(*), sum(followups), min(first_inbound_at) FROM (
            SELECT {_NAMED}, c.followups,
                   c.first_inbound_at,
                   unnest(ARRAY[
                     CASE WHEN {_ONCE} THEN ({_WEEK} * 8)::bigint * 65536
                       + (c.ack_state IS NOT NULL)::int + 2 * (c.ack_state = 'sent')::int
                       + 4 * (c.status <> 'resolved')::int
                       + 8 * (c.first_response_at IS NULL)::int
                       + 16 * COALESCE(c.first_response_at
                                       <= COALESCE(c.first_due_at, c.due_at), false)::int
                       + 32 * (COALESCE(c.first_due_at, c.due_at) < :now)::int
                       + 64 * (c.reopens > 0)::int + 128 * (c.ack_eta_at IS NOT NULL)::int
                       + 256 * COALESCE(c.ack_eta_at < :now, false)::int
                       + 512 * COALESCE(c.first_response_at <= c.ack_eta_at, false)::int END,
                     CASE WHEN {_ONCE} THEN ({_WEEK} * 8 + 1)::bigint * 65536 + width_bucket(
                       date_part('epoch', c.first_response_at - c.first_inbound_at), :edges) END,
                     CASE WHEN {_ONCE} AND c.status = 'resolved' THEN 2 * 65536 + width_bucket(
                       date_part('epoch', c.resolved_at - c.first_inbound_at), :edges) END,
                     CASE WHEN {_ONCE} THEN 3 * 65536 + width_bucket(
                       date_part('epoch', c.first_response_at - c.ack_eta_at), :edges) END,
                     ({_WEEK} * 8 + 4)::bigint * 65536 + width_bucket(
                       date_part('epoch', t.responded_at - t.started_at), :edges),
                     CASE WHEN t.seq IS NOT NULL THEN 5 * 65536
                       + (t.responded_at IS NOT NULL)::int + 2 * (t.closed_at IS NULL)::int
                       + 4 * COALESCE(t.due_at < :now, false)::int
                       + 8 * COALESCE(t.responded_at <= t.due_at, false)::int END]) AS k
            FROM cases c {_TURNS} WHERE {_PERIOD}) AS r
        WHERE k IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6""",  # noqa: S608
}


def bucket_edges() -> list[float]:
    """Whole seconds below 10 minutes, then buckets at most 0.5 % wide up to ten years, both
    signs, with the histogram's edges among them: the shape of a bucketed percentile."""
    edges = set(range(600)) | {int(e) for e in BUCKET_EDGES}
    edge = 600
    while edge < 10 * 366 * 86400:
        edges.add(edge)
        edge = edge * 1005 // 1000
    positive = sorted(edges)
    return [float(-e) for e in reversed(positive) if e > 0] + [float(e) for e in positive]


def explained(
    engine: Engine, statement: str, params: dict[str, object], settings: tuple[str, ...] = ()
) -> float:
    """The execution time PostgreSQL reports for one statement, in seconds."""
    with engine.connect() as conn:
        for setting in settings:
            conn.execute(text(setting))
        plan = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}"), params).scalar()
    found = plan if isinstance(plan, list) else json.loads(str(plan))
    return float(found[0]["Execution Time"]) / 1000


def explain(engine: Engine, now: datetime, since: datetime) -> None:
    """Each statement of report_sql.build, timed by EXPLAIN ANALYZE against the baseline."""
    seen: list[tuple[str, dict[str, object]]] = []

    def capture(
        conn: object, cursor: object, statement: str, params: object, *rest: object
    ) -> None:
        # The report's statements, not its settings, snapshot or names lookups (from every
        # connection it runs on: the listener is the engine's).
        if isinstance(params, dict) and "percentile_cont" in statement:
            seen.append((statement, dict(params)))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        for parity_on in report.PARITY_MEASURES:
            with engine.connect() as conn:
                report_sql.build(
                    conn, now=now, since=since, until=now, threshold=2.0, parity_on=parity_on
                )
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    period: dict[str, object] = {"since": since, "until": now}
    baseline = explained(engine, GROUP_BY, period)
    print(f"EXPLAIN ANALYZE: GROUP BY baseline {baseline:8.3f} s")
    done = set()
    for statement, params in seen:
        if statement in done:
            continue
        done.add(statement)
        # The driver's placeholders back to names SQLAlchemy's text() binds.
        sql = statement
        for name in params:
            sql = sql.replace(f"%({name})s", f":{name}")
        # Under the settings the report runs its statements with (report_sql.SETTINGS).
        took = explained(engine, sql, params, report_sql.SETTINGS)
        head = " ".join(statement.split())[:70]
        print(f"  {took:8.3f} s {took / baseline:6.1f}x  {head}")


def floor(engine: Engine, now: datetime, since: datetime, runs: int) -> None:
    """The query shapes of a one-pass report, each against the baseline in the same run."""
    params: dict[str, datetime] = {"since": since, "until": now, "now": now}
    # The report binds naive UTC (report_sql._naive): compared with the naive columns as they
    # are, where an aware value would convert every row through the session's time zone.
    naive: dict[str, object] = {
        k: v.astimezone(UTC).replace(tzinfo=None) for k, v in params.items()
    }
    edges = bucket_edges()
    for name, statement in FLOOR.items():
        ratios = []
        for _ in range(runs):
            with engine.connect() as conn:
                started = time.perf_counter()
                conn.execute(text(GROUP_BY), params).all()
                baseline = time.perf_counter() - started
                # Hash aggregation, as a one-pass report would ask for: the planner takes the
                # expressions' default of 200 values each (COALESCE, the week) for their
                # true handful and would sort the period's rows instead.
                conn.execute(text("SET LOCAL enable_sort = off"))
                started = time.perf_counter()
                conn.execute(text(statement), {**naive, "edges": edges}).all()
                ratios.append((time.perf_counter() - started) / baseline)
        print(f"  {statistics.median(ratios):6.1f}x  {name}")


def load(engine: Engine, cases: int) -> None:
    """Cases over the last 29 days on five channels, one inbound message each, an
    acknowledgement audit row with its ETA for half of them (fake HMACs: not verified here),
    turn 0 of every case and a follow-up turn for a third of them, and five agents."""
    # Only integers are formatted into these statements.
    statements = [
        "INSERT INTO contacts (name, created_at) VALUES ('bench', now())",
        """INSERT INTO users (name, role, password_hash, disabled, created_at)
            SELECT 'agent' || g, 'agent', 'x', false, now() FROM generate_series(1, 5) g""",
        f"""INSERT INTO cases (reference, token, contact_id, status, channel, subject, due_at,
                               first_inbound_at, first_response_at, resolved_at,
                               last_activity_at, created_at, followups, ack_state,
                               first_due_at, side, assignee_id)
            SELECT 'C-' || lpad(g::text, greatest(6, length(g::text)), '0'), 'abcdefghijkl', 1,
                   CASE WHEN g % 5 = 0 THEN 'new' WHEN g % 7 = 0 THEN 'open'
                        ELSE 'resolved' END,
                   (ARRAY['email','sms','voice','twitter','reddit'])[1 + g % 5],
                   'Case ' || g, t + interval '4 hours', t,
                   CASE WHEN g % 5 = 0 THEN NULL
                        ELSE t + ((g::bigint * 7919) % (3600 * (1 + g % 5) * 3))
                                 * interval '1 second'
                   END,
                   CASE WHEN g % 5 = 0 OR g % 7 = 0 THEN NULL ELSE t + interval '2 days' END,
                   t, t, g % 3, CASE WHEN g % 4 = 0 THEN NULL ELSE 'sent' END,
                   t + interval '4 hours',
                   CASE WHEN g % 5 IN (3, 4) THEN 'public' ELSE 'private' END,
                   CASE WHEN g % 6 = 0 THEN NULL ELSE 1 + g % 5 END
            FROM (SELECT g, now() - interval '29 days'
                            + (g * 2505600.0 / {cases}) * interval '1 second' AS t
                  FROM generate_series(1, {cases}) g) s""",  # noqa: S608
        """INSERT INTO messages (case_id, channel, direction, visibility, dedup_key,
                                 from_handle, from_name, subject, text, received_at, thread, meta)
            SELECT id, channel, 'inbound',
                   CASE WHEN channel IN ('twitter', 'reddit') THEN 'public' ELSE 'private' END,
                   'bench:' || id, 'customer', '', subject, 'help', first_inbound_at, '{}', '{}'
            FROM cases""",
        """INSERT INTO audit_log (at, actor, action, case_id, before, after, prev_hmac, hmac)
            SELECT first_inbound_at, 'system', 'acknowledgement.queued', id, NULL,
                   json_build_object('eta_at', to_char((first_inbound_at + interval '3 hours')
                                     AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US+00:00')),
                   repeat('0', 64), repeat('0', 64)
            FROM cases WHERE id % 2 = 0""",
        """UPDATE cases SET ack_eta_at = first_inbound_at + interval '3 hours'
            WHERE id % 2 = 0""",
        """INSERT INTO case_turns (case_id, seq, started_at, due_at, responded_at, responder_id)
            SELECT id, 0, first_inbound_at, first_due_at, first_response_at, assignee_id
            FROM cases""",
        """INSERT INTO case_turns (case_id, seq, started_at, due_at, responded_at)
            SELECT id, 1, first_inbound_at + interval '1 day',
                   first_inbound_at + interval '1 day 4 hours',
                   CASE WHEN id % 9 = 1 THEN NULL
                        ELSE first_inbound_at + interval '1 day'
                             + ((id * 4337) % 20000) * interval '1 second' END
            FROM cases WHERE id % 3 = 1""",
    ]
    with engine.begin() as conn:
        for statement in statements:
            started = time.perf_counter()
            conn.execute(text(statement))
            print(
                f"  {statement.split()[2]:<10} {time.perf_counter() - started:6.1f} s", flush=True
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("cases", "messages", "audit_log", "case_turns", "users"):
            conn.execute(text(f"VACUUM (ANALYZE) {table}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--python", action="store_true", help="also time the Python path")
    parser.add_argument("--explain", action="store_true", help="time each statement")
    parser.add_argument("--floor", action="store_true", help="time one-pass query shapes")
    args = parser.parse_args()
    name = f"parity_bench_audit_{secrets.token_hex(3)}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        print(f"loading {args.cases:,} cases", flush=True)
        load(engine, args.cases)
        started = time.perf_counter()
        folded = report_days.fold(engine)
        print(f"  rollups   {time.perf_counter() - started:6.1f} s ({len(folded.days)} days)")
        now = utcnow()
        since = report.parse_since("30d", now)
        baseline, rollup_runs, marked_runs, sql_runs, fetches, builds = [], [], [], [], [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(text(GROUP_BY), {"since": since, "until": now}).all()
            baseline.append(time.perf_counter() - started)
            started = time.perf_counter()
            with engine.connect() as conn:
                rolled = report_days.build(conn, now=now, since=since, until=now, threshold=2.0)
            rollup_runs.append(time.perf_counter() - started)
            assert rolled["total"]["volume"] == args.cases, rolled["total"]["volume"]
            # Between two folds: a case of an old day changed, so that day is read live.
            with engine.begin() as conn:
                conn.execute(text(MARK_OLD_DAY))
            started = time.perf_counter()
            with engine.connect() as conn:
                marked = report_days.build(conn, now=now, since=since, until=now, threshold=2.0)
            marked_runs.append(time.perf_counter() - started)
            with engine.begin() as conn:
                conn.execute(text(UNMARK_OLD_DAY))
            report_days.fold(engine)
            started = time.perf_counter()
            with engine.connect() as conn:
                data = report_sql.build(conn, now=now, since=since, until=now, threshold=2.0)
            sql_runs.append(time.perf_counter() - started)
            assert data["total"]["volume"] == args.cases, data["total"]["volume"]
            for one in (data, rolled, marked):
                one.pop("generated_at")
            print(f"  rollups and grouping sets equal (every figure): {rolled == data}")
            print(f"  with a day read live, equal: {marked == data}")
            if not args.python:
                continue
            started = time.perf_counter()
            with engine.connect() as conn:
                rows = report_rows.fetch(conn, since, now)
            fetched = time.perf_counter()
            python = report.build(rows, now=now, since=since, until=now, threshold=2.0)
            builds.append(time.perf_counter() - fetched)
            fetches.append(fetched - started)
            del rows
            python.pop("generated_at")
            print(f"  SQL and Python reports equal (every figure): {python == data}")
        group_by = statistics.median(baseline)
        sql = statistics.median(sql_runs)
        rollup, marked_day = statistics.median(rollup_runs), statistics.median(marked_runs)
        print(f"GROUP BY baseline     {group_by:8.3f} s")
        print(f"report from rollups   {rollup:8.3f} s  {rollup / group_by:6.2f}x")
        print(f"  one old day live    {marked_day:8.3f} s  {marked_day / group_by:6.2f}x")
        print(f"report, grouping sets {sql:8.3f} s  {sql / group_by:6.2f}x")
        if args.python:
            fetch, build = statistics.median(fetches), statistics.median(builds)
            print(f"Python path: fetch    {fetch:8.3f} s")
            print(f"Python path: compute  {build:8.3f} s")
            print(f"ratio Python/GROUP BY {(fetch + build) / group_by:8.1f}x")
        print(f"parity ratio of the bench data {data['parity_ratio']}")
        if args.explain:
            explain(engine, now, since)
        if args.floor:
            print("one-pass query shapes / GROUP BY (medians of the runs):")
            floor(engine, now, since, args.runs)
        with open("/proc/loadavg") as load_file:
            print(f"load average {load_file.read().split()[:3]}")
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


if __name__ == "__main__":
    main()
