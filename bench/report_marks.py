"""What the report's day marks (migration 0029) cost the writers: intake's and the agents'
transactions on PostgreSQL, with the marking triggers on and off, in the same run.

Each round times, in transactions of one statement each as intake and the inbox make them:
  - a new case (the statement-level trigger: one mark per statement);
  - an update the report reads (a follow-up counted: the row trigger fires, one mark);
  - an update it does not read (the last activity time: the WHEN clause keeps the trigger
    from firing at all);
  - a new later turn.
once with the triggers enabled and once with them disabled (ALTER TABLE ... DISABLE TRIGGER),
alternating, and prints each kind's median time per transaction and the ratio on/off.

    .venv/bin/python bench/report_marks.py [--rows 2000] [--rounds 5]

Needs PostgreSQL (PARITY_BENCH_PG, else PARITY_TEST_PG, else postgres@127.0.0.1:5432). It
creates and drops its own database. Not run by CI.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Connection, Engine, text

from bench.pg_scratch import load_average, scratch_database

TRIGGERS = {
    "cases": ("report_new_cases", "report_case_changed"),
    "case_turns": ("report_new_turns",),
}

NEW_CASE = """
INSERT INTO cases (reference, token, contact_id, status, channel, subject, due_at,
                   first_inbound_at, last_activity_at, created_at, followups, reopens)
VALUES ('C-' || :n, 'tttttttttttt', 1, 'new', 'email', 'bench', now() + interval '4 hours',
        now(), now(), now(), 0, 0)
"""
READ_UPDATE = "UPDATE cases SET followups = followups + 1 WHERE id = :id"
UNREAD_UPDATE = "UPDATE cases SET last_activity_at = clock_timestamp() WHERE id = :id"
NEW_TURN = """
INSERT INTO case_turns (case_id, seq, started_at, due_at)
VALUES (:id, :n, now(), now() + interval '4 hours')
"""


def switch(engine: Engine, on: bool) -> None:
    with engine.begin() as conn:
        for table, triggers in TRIGGERS.items():
            for trigger in triggers:
                verb = "ENABLE" if on else "DISABLE"
                conn.execute(text(f"ALTER TABLE {table} {verb} TRIGGER {trigger}"))


def per_transaction(
    engine: Engine, rows: int, statement: Callable[[Connection, int], object]
) -> float:
    """Seconds per transaction of one statement, over `rows` transactions."""
    with engine.connect() as conn:
        started = time.perf_counter()
        for n in range(rows):
            statement(conn, n)
            conn.commit()
        return (time.perf_counter() - started) / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with scratch_database("parity_bench_marks") as engine:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO contacts (name, created_at) VALUES ('b', now())"))
        serial = iter(range(10**9))
        kinds: dict[str, Callable[[Connection, int], object]] = {
            "new case": lambda c, n: c.execute(text(NEW_CASE), {"n": next(serial)}),
            "update the report reads": lambda c, n: c.execute(text(READ_UPDATE), {"id": 1 + n}),
            "update it does not read": lambda c, n: c.execute(text(UNREAD_UPDATE), {"id": 1 + n}),
            "new later turn": lambda c, n: c.execute(
                text(NEW_TURN), {"id": 1 + n, "n": 1 + next(serial)}
            ),
        }
        times: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.rounds):
            for on in (True, False):
                switch(engine, on)
                for name, statement in kinds.items():
                    took = per_transaction(engine, args.rows, statement)
                    times.setdefault((name, on), []).append(took)
        switch(engine, True)
        print(f"{'transaction':<26} {'marks on':>10} {'marks off':>10} {'on/off':>7}")
        for name in kinds:
            with_marks = statistics.median(times[(name, True)])
            without = statistics.median(times[(name, False)])
            print(
                f"{name:<26} {with_marks * 1e6:8.0f} µs {without * 1e6:8.0f} µs"
                f" {with_marks / without:6.2f}x"
            )
        print(f"load average {load_average()}")


if __name__ == "__main__":
    main()
