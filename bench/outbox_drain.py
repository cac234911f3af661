"""Outbox drain: acknowledgements sent per second by the email drainer, against the same
messages sent bare to the same SMTP server, in one run.

The relay is aiosmtpd's `Sink` on 127.0.0.1 (it answers 250 and keeps nothing). In each
round, alternating so that a noisy machine weighs on all of them alike:
  A. bare: smtplib sends the N messages the drainer would compose, one connection each (as
     the relay sender does), with no database at all: the protocol's own cost;
  B. the drainer (`connectors.outbox.OutboxDrainer` with the real `SmtpRelaySender`) sends N
     queued acknowledgement rows: claim, send, record, with the leases of the rows still
     waiting renewed at most once a second (`RENEW_EVERY_S`, the shipped code);
  C. the same with `RENEW_EVERY_S = 0`: a renewal before every row after a batch's first,
     which is what the code before did (one UPDATE and a commit per row sent).
It prints each one's messages per second, the ratio of B and C to A, and the statements
the database ran per row sent.

    .venv/bin/python bench/outbox_drain.py                 # SQLite in a temporary directory
    .venv/bin/python bench/outbox_drain.py --pg            # PostgreSQL (PARITY_BENCH_PG, ...)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import smtplib
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Run as a script, the bench package's __init__ (which gives the run an audit key) is not
# imported by itself.
os.environ.setdefault("PARITY_AUDIT_KEY", "bench-" + secrets.token_hex(32))

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from sqlalchemy import Engine, delete, event, insert, select

import connectors.outbox as drain
from connectors.config import EmailRelaySettings, OutboxSettings
from connectors.mail.relay import SmtpRelaySender, compose_email, serialize
from inbox import migrate
from inbox.db import make_engine
from inbox.models import Outbox, OutboxAttempt, utcnow
from inbox.outbox import claim


def queue(engine: Engine, count: int, run: str) -> None:
    """`count` acknowledgement rows due now, each to its own person, as the planner queues
    them (no case: the drain's cost does not depend on one)."""
    now = utcnow() - timedelta(seconds=1)
    rows = [
        {
            "kind": "ack",
            "channel": "email",
            "recipient": f"person{n}.{run}@example.org",
            "subject": f"[#P-{n:06d}] We have your message",
            "body": f"Thanks, we have this as case P-{n:06d} and expect to reply within a day.",
            "message_id_header": f"ack.{run}.{n}@support.example.com",
            "payload": {"to_name": f"Person {n}"},
            "state": "queued",
            "next_attempt_at": now,
            "created_at": now,
        }
        for n in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Outbox), rows)


def clear(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(OutboxAttempt))
        conn.execute(delete(Outbox))


def settings_for(port: int) -> OutboxSettings:
    return OutboxSettings(
        batch_size=50,
        email=EmailRelaySettings(
            host="127.0.0.1",
            port=port,
            security="none",
            from_address="Support <support@support.example.com>",
            helo_name="bench.example.com",
        ),
    )


def bare(engine: Engine, port: int, settings: OutboxSettings) -> float:
    """Send what the drainer would, straight to the relay: seconds taken. The rows are
    claimed as the drainer claims them (so the messages are composed from the same
    `Claimed` rows), before the clock starts."""
    rows = claim(engine, "email", "bench-bare:1", limit=1_000_000, lease=timedelta(hours=1))
    messages = [(row.recipient, serialize(compose_email(row, settings.email))) for row in rows]
    started = time.perf_counter()
    for to, data in messages:
        conn_ = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.example.com", timeout=30)
        conn_.ehlo()
        conn_.sendmail("support@support.example.com", [to], data)
        conn_.quit()
    return time.perf_counter() - started


def drained(engine: Engine, settings: OutboxSettings, renew_every_s: float) -> tuple[float, int]:
    """Drain every queued row with the real drainer: seconds taken and statements run."""
    drainer = drain.OutboxDrainer(
        engine, SmtpRelaySender(settings.email, {}), settings, worker="bench:1"
    )
    statements = 0

    def count(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    saved = drain.RENEW_EVERY_S
    drain.RENEW_EVERY_S = renew_every_s
    event.listen(engine, "before_cursor_execute", count)
    started = time.perf_counter()
    try:
        while drainer.drain_once().sent:
            pass
    finally:
        seconds = time.perf_counter() - started
        event.remove(engine, "before_cursor_execute", count)
        drain.RENEW_EVERY_S = saved
    with engine.connect() as conn:
        left = conn.execute(select(Outbox.id).where(Outbox.state != "sent")).first()
    if left is not None:
        raise SystemExit(f"outbox row {left.id} was not sent: the run measured nothing")
    return seconds, statements


@contextmanager
def store(pg: bool) -> Iterator[Engine]:
    if pg:
        from bench.pg_scratch import scratch_database

        with scratch_database("parity_outbox_bench") as engine:
            yield engine
        return
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        migrate.upgrade(engine)
        try:
            yield engine
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="messages per variant a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    settings = settings_for(port)
    figures: dict[str, list[float]] = {"bare": [], "drain": [], "drain_renew_each_row": []}
    per_row: dict[str, float] = {}
    try:
        with store(args.pg) as engine:
            for round_ in range(args.rounds):
                for variant, renew_every in (
                    ("bare", None),
                    ("drain", drain.RENEW_EVERY_S),
                    ("drain_renew_each_row", 0.0),
                ):
                    clear(engine)
                    queue(engine, args.count, f"{round_}{variant[:1]}{len(variant)}")
                    if renew_every is None:
                        seconds = bare(engine, port, settings)
                    else:
                        seconds, statements = drained(engine, settings, renew_every)
                        per_row[variant] = round(statements / args.count, 2)
                    figures[variant].append(seconds)
    finally:
        controller.stop()
    median = {k: statistics.median(v) for k, v in figures.items()}
    print(
        json.dumps(
            {
                "database": "postgresql" if args.pg else "sqlite",
                "messages": args.count,
                "rounds": args.rounds,
                "msgs_per_s": {k: round(args.count / s, 1) for k, s in median.items()},
                "seconds_median": {k: round(s, 3) for k, s in median.items()},
                "drain_over_bare": round(median["drain"] / median["bare"], 2),
                "renew_each_row_over_bare": round(
                    median["drain_renew_each_row"] / median["bare"], 2
                ),
                "statements_per_row": per_row,
                # How shared the machine was: the 1, 5 and 15-minute load before and after.
                "loadavg_before": " ".join(f"{x:.2f}" for x in load_before),
                "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
