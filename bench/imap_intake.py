"""IMAP intake throughput: messages per second drained from a 5,000-message backlog.

The connector's rate (fetch with BODY.PEEK[], store and checkpoint in one commit per batch,
then MOVE to the archive folder) is reported as a ratio against a bare imapclient fetch of
the same backlog in the same run, against the same rootless Dovecot the tests use. Each run
seeds a fresh mailbox (the connector drains it), measures both sides on it, and the median
ratio over the runs is reported, so a noisy neighbour on the machine hits both sides alike.

    .venv/bin/python -m bench.imap_intake [--messages 5000] [--runs 3] [--database-url URL]

Without --database-url the store is SQLite in a temporary directory (WAL, synchronous=FULL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from connectors.imap.intake import ImapConnector
from connectors.imap.settings import ImapAccount, ImapSettings
from inbox import migrate
from inbox.db import make_engine
from inbox.models import Intake
from tests.support.dovecot import Dovecot, Mailbox, TokenEndpoint, make_certificates, make_mail

BATCH = 100
# A realistic short support mail: a paragraph of text, about 2 KiB with its headers.
BODY = (
    "Hello,\r\n\r\nsince this morning I cannot sign in: the app says my one-time code is "
    "invalid, and the reset link in your last mail says it expired.\r\n"
    * 12
    + "\r\nRegards,\r\nA customer\r\n"
)


def bare_fetch(mailbox: Mailbox) -> tuple[int, float]:
    """The baseline: what fetching alone costs, with the same client and batch size."""
    client = mailbox.client()
    try:
        started = time.perf_counter()
        client.select_folder("INBOX", readonly=True)
        uids = sorted(client.search(["ALL"]))
        fetched = 0
        for start in range(0, len(uids), BATCH):
            data = client.fetch(uids[start : start + BATCH], ["BODY.PEEK[]", "INTERNALDATE"])
            fetched += sum(1 for item in data.values() if item.get(b"BODY[]"))
        return fetched, time.perf_counter() - started
    finally:
        client.logout()


async def connector_drain(mailbox: Mailbox, url: str, total: int) -> float:
    engine = make_engine(url)
    migrate.upgrade(engine)
    settings = ImapSettings(
        enabled=True,
        batch_size=BATCH,
        accounts=[
            ImapAccount(
                name="bench",
                host="127.0.0.1",
                port=mailbox.server.imap_port,
                tls="none",
                username=mailbox.user,
                password_env="BENCH_IMAP_PASSWORD",  # noqa: S106 - a variable name
            )
        ],
    )
    connector = ImapConnector(settings, engine, environ={"BENCH_IMAP_PASSWORD": mailbox.password})
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(connector.run(stop))

    def stored() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Intake)).scalar_one())

    while True:
        folder = connector.health.details["accounts"]["bench"]["folders"]["INBOX"]
        if folder["backlog"] == 0 and folder["last_round_at"] and stored() >= total:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    engine.dispose()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parity-bench-"))
    tokens = TokenEndpoint()
    server = Dovecot(make_certificates(work / "certs"), tokens)
    server.start()
    mails = [make_mail(i, domain="bench.example", body=BODY) for i in range(args.messages)]
    runs: list[dict[str, float]] = []
    try:
        for run in range(args.runs):
            mailbox = server.add_user()
            mailbox.append("INBOX", mails)
            bare_fetch(mailbox)  # warm-up: Dovecot builds its index and cache
            fetched, bare_s = bare_fetch(mailbox)
            assert fetched == args.messages, fetched
            url = args.database_url or f"sqlite:///{work / f'bench{run}.db'}"
            if args.database_url:
                _empty(url)
            ours_s = asyncio.run(connector_drain(mailbox, url, args.messages))
            assert not mailbox.uids("INBOX"), "the backlog was not drained"
            bare_rate, ours_rate = args.messages / bare_s, args.messages / ours_s
            runs.append({"bare": bare_rate, "ours": ours_rate, "ratio": ours_rate / bare_rate})
            print(
                f"run {run + 1}: connector {ours_rate:.0f} msg/s, bare fetch "
                f"{bare_rate:.0f} msg/s, ratio {ours_rate / bare_rate:.2f}",
                flush=True,
            )
    finally:
        server.remove()
        tokens.close()
    median = statistics.median(r["ratio"] for r in runs)
    result = {
        "messages": args.messages,
        "message_bytes": len(mails[0]),
        "store": (args.database_url or "sqlite").split(":", 1)[0],
        "runs": len(runs),
        "bare_fetch_msgs_per_s": round(statistics.median(r["bare"] for r in runs)),
        "connector_msgs_per_s": round(statistics.median(r["ours"] for r in runs)),
        "ratio_median": round(median, 3),
        "ratio_range": [
            round(min(r["ratio"] for r in runs), 3),
            round(max(r["ratio"] for r in runs), 3),
        ],
    }
    print(json.dumps(result))
    return 0


def _empty(url: str) -> None:
    """Start each run on an empty PostgreSQL store, as the SQLite runs do."""
    from sqlalchemy import text

    from inbox.models import Base

    engine = make_engine(url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
