"""Soak bench: many messages through one `parity run` over SMTP; memory and speed over time.

    .venv/bin/python -m bench.soak                       # 100,000 messages, SQLite
    .venv/bin/python -m bench.soak --messages 10000 --db postgresql
    .venv/bin/python -m bench.soak --messages 10000 --trace probes.jsonl [--trace-heap]

The client (bench/smtp_intake.py's, a separate process, 8 persistent connections) sends the
load in ten equal tenths. After each tenth the server's resident memory (VmRSS) and the
backlog (intake rows not yet normalized) are read. Reported: RSS after the first tenth (the
warmed-up start: imports, pools, caches and the first batches done; the idle RSS before any
mail is reported too), at the end of intake, and once the normalizer caught up, with growth
in percent from the start (goal: under 10 %); the messages per second of the first and the
last tenth, whose ratio is the slowdown as the store grows; and how long the catch-up took.
At the end every message must be in a case.

--trace runs the server under bench/traced_run.py, which writes a memory probe (RSS by kind
of mapping, malloc's arenas, Python's object arenas, SQLite's own memory; with --trace-heap
also tracemalloc's top growth) at the start, after each tenth and after the catch-up.
Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from bench.smtp_intake import REPO, Database, _free_port, _wait_for_port, run_client
from inbox.db import make_engine
from inbox.models import Intake, Message


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(Intake).where(Intake.state == "pending")
            ).scalar_one()
        )


def _caught_up(engine: Engine) -> float:
    """Wait until the normalizer has no backlog; how long that took."""
    started = time.monotonic()
    while time.monotonic() < started + 3600 and _pending(engine):
        time.sleep(1)
    return time.monotonic() - started


def soak(
    url: str,
    workdir: Path,
    messages: int,
    connections: int,
    trace: Path | None = None,
    heap: bool = False,
    warmup: int = 0,
) -> dict[str, Any]:
    port = _free_port()
    settings = workdir / "settings.toml"
    settings.write_text(
        f'[database]\nurl = "{url}"\nurl_env = "PARITY_BENCH_NO_SUCH_VARIABLE"\n\n'
        f'[connectors.smtp]\nport = {port}\nsupport_domains = ["support.example.com"]\n\n'
        "[connectors.web]\nenabled = false\n",
        encoding="utf-8",
    )
    log = open(workdir / "parity.log", "wb")  # noqa: SIM115 - closed below
    command = ["--settings", str(settings), "run", "--only", "smtp"]
    # With --trace the server runs under bench/traced_run.py, which answers SIGUSR1 with a
    # memory probe (Python heap, SQLite, malloc) appended to the trace file.
    launcher = ["-m", "parity"]
    if trace is not None:
        launcher = ["-m", "bench.traced_run", str(trace), *(["--heap"] if heap else []), "--"]
    server = subprocess.Popen(
        [sys.executable, *launcher, *command],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    engine = make_engine(url)
    tenth = messages // 10
    tenths: list[dict[str, Any]] = []
    try:
        _wait_for_port(port, server)
        rss_before = rss_kib(server.pid)
        probe(server, trace)
        # Warm-up: the first mails load what intake and the normalizer use lazily (modules,
        # statement caches, pool connections, the header cache). During sustained intake
        # the normalizer mostly waits, so it warms up only once a backlog is worked off:
        # the start RSS is taken after a warm-up batch was sent and normalized.
        if warmup:
            run_client(port, warmup, connections, 999, "warmup")
            _caught_up(engine)
        rss_warm = rss_kib(server.pid)
        probe(server, trace)
        for k in range(10):
            client = run_client(port, tenth, connections, 1000 + k, f"soak{k}")
            seconds = client["t_end"] - client["t_start"]
            accepted = sum(1 for c in client["codes"] if c == 250)
            tenths.append(
                {
                    "tenth": k + 1,
                    "accepted": accepted,
                    "per_second": round(accepted / seconds, 1),
                    "rss_kib": rss_kib(server.pid),
                    "backlog": _pending(engine),
                }
            )
            probe(server, trace)
            print(json.dumps(tenths[-1]), file=sys.stderr, flush=True)
        rss_intake_end = rss_kib(server.pid)
        caught_up = _caught_up(engine)
        with engine.connect() as conn:
            cased = conn.execute(select(func.count()).select_from(Message)).scalar_one()
        rss_end = rss_kib(server.pid)
        probe(server, trace)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        log.close()
        engine.dispose()
    start = tenths[0]["rss_kib"]
    return {
        "messages": tenth * 10,
        "warmup_messages": warmup,
        "accepted": sum(t["accepted"] for t in tenths),
        "in_cases": cased - warmup,
        "rss_kib_idle": rss_before,
        "rss_kib_warm": rss_warm,
        "rss_kib_start": start,
        "rss_kib_intake_end": rss_intake_end,
        "rss_kib_end": rss_end,
        # rss_kib_end and rss_growth_percent: once the normalizer caught up, as before.
        "rss_growth_percent": round(100 * (rss_end - start) / start, 1),
        "rss_growth_percent_intake_end": round(100 * (rss_intake_end - start) / start, 1),
        # The same from the warmed-up start (after the warm-up batch was normalized).
        "rss_growth_percent_from_warm": round(100 * (rss_end - rss_warm) / rss_warm, 1),
        "catch_up_seconds": round(caught_up, 1),
        "first_tenth_per_second": tenths[0]["per_second"],
        "last_tenth_per_second": tenths[-1]["per_second"],
        "last_over_first": round(tenths[-1]["per_second"] / tenths[0]["per_second"], 2),
        "tenths": tenths,
    }


def probe(server: subprocess.Popen[bytes], trace: Path | None) -> None:
    """Ask a traced server for a memory probe, and give it a moment to write it."""
    if trace is not None:
        server.send_signal(signal.SIGUSR1)
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1000,
        help="mails sent and normalized before the measured tenths (default 1000)",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="write memory probes of the server (JSON lines) to this file",
    )
    parser.add_argument(
        "--trace-heap",
        action="store_true",
        help="with --trace: trace the Python heap too (tracemalloc; slows the server down)",
    )
    args = parser.parse_args(argv)
    trace = args.trace.resolve() if args.trace else None
    with tempfile.TemporaryDirectory(prefix="parity-soak-") as tmp:
        workdir = Path(tmp)
        database = Database(args.db, workdir)
        try:
            result = soak(
                database.fresh("soak"),
                workdir,
                args.messages,
                args.connections,
                trace,
                args.trace_heap,
                args.warmup,
            )
        finally:
            database.drop_all()
    result["db"] = args.db
    print(json.dumps(result, indent=2))
    return 0 if result["in_cases"] == result["accepted"] == result["messages"] else 1


if __name__ == "__main__":
    sys.exit(main())
