"""The manager audit report's time for 1,000,000 cases on PostgreSQL, as a ratio against one
GROUP BY query over the same rows, timed in the same run.

The report on PostgreSQL (inbox/report_sql.build) computes every figure in SQL: counts,
sums and exact percentiles (percentile_cont) per channel, side and agent, over the cases of
the period and their later turns (follow-ups), plus the weeks and the histogram. The
baseline is the cheapest honest SQL over the same rows: one
`SELECT channel, count(*), avg(first response) ... GROUP BY channel`.

With --python it also times the Python path (inbox/report_rows.fetch + inbox/report.build,
SQLite's path: every row read into Python) and checks both give the same figures.

    .venv/bin/python bench/audit_report.py [--cases 1000000] [--runs 3] [--python]

Needs PostgreSQL (PARITY_BENCH_PG, else PARITY_TEST_PG, else postgres@127.0.0.1:5432). It
creates and drops its own database. Not run by CI.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, create_engine, text

from inbox import migrate, report, report_rows, report_sql
from inbox.db import make_engine
from inbox.models import utcnow

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
        now = utcnow()
        since = report.parse_since("30d", now)
        baseline, sql_runs, fetches, builds = [], [], [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(text(GROUP_BY), {"since": since, "until": now}).all()
            baseline.append(time.perf_counter() - started)
            started = time.perf_counter()
            with engine.connect() as conn:
                data = report_sql.build(conn, now=now, since=since, until=now, threshold=2.0)
            sql_runs.append(time.perf_counter() - started)
            assert data["total"]["volume"] == args.cases, data["total"]["volume"]
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
            for key in ("generated_at",):
                python.pop(key), data.pop(key)
            same = python["channels"] == data["channels"] and python["weeks"] == data["weeks"]
            print(f"  SQL and Python figures per channel and week equal: {same}")
        group_by = statistics.median(baseline)
        sql = statistics.median(sql_runs)
        print(f"GROUP BY baseline     {group_by:8.3f} s")
        print(f"report in SQL         {sql:8.3f} s")
        print(f"ratio report/GROUP BY {sql / group_by:8.1f}x")
        if args.python:
            fetch, build = statistics.median(fetches), statistics.median(builds)
            print(f"Python path: fetch    {fetch:8.3f} s")
            print(f"Python path: compute  {build:8.3f} s")
            print(f"ratio Python/GROUP BY {(fetch + build) / group_by:8.1f}x")
        print(f"parity ratio of the bench data {data['parity_ratio']}")
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
