"""Round trips to PostgreSQL per message normalized, counted in libpq's protocol trace.

Stores N mails (default 500: 100 people, each writing five, some replying to their own
earlier mail), then drains them with one Normalizer and counts every request the client
sent and waited on, on every connection the run opened (claims, loads, filing, commits):
each ends in a Query (simple protocol) or a Sync (extended protocol) message, as in
bench/claim_next.py. The figure is round trips per message; run it with --persist-batch 1
to see filing one message per transaction.

    .venv/bin/python bench/round_trips.py --pg postgresql+psycopg://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from typing import Any

# Run as a script, the bench package's __init__ (which gives the run an audit key) is not
# imported by itself.
os.environ.setdefault("PARITY_AUDIT_KEY", "bench-" + secrets.token_hex(32))

from sqlalchemy import create_engine, event, text

from connectors.registry import parser_table
from inbox import migrate
from inbox.config import StoreSettings
from inbox.db import make_engine
from normalizer.config import NormalizerSettings
from normalizer.intake import RawInput, store
from normalizer.worker import Normalizer

DATE = "Mon, 02 Nov 2026 10:00:00 +0000"


def mail(n: int, people: int) -> bytes:
    person = n % people
    reply = f"In-Reply-To: <rt-{n - people}@example.org>\n" if n >= people and n % 2 else ""
    return (
        f"From: Person {person} <p{person}@example.org>\n"
        "To: help@support.example.com\n"
        f"Subject: Question number {n} about my account\n"
        f"Message-ID: <rt-{n}@example.org>\n{reply}"
        f"Date: {DATE}\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        f"Hello, this is message {n}. I cannot sign in since the last update and the\n"
        "reset link in the mail I got has expired. Could you help me, please?\n"
    ).encode()


def measure(url: str, count: int, persist_batch: int | None) -> dict[str, Any]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    store(
        engine,
        [
            RawInput("import", "email", f"rt:{n}", mail(n, max(1, count // 5)), acknowledge=False)
            for n in range(count)
        ],
    )
    engine.dispose()
    trace = tempfile.TemporaryFile("w+")  # noqa: SIM115 - shared by every connection below

    @event.listens_for(engine, "connect")
    def _trace(dbapi_connection: Any, _record: Any) -> None:
        from psycopg import pq

        pgconn = dbapi_connection.pgconn
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    options = {} if persist_batch is None else {"persist_batch": persist_batch}
    normalizer = Normalizer(
        engine, StoreSettings(), NormalizerSettings(**options), parsers=parser_table()
    )
    started = time.perf_counter()
    outcomes = normalizer.drain()
    seconds = time.perf_counter() - started
    engine.dispose()
    trace.seek(0)
    sent = [line.split("\t") for line in trace.read().splitlines()]
    trips = sum(1 for f in sent if len(f) > 2 and f[0] == "F" and f[2].strip() in ("Query", "Sync"))
    done = sum(1 for o in outcomes if o.state == "done")
    return {
        "messages": done,
        "round_trips": trips,
        "round_trips_per_message": round(trips / max(1, done), 2),
        "messages_per_s": round(done / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", required=True, help="PostgreSQL admin URL")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--persist-batch", type=int, default=None)
    args = parser.parse_args()
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    name = f"parity_trips_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = args.pg.rsplit("/", 1)[0] + f"/{name}"
        result = measure(url, args.count, args.persist_batch)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
