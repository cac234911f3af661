"""Normalizer throughput: messages filed per second from a stored backlog, by worker processes.

    .venv/bin/python bench/normalize.py                      # 100,000 mails, 1, 2, 4 processes
    .venv/bin/python bench/normalize.py --messages 5000      # a quick run

A backlog of realistic mails (bench/smtp_intake.py's generator: text, HTML, attachments, a
third of the senders writing more than once, each with its SMTP envelope so the sender check
runs as it does for mail the server took in) is stored through intake once, into a template
database. For each process count, a copy of the template is normalized by `parity worker
--processes N`, a real command in its own process tree, and only normalizing is timed: from
the first row filed to the last (intake.processed_at), so interpreter start-up is not counted.

Reported per process count: messages per second, and the scaling ratio against 1 process
measured in the same run. While the workers run, pg_stat_activity is sampled every 50 ms for
the workers' sessions: the lock-wait share is the share of samples of a busy session
(state 'active') that waited on a heavyweight lock (wait_event_type 'Lock': a row lock, an
advisory lock), the work that more cores could not make go faster.

Without more cores than processes, more processes cannot file faster: the ratio on a 2-core
machine says whether the workers queue on each other (ratio under 1) or not (about 1, or up
to 2 when one process left a core idle). Prints a summary, then the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

# Run as a script, the bench package's __init__ (which gives the run an audit key, as
# every part that writes the audit log needs one) is not imported by itself.
os.environ.setdefault("PARITY_AUDIT_KEY", "bench-" + secrets.token_hex(32))

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.smtp_intake import make_mail
from inbox import migrate
from inbox.db import make_engine
from inbox.models import Intake
from normalizer.intake import RawInput, store

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("PARITY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
STORE_BATCH = 500
SAMPLE_S = 0.05


def _admin() -> Any:
    return create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")


def _url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def make_backlog(name: str, count: int, seed: int) -> float:
    """Create database `name`, migrate it and store `count` mails through intake; the
    seconds storing took."""
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = make_engine(_url(name))
    migrate.upgrade(engine)
    rng = random.Random(seed)
    started = time.perf_counter()
    done = 0
    while done < count:
        size = min(STORE_BATCH, count - done)
        # The generator's senders repeat within a batch; across batches, new numbering
        # would make every sender new, so senders are drawn from the whole run's range.
        mails = make_mail(size, rng.randrange(1 << 30), f"n{done}")
        items = []
        for i, (sender, rcpts, raw) in enumerate(mails):
            who = f"customer{rng.randint(1, count // 3 + 1)}@example.org"
            raw = raw.replace(sender.encode(), who.encode(), 1)
            items.append(
                RawInput(
                    connector="smtp",
                    channel="email",
                    source_key="smtp:" + hashlib.sha256(raw).hexdigest(),
                    payload=raw,
                    envelope={
                        "mail_from": who,
                        "rcpt_tos": rcpts,
                        "helo": "bench.example.org",
                        "peer": f"127.0.0.1:{40000 + (done + i) % 20000}",
                    },
                )
            )
        store(engine, items)
        done += size
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def copy_of(template: str, name: str) -> str:
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin.dispose()
    return _url(name)


def drop(names: list[str]) -> None:
    admin = _admin()
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class LockSampler:
    """Samples pg_stat_activity for one database's client sessions, other than its own."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.active = 0
        self.lock_waits = 0
        self.io_waits = 0
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        admin = _admin()
        query = text(
            "SELECT state, wait_event_type FROM pg_stat_activity "
            "WHERE datname = :db AND backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()"
        )
        with admin.connect() as conn:
            while not self.stop.wait(SAMPLE_S):
                rows = conn.execute(query, {"db": self.database}).all()
                self.samples += 1
                for state, wait in rows:
                    if state != "active":
                        continue
                    self.active += 1
                    self.lock_waits += wait == "Lock"
                    self.io_waits += wait == "IO"
        admin.dispose()

    def share(self) -> float | None:
        return round(self.lock_waits / self.active, 4) if self.active else None


def measure(url: str, database: str, count: int, processes: int, workdir: Path) -> dict[str, Any]:
    settings = workdir / f"settings-{processes}.toml"
    settings.write_text(
        f'[database]\nurl = "{url}"\nurl_env = "PARITY_BENCH_NO_SUCH_VARIABLE"\n\n'
        f"[normalizer]\nprocesses = {processes}\n\n[connectors.web]\nenabled = false\n",
        encoding="utf-8",
    )
    engine = make_engine(url)
    size_query = text("SELECT pg_database_size(current_database())")
    with engine.connect() as conn:
        size_before = int(conn.execute(size_query).scalar_one())
    sampler = LockSampler(database)
    sampler.thread.start()
    log = open(workdir / f"worker-{processes}.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "parity", "--settings", str(settings), "worker"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    started = time.monotonic()
    try:
        while True:
            with engine.connect() as conn:
                pending = conn.execute(
                    select(func.count()).select_from(Intake).where(Intake.state == "pending")
                ).scalar_one()
            if pending == 0:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"parity worker exited with {worker.returncode}; see its log")
            if time.monotonic() - started > 6 * 3600:
                raise RuntimeError("the workers did not finish in six hours")
            time.sleep(0.2)
    finally:
        sampler.stop.set()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=120)
        log.close()
        sampler.thread.join()
    with engine.connect() as conn:
        first, last, done, dead = conn.execute(
            select(
                func.min(Intake.processed_at),
                func.max(Intake.processed_at),
                func.count().filter(Intake.state == "done"),
                func.count().filter(Intake.state == "dead"),
            )
        ).one()
        size_after = int(conn.execute(size_query).scalar_one())
    engine.dispose()
    seconds = (last - first).total_seconds() if first is not None and last is not None else 0.0
    return {
        "processes": processes,
        "filed": done,
        "dead": dead,
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1) if seconds > 0 else None,
        "lock_wait_share": sampler.share(),
        "io_wait_share": round(sampler.io_waits / sampler.active, 4) if sampler.active else None,
        "busy_sessions_mean": round(sampler.active / sampler.samples, 2) if sampler.samples else 0,
        # What filing adds to the database per message (cases, messages, refs, receipts,
        # audit rows, indexes; raw mail was stored before), for sizing a primary's disk.
        "bytes_per_message_filed": round((size_after - size_before) / count),
    }


def bench(count: int, process_counts: list[int], seed: int) -> dict[str, Any]:
    tag = f"parity_bench_norm_{os.getpid()}_{secrets.token_hex(3)}"
    template = f"{tag}_t"
    names = [template]
    try:
        stored_s = make_backlog(template, count, seed)
        results = []
        with tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp:
            for processes in process_counts:
                name = f"{tag}_{processes}"
                names.append(name)
                url = copy_of(template, name)
                results.append(measure(url, name, count, processes, Path(tmp)))
                drop([name])
    finally:
        drop(names)
    base = results[0]["per_second"]
    for result in results:
        result["scaling_ratio"] = (
            round(result["per_second"] / base, 3) if base and result["per_second"] else None
        )
    return {
        "database": "postgresql",
        "messages": count,
        "stored_per_second": round(count / stored_s, 1),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }


def human(report: dict[str, Any]) -> str:
    lines = [
        f"Normalizing {report['messages']} stored mails on PostgreSQL "
        f"({report['cpus']} CPUs, load average {report['load_average'][0]})"
    ]
    for r in report["results"]:
        lines.append(
            f"  {r['processes']} process(es): {r['per_second']} messages/s, "
            f"scaling x{r['scaling_ratio']} of 1 process; lock waits "
            f"{(r['lock_wait_share'] or 0) * 100:.1f}% of busy session samples "
            f"({r['busy_sessions_mean']} busy sessions on average); {r['dead']} dead"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--processes", default="1,2,4", help="comma-separated process counts")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--json", action="store_true", help="print the JSON only")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    counts = [int(p) for p in args.processes.split(",")]
    report = bench(args.messages, counts, args.seed)
    text_out = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text_out + "\n", encoding="utf-8")
    if not args.json:
        print(human(report))
        print()
    print(text_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
