"""Satisfaction results (`inbox.csat.csat_by`, every dimension) at scale on PostgreSQL, as a
ratio against the bare GROUP BY that only counts surveys per channel, timed in the same run.

csat_by counts per (group, rating) in SQL and folds a few dozen rows in Python; the baseline
is `SELECT case_channel, count(*) FROM csat_surveys WHERE asked_at in the period GROUP BY
case_channel`. The report's three dimensions (channel, side, agent with the users join) are
three such queries, so about 3x is the expected figure.

    .venv/bin/python bench/csat_report.py [--surveys 1000000] [--runs 5]

Needs PostgreSQL (PARITY_BENCH_PG, else PARITY_TEST_PG, else postgres@127.0.0.1:5432). It
creates and drops its own database. Not run by CI.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text

from bench.pg_scratch import load_average, scratch_database
from inbox import csat
from inbox.models import utcnow

GROUP_BY = """
SELECT case_channel, count(*) FROM csat_surveys
WHERE asked_at >= :since AND asked_at < :until AND state <> 'skipped'
GROUP BY case_channel
"""


def load(engine: Engine, surveys: int) -> None:
    """One resolved case per survey over 29 days on five channels, four agents; every third
    survey unanswered, the others rated 1-5 by a fixed pattern."""
    # Only integers are formatted into these statements.
    statements = [
        "INSERT INTO contacts (name, created_at) VALUES ('bench', now())",
        """INSERT INTO users (name, role, password_hash, disabled, created_at)
           SELECT 'agent' || g, 'agent', 'x', false, now() FROM generate_series(1, 4) g""",
        f"""INSERT INTO cases (reference, token, contact_id, status, channel, subject, due_at,
                               first_inbound_at, resolved_at, last_activity_at, created_at,
                               followups)
            SELECT 'C-' || lpad(g::text, greatest(6, length(g::text)), '0'), 'abcdefghijkl', 1,
                   'resolved', (ARRAY['email','sms','voice','twitter','reddit'])[1 + g % 5],
                   'Case ' || g, t, t, t + interval '1 hour', t, t, 0
            FROM (SELECT g, now() - interval '29 days'
                            + (g * 2505600.0 / {surveys}) * interval '1 second' AS t
                  FROM generate_series(1, {surveys}) g) s""",  # noqa: S608
        """INSERT INTO csat_surveys (case_id, contact_id, case_channel, channel, side, agent_id,
                                     mode, state, language, asked_at, rating, answered_at)
            SELECT id, 1, channel, channel,
                   CASE WHEN channel IN ('twitter', 'reddit') THEN 'public' ELSE 'private' END,
                   1 + id % 4, 'link',
                   CASE WHEN id % 3 = 0 THEN 'asked' ELSE 'answered' END, 'en',
                   resolved_at + interval '1 hour',
                   CASE WHEN id % 3 = 0 THEN NULL ELSE 1 + (id * 7) % 5 END,
                   CASE WHEN id % 3 = 0 THEN NULL ELSE resolved_at + interval '2 hours' END
            FROM cases""",
    ]
    with engine.begin() as conn:
        for statement in statements:
            started = time.perf_counter()
            conn.execute(text(statement))
            print(
                f"  {statement.split()[2]:<12} {time.perf_counter() - started:6.1f} s", flush=True
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("cases", "csat_surveys", "users"):
            conn.execute(text(f"VACUUM (ANALYZE) {table}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--surveys", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with scratch_database("parity_bench_csat") as engine:
        print(f"loading {args.surveys:,} surveys", flush=True)
        load(engine, args.surveys)
        until = utcnow() + timedelta(days=1)
        since = until - timedelta(days=31)
        baseline, reports = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(text(GROUP_BY), {"since": since, "until": until}).all()
            baseline.append(time.perf_counter() - started)
            started = time.perf_counter()
            data = csat.report(engine, since, until)
            reports.append(time.perf_counter() - started)
            assert data["total"]["asked"] == args.surveys, data["total"]["asked"]
        group_by, whole = statistics.median(baseline), statistics.median(reports)
        print(f"GROUP BY baseline            {group_by:8.3f} s")
        print(f"csat report (3 dimensions)   {whole:8.3f} s")
        print(f"ratio report/GROUP BY        {whole / group_by:8.2f}x")
        print(f"CSAT of the bench data       {data['total']['csat_pct']} %")
        print(f"load average                 {load_average()}")


if __name__ == "__main__":
    main()
