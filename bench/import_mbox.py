"""Import speed: messages per second for an mbox into an empty store and into a full one.

Baseline and comparison in the same run, on the same machine:
  A. import N messages (default 10,000) from an mbox into an empty, migrated store;
  B. fill the store with FILL more messages (default 100,000) and everything they come with
     (intake rows, blobs, receipts, contacts, identities, cases, message refs), then import N
     new messages, a third of them from senders already in the store (follow-ups);
  C. import the file of B again (every message a duplicate).
It prints messages per second for each and the ratio of B's per-message cost to A's: the goal
is a ratio near 1, a per-message cost that stays flat as the store grows.

The fill is written with bulk inserts, not through the normalizer: 100,000 messages through
the normalizer would take about ten minutes here and would measure nothing more, since the
import's cost depends on the rows and indexes present, not on how they got there.

    .venv/bin/python bench/import_mbox.py                       # SQLite in a temp dir
    .venv/bin/python bench/import_mbox.py --pg postgresql+psycopg://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, func, insert, select, text

# Run as a script, the bench package's __init__ (which gives the run an audit key, as
# every part that writes the audit log needs one) is not imported by itself.
os.environ.setdefault("PARITY_AUDIT_KEY", "bench-" + secrets.token_hex(32))

# The repository root, for the bench package (run as a script, only bench/ is on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report_marks import switch
from connectors.registry import parser_table
from inbox import migrate
from inbox.config import StoreSettings
from inbox.db import make_engine
from inbox.models import (
    Blob,
    Case,
    Contact,
    Identity,
    Intake,
    Message,
    MessageRef,
    Receipt,
)
from normalizer import backfill
from normalizer.worker import Normalizer

DATE = "Mon, 02 Nov 2026 10:00:00 +0000"


def raw_message(n: int, sender: int) -> str:
    return (
        f"From: Person {sender} <p{sender}@example.org>\n"
        "To: help@support.example.com\n"
        f"Subject: Question number {n} about my account\n"
        f"Message-ID: <bench-{n}@example.org>\n"
        f"Date: {DATE}\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        f"Hello, this is message {n}. I cannot sign in since the last update and the\n"
        "reset link in the mail I got has expired. Could you help me, please?\n"
    )


def write_mbox(path: Path, numbers: range, sender_of: Any) -> None:
    with path.open("w") as out:
        for n in numbers:
            out.write("From MAILER-DAEMON Mon Nov  2 10:00:00 2026\n")
            out.write(raw_message(n, sender_of(n)) + "\n")


def run_import(
    engine: Engine, path: Path, batch: int | None = None
) -> tuple[float, float, backfill.ImportSummary]:
    """(wall seconds, CPU seconds of this process, summary) of importing `path`.

    This process reads the mbox, stores the intake rows and files every message; the parse
    runs in the pool's child processes. Its CPU time is the figure a loaded machine
    disturbs least (wall time there is mostly waiting for a core).
    """
    normalizer = Normalizer(engine, StoreSettings(), parsers=parser_table())
    started, cpu = time.perf_counter(), time.process_time()  # reading the mbox is part of it
    _total, messages = backfill.mbox_messages(path)
    summary = backfill.import_messages(
        engine,
        normalizer,
        messages,
        origin=path.name,
        batch_size=backfill.IMPORT_BATCH if batch is None else batch,
    )
    return time.perf_counter() - started, time.process_time() - cpu, summary


def _chunks(rows: list[dict[str, Any]], size: int = 2000) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def fill(engine: Engine, count: int, first_number: int) -> None:
    """Add `count` messages with all their rows, two messages per case, most cases resolved."""
    now = datetime.now(UTC)
    with engine.connect() as conn:
        base = {
            model.__tablename__: int(conn.execute(select(func.max(model.id))).scalar() or 0)
            for model in (Intake, Contact, Identity, Case, Message, MessageRef, Receipt)
        }
    tables: dict[str, list[dict[str, Any]]] = {
        name: []
        for name in (
            "blobs",
            "contacts",
            "identities",
            "cases",
            "messages",  # before intake: intake rows point at their messages
            "intake",
            "message_refs",
            "receipts",
        )
    }
    cases = count // 2
    for c in range(cases):
        contact_id = base["contacts"] + c + 1
        identity_id = base["identities"] + c + 1
        case_id = base["cases"] + c + 1
        sender = 1_000_000 + c  # senders no import message uses
        opened = now - timedelta(days=60, minutes=c)
        resolved = c % 20 != 0
        tables["contacts"].append(
            {"id": contact_id, "name": f"Person {sender}", "created_at": opened}
        )
        tables["identities"].append(
            {
                "id": identity_id,
                "kind": "email",
                "handle": f"p{sender}@example.org",
                "display_name": f"Person {sender}",
                "contact_id": contact_id,
                "verified": False,
                "facts": {},
                "created_at": opened,
            }
        )
        tables["cases"].append(
            {
                "id": case_id,
                "reference": f"C-{case_id:06d}",
                "token": secrets.token_hex(6),
                "contact_id": contact_id,
                "status": "resolved" if resolved else "open",
                "channel": "email",
                "subject": f"Question {c}",
                "due_at": opened + timedelta(hours=4),
                "due_rule": None,
                "first_inbound_at": opened,
                "first_response_at": opened + timedelta(hours=2) if resolved else None,
                "resolved_at": opened + timedelta(days=1) if resolved else None,
                "last_activity_at": opened,
                "created_at": opened,
                "claims_reference": None,
                "linked_case_id": None,
                "followups": 1,
                "ack_state": "sent",
                "ack_reason": None,
            }
        )
        for k in range(2):
            n = first_number + 2 * c + k
            raw = raw_message(n, sender).encode()
            digest = hashlib.sha256(raw).hexdigest()
            intake_id = base["intake"] + 2 * c + k + 1
            message_id = base["messages"] + 2 * c + k + 1
            tables["blobs"].append(
                {"sha256": digest, "size": len(raw), "data": raw, "created_at": opened}
            )
            tables["intake"].append(
                {
                    "id": intake_id,
                    "connector": "smtp",
                    "channel": "email",
                    "source_key": f"smtp:{digest}",
                    "raw_sha256": digest,
                    "envelope": {},
                    "received_at": opened,
                    "state": "done",
                    "claimed_by": None,
                    "claimed_until": None,
                    "attempts": 1,
                    "processed_at": opened,
                    "message_id": message_id,
                    "acknowledge": True,
                }
            )
            tables["messages"].append(
                {
                    "id": message_id,
                    "case_id": case_id,
                    "identity_id": identity_id,
                    "channel": "email",
                    "direction": "inbound",
                    "visibility": "private",
                    "dedup_key": f"email:bench-{n}@example.org:{digest[:40]}",
                    "external_id": f"bench-{n}@example.org",
                    "from_handle": f"p{sender}@example.org",
                    "from_name": f"Person {sender}",
                    "subject": f"Question number {n}",
                    "text": raw.decode().split("\n\n", 1)[1],
                    "html": None,
                    "sent_at": opened,
                    "received_at": opened,
                    "raw_sha256": digest,
                    "thread": {"in_reply_to": [], "references": [], "conversation": []},
                    "automated": None,
                    "meta": {},
                }
            )
            tables["message_refs"].append(
                {
                    "id": base["message_refs"] + 2 * c + k + 1,
                    "ref": f"bench-{n}@example.org",
                    "case_id": case_id,
                    "message_id": message_id,
                }
            )
            tables["receipts"].append(
                {
                    "id": base["receipts"] + 2 * c + k + 1,
                    "message_id": message_id,
                    "intake_id": intake_id,
                    "connector": "smtp",
                    "address": "help@support.example.com",
                    "received_at": opened,
                }
            )
    models = {
        "blobs": Blob,
        "contacts": Contact,
        "identities": Identity,
        "cases": Case,
        "intake": Intake,
        "messages": Message,
        "message_refs": MessageRef,
        "receipts": Receipt,
    }
    with engine.begin() as conn:
        for name, rows in tables.items():
            for chunk in _chunks(rows):
                conn.execute(insert(models[name]), chunk)
        if conn.dialect.name == "postgresql":
            # Explicit ids were inserted: move each sequence past them. Names are our tables.
            for name in models:
                if name != "blobs":
                    setval = f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), max(id))"
                    conn.execute(text(setval + f" FROM {name}"))
            conn.execute(text("ANALYZE"))


def _bound(filing_cpu: float, parse_cpu: float, count: int) -> float:
    """Messages a second two idle cores could reach at this CPU cost (filing and parse
    processes; the database server's own CPU is not counted): what a loaded machine's
    wall time cannot show."""
    return round(2 * count / (filing_cpu + parse_cpu), 1)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="messages per import")
    parser.add_argument("--fill", type=int, default=100_000, help="messages in the full store")
    parser.add_argument("--pg", help="PostgreSQL admin URL; a scratch database is made there")
    parser.add_argument(
        "--batch", type=int, help="messages stored and filed per import step (default: parity's)"
    )
    parser.add_argument(
        "--without-report-marks",
        action="store_true",
        help="PostgreSQL: disable the report's day-marking triggers (migration 0029), to"
        " measure what they cost intake against a run with them",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="parity-bench-import-") as tmp:
        work = Path(tmp)
        if args.pg:
            name = f"parity_bench_import_{os.getpid()}"
            admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = args.pg.rsplit("/", 1)[0] + f"/{name}"
        else:
            url = f"sqlite:///{work / 'bench.db'}"
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            if args.pg and args.without_report_marks:
                switch(engine, on=False)
            first, second = work / "first.mbox", work / "second.mbox"
            count = args.count
            # A: distinct senders, as a first backfill of a mailbox would have.
            write_mbox(first, range(count), lambda n: n % (count // 2))
            # B: a third of the senders are people from A (their mail threads into cases).
            write_mbox(
                second,
                range(count, 2 * count),
                lambda n: n % (count // 6) if n % 3 == 0 else 500_000 + n,
            )

            a_time, a_cpu, a = run_import(engine, first, args.batch)
            fill_started = time.perf_counter()
            fill(engine, args.fill, first_number=10 * count)
            fill_time = time.perf_counter() - fill_started
            with engine.connect() as conn:
                held = int(conn.execute(select(func.count()).select_from(Message)).scalar_one())
            b_time, b_cpu, b = run_import(engine, second, args.batch)
            c_time, c_cpu, c = run_import(engine, second, args.batch)
        finally:
            engine.dispose()
            if args.pg:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                admin.dispose()

    result = {
        "database": "postgresql" if args.pg else "sqlite",
        "messages_per_import": count,
        "report_marks": not args.without_report_marks,
        "batch": args.batch or backfill.IMPORT_BATCH,
        "empty_store": {
            "seconds": round(a_time, 1),
            "msgs_per_s": round(count / a_time, 1),
            "filing_cpu_ms_per_msg": round(1000 * a_cpu / count, 2),
            "parse_cpu_ms_per_msg": round(1000 * a.parse_cpu_seconds / count, 2),
            "cpu_bound_msgs_per_s_on_2_cores": _bound(a_cpu, a.parse_cpu_seconds, count),
            "imported": a.imported,
        },
        "store_holding": held,
        "fill_seconds": round(fill_time, 1),
        "full_store": {
            "seconds": round(b_time, 1),
            "msgs_per_s": round(count / b_time, 1),
            "filing_cpu_ms_per_msg": round(1000 * b_cpu / count, 2),
            "parse_cpu_ms_per_msg": round(1000 * b.parse_cpu_seconds / count, 2),
            "cpu_bound_msgs_per_s_on_2_cores": _bound(b_cpu, b.parse_cpu_seconds, count),
            "imported": b.imported,
        },
        "reimport_all_duplicates": {
            "seconds": round(c_time, 1),
            "msgs_per_s": round(count / c_time, 1),
            "filing_cpu_ms_per_msg": round(1000 * c_cpu / count, 2),
            "duplicates": c.duplicates,
        },
        "per_message_cost_ratio_full_over_empty": round(b_time / a_time, 2),
        "filing_cpu_ratio_full_over_empty": round(b_cpu / a_cpu, 2),
        "loadavg": _loadavg(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
