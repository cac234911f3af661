"""What an open page's live stream asks every second (`inbox.notifications.signature`: my
newest notification and my unread count) for an agent who has had many notifications, as a
ratio against a bare primary-key lookup timed in the same run, with the statement used
before migration 0028 (the count taken beside the newest, over every one of the agent's
notifications) timed beside it.

    .venv/bin/python bench/notifications.py [--notifications 100000] [--unread 10] [--runs 300]

SQLite in a temporary directory and PostgreSQL (PARITY_BENCH_PG, else PARITY_TEST_PG, else
postgres@127.0.0.1:5432, a database of its own, dropped after). Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, func, insert, select, text

from bench.pg_scratch import load_average, scratch_database
from inbox import migrate, notifications
from inbox.db import make_engine
from inbox.models import Case, Contact, Notification, User


def load(engine: Engine, count: int, unread: int) -> int:
    """One agent with `count` notifications, the newest `unread` of them unread, and a few
    other agents with some of their own; the agent's id."""
    at = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        contact = conn.execute(
            insert(Contact).values(name="bench", created_at=at).returning(Contact.id)
        ).scalar_one()
        case = conn.execute(
            insert(Case)
            .values(
                contact_id=contact,
                status="open",
                channel="email",
                subject="bench",
                due_at=at,
                created_at=at,
                last_activity_at=at,
                first_inbound_at=at,
                token="t" * 32,
            )
            .returning(Case.id)
        ).scalar_one()
        users = [
            conn.execute(
                insert(User)
                # No hash a password could match: these agents never sign in.
                .values(name=f"agent{n}", password_hash="!", role="agent")  # noqa: S106
                .returning(User.id)
            ).scalar_one()
            for n in range(4)
        ]
        for user, many, fresh in ((users[0], count, unread), *((u, 1000, 5) for u in users[1:])):
            for start in range(0, many, 10_000):
                rows = [
                    {
                        "user_id": user,
                        "case_id": case,
                        "kind": "answered",
                        "turn": n,
                        "created_at": at,
                        "read_at": None if n >= many - fresh else at,
                    }
                    for n in range(start, min(many, start + 10_000))
                ]
                conn.execute(insert(Notification), rows)
        conn.execute(text("ANALYZE"))
    return int(users[0])


def before_query(user_id: int) -> Any:
    """The statement `signature` ran before migration 0028."""
    return select(
        func.max(Notification.id), func.count().filter(Notification.read_at.is_(None))
    ).where(Notification.user_id == user_id)


def median_ms(engine: Engine, make: Callable[[], Any], runs: int) -> float:
    times = []
    with engine.connect() as conn:
        for _ in range(runs):
            started = time.perf_counter()
            conn.execute(make()).one()
            times.append(time.perf_counter() - started)
        conn.rollback()
    return 1000 * statistics.median(times)


def measure(engine: Engine, count: int, unread: int, runs: int) -> dict[str, Any]:
    user = load(engine, count, unread)
    assert notifications.signature(engine, user)[1] == unread
    # Interleaved rounds, so the machine's load falls on all three alike.
    rounds: dict[str, list[float]] = {"baseline": [], "signature": [], "before": []}
    for _ in range(3):
        rounds["baseline"].append(
            median_ms(engine, lambda: select(User.id).where(User.id == user), runs)
        )
        rounds["signature"].append(
            median_ms(engine, lambda: notifications.signature_query(user), runs)
        )
        rounds["before"].append(median_ms(engine, lambda: before_query(user), runs))
    ms = {k: statistics.median(v) for k, v in rounds.items()}
    return {
        "notifications": count,
        "unread": unread,
        "baseline_ms": round(ms["baseline"], 4),
        "signature_ms": round(ms["signature"], 4),
        "before_ms": round(ms["before"], 4),
        "signature_over_baseline": round(ms["signature"] / ms["baseline"], 2),
        "before_over_baseline": round(ms["before"] / ms["baseline"], 2),
        "load_average": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notifications", type=int, default=100_000)
    parser.add_argument("--unread", type=int, default=10)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="parity-bench-notify-") as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        migrate.upgrade(engine)
        try:
            results["sqlite"] = measure(engine, args.notifications, args.unread, args.runs)
        finally:
            engine.dispose()
    with scratch_database("parity_bench_notify") as engine:
        results["postgresql"] = measure(engine, args.notifications, args.unread, args.runs)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
