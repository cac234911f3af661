"""SMTP intake benchmark: Parity's durable intake against aiosmtpd's own Sink, in one run.

    .venv/bin/python bench/smtp_intake.py                 # SQLite
    .venv/bin/python bench/smtp_intake.py --db both       # SQLite and PostgreSQL

The same client load hits two servers in turn: aiosmtpd with its `Sink` handler (answers 250
and stores nothing), and `parity run --only smtp` (answers 250 after the raw message is
committed, then normalizes it into a case). The client is a separate process: 8 persistent
smtplib connections, one thread each, sending the same realistic, distinct mails to both.

Reported, per database:
- intake: messages per second answered 250, as a ratio of Parity's rate to Sink's;
- p50 and p99 of the per-message latency (MAIL, RCPT, DATA to the final answer), both servers;
- end to end: the time from the first send until every message is in a case, as a ratio
  against the time Sink took to accept them all.

Each figure is the median over `--rounds` alternating Sink/Parity pairs, so a noisy
neighbour on a shared machine hits both. Prints a human summary, then the JSON (only the
JSON with --json; --out FILE writes it to a file too). Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

# Run as a script, the bench package's __init__ (which gives the run an audit key, as
# every part that writes the audit log needs one) is not imported by itself.
os.environ.setdefault("PARITY_AUDIT_KEY", "bench-" + secrets.token_hex(32))

from inbox import migrate
from inbox.db import make_engine
from inbox.models import Case, Intake, Message

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
PG_ADMIN = os.environ.get("PARITY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
_WORDS = [
    "account", "locked", "password", "reset", "phone", "stolen", "cannot", "login", "two",
    "factor", "code", "never", "arrives", "billing", "charged", "twice", "refund", "please",
    "urgent", "since", "yesterday", "hacked", "email", "changed",
]  # fmt: skip


# --- the client (a separate process) -----------------------------------------------------------


def make_mail(count: int, seed: int, run: str) -> list[tuple[str, list[str], bytes]]:
    """Distinct mails of a realistic mix: text, HTML with long lines, a small attachment."""
    rng = random.Random(seed)
    mails = []
    for i in range(count):
        msg = EmailMessage()
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 400)))
        sender = f"customer{rng.randint(1, count // 3 + 1)}@example.org"
        msg["From"] = sender
        msg["To"] = "help@support.example.com"
        msg["Subject"] = f"Help needed {run}-{i}"
        msg["Date"] = formatdate(1_790_000_000 + i)
        msg["Message-ID"] = f"<{run}.{i}.{rng.getrandbits(40):010x}@example.org>"
        msg.set_content(words + "\n")
        if i % 3 == 1:
            msg.add_alternative(f"<html><body><p>{words}</p></body></html>", subtype="html")
        elif i % 10 == 2:
            msg.add_attachment(
                rng.randbytes(4000), maintype="image", subtype="png", filename="s.png"
            )
        mails.append((sender, ["help@support.example.com"], msg.as_bytes()))
    return mails


def client_main(port: int, count: int, connections: int, seed: int, run: str) -> None:
    mails = make_mail(count, seed, run)
    latencies: list[float] = [0.0] * count
    codes: list[int] = [0] * count
    next_index = [0]
    lock = threading.Lock()
    clients = []
    for _ in range(connections):
        client = smtplib.SMTP("127.0.0.1", port, timeout=120)
        client.ehlo("bench.example.org")
        clients.append(client)
    ready = threading.Barrier(connections + 1)

    def work(client: smtplib.SMTP) -> None:
        ready.wait()
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= count:
                break
            mail_from, rcpts, raw = mails[i]
            started = time.monotonic()
            try:
                client.sendmail(mail_from, rcpts, raw)
                codes[i] = 250
            except smtplib.SMTPResponseException as exc:
                codes[i] = exc.smtp_code
            latencies[i] = time.monotonic() - started
        client.quit()

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    ready.wait()
    t_start = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on Linux
    for thread in threads:
        thread.join()
    t_end = time.monotonic()
    json.dump(
        {"t_start": t_start, "t_end": t_end, "latencies": latencies, "codes": codes},
        sys.stdout,
    )


def run_client(port: int, count: int, connections: int, seed: int, run: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE),
            "_client",
            str(port),
            str(count),
            str(connections),
            str(seed),
            run,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# --- the baseline server: aiosmtpd's Sink ---------------------------------------------------------


def sink_main() -> None:
    from aiosmtpd.handlers import Sink

    from connectors.smtp.server import smtp_session
    from connectors.smtp.settings import SmtpSettings

    settings = SmtpSettings()  # the defaults `parity run` uses: same limits, same options

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: smtp_session(Sink(), settings), host="127.0.0.1", port=0
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(serve())


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- one measurement -------------------------------------------------------------------------


def summarize(client: dict[str, Any], count: int) -> dict[str, Any]:
    latencies = sorted(client["latencies"])
    duration = client["t_end"] - client["t_start"]
    accepted = sum(1 for c in client["codes"] if c == 250)
    if accepted != count:  # a benchmark of refusals would measure nothing useful
        raise RuntimeError(f"only {accepted} of {count} mails got 250: {set(client['codes'])}")
    return {
        "messages": count,
        "accepted": accepted,
        "seconds": round(duration, 3),
        "per_second": round(accepted / duration, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
    }


def measure_sink(count: int, connections: int, seed: int) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, str(HERE), "_sink"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        cpu_before = cpu_seconds(server.pid)
        client = run_client(port, count, connections, seed, f"sink{seed}")
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    result = summarize(client, count)
    result["server_cpu_share"] = round(cpu / result["seconds"], 2)
    return result


def start_smtp_parity(url: str, workdir: Path, tag: str) -> tuple[int, Any, Any]:
    """`parity run --only smtp` on a free port, logging to a file in `workdir`: (port, the
    process, the open log, which the caller closes)."""
    port = _free_port()
    settings = workdir / f"settings-{tag}.toml"
    settings.write_text(
        f'[database]\nurl = "{url}"\nurl_env = "PARITY_BENCH_NO_SUCH_VARIABLE"\n\n'
        f'[connectors.smtp]\nport = {port}\nsupport_domains = ["support.example.com"]\n\n'
        "[connectors.web]\nenabled = false\n",
        encoding="utf-8",
    )
    log = open(workdir / f"parity-{tag}.log", "wb")  # noqa: SIM115 - the caller closes it
    server = subprocess.Popen(
        [sys.executable, "-m", "parity", "--settings", str(settings), "run", "--only", "smtp"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    return port, server, log


def measure_parity(
    url: str, workdir: Path, count: int, connections: int, seed: int
) -> dict[str, Any]:
    port, server, log = start_smtp_parity(url, workdir, str(seed))
    engine = make_engine(url)
    try:
        _wait_for_port(port, server)
        cpu_before = cpu_seconds(server.pid)
        done: dict[str, float] = {}
        watcher = threading.Thread(target=_watch_cases, args=(engine, count, done))
        watcher.start()
        client = run_client(port, count, connections, seed, f"parity{seed}")
        cpu = cpu_seconds(server.pid) - cpu_before
        watcher.join(timeout=1800)
        with engine.connect() as conn:
            cased = conn.execute(
                select(func.count())
                .select_from(Message)
                .where(Message.case_id.in_(select(Case.id)))
            ).scalar_one()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
        engine.dispose()
    result = summarize(client, count)
    result["server_cpu_share"] = round(cpu / result["seconds"], 2)
    result["in_cases"] = cased
    result["until_all_in_cases_s"] = round(done["at"] - client["t_start"], 3)
    result["normalized_after_intake_s"] = round(done["at"] - client["t_end"], 3)
    return result


def _watch_cases(engine: Any, count: int, done: dict[str, float]) -> None:
    """Record when every message is in a case: `count` intake rows, none pending."""
    while True:
        with engine.connect() as conn:
            stored, pending = conn.execute(
                select(func.count(), func.count().filter(Intake.state == "pending")).select_from(
                    Intake
                )
            ).one()
        if stored >= count and pending == 0:
            done["at"] = time.monotonic()
            return
        time.sleep(0.05)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"parity exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("parity never listened")


# --- databases ---------------------------------------------------------------------------------


class Database:
    """A fresh, migrated database per measurement, so every run starts equal."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.created: list[str] = []

    def fresh(self, tag: str) -> str:
        if self.kind == "sqlite":
            url = f"sqlite:///{self.workdir / f'bench-{tag}.db'}"
        else:
            name = f"parity_bench_{os.getpid()}_{secrets.token_hex(3)}"
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            self.created.append(name)
            url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        return url

    def drop_all(self) -> None:
        if not self.created:
            return
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- main --------------------------------------------------------------------------------------


def fsync_latency(directory: Path, times: int = 200) -> dict[str, float]:
    """The disk under the store, measured in the same run: 4 KiB appends, each fsynced.

    A durable 250 waits for at least one of these, so it bounds what intake can reach.
    """
    path = directory / "fsync-probe"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(times):
            os.write(fd, b"x" * 4096)
            started = time.perf_counter()
            os.fsync(fd)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    samples.sort()
    return {
        "p50_ms": round(1000 * samples[times // 2], 3),
        "p99_ms": round(1000 * samples[int(times * 0.99)], 3),
    }


def bench(kind: str, count: int, connections: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp:
        workdir = Path(tmp)
        fsync = fsync_latency(workdir)
        db = Database(kind, workdir)
        sinks, parities = [], []
        try:
            for r in range(rounds):
                seed = 1000 + r
                sinks.append(measure_sink(count, connections, seed))
                url = db.fresh(f"r{r}")
                parities.append(measure_parity(url, workdir, count, connections, seed))
        finally:
            db.drop_all()
    sink = _median(sinks)
    parity = _median(parities)
    return {
        "database": kind,
        "messages": count,
        "connections": connections,
        "rounds": rounds,
        "sink": sink,
        "parity": parity,
        "intake_ratio": round(parity["per_second"] / sink["per_second"], 3),
        "p99_ratio": round(parity["p99_ms"] / sink["p99_ms"], 2),
        "end_to_end_ratio": round(parity["until_all_in_cases_s"] / sink["seconds"], 2),
        "fsync": fsync,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "all_rounds": {"sink": sinks, "parity": parities},
    }


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in results[0].items() if isinstance(v, int | float)]
    return {k: round(statistics.median(r[k] for r in results), 3) for k in keys}


def human(result: dict[str, Any]) -> str:
    s, p, fsync = result["sink"], result["parity"], result["fsync"]
    return "\n".join(
        [
            f"SMTP intake on {result['database']}: {result['messages']} mails, "
            f"{result['connections']} connections, median of {result['rounds']} rounds",
            f"  Sink (no storage):  {s['per_second']:7.1f} msg/s   p50 {s['p50_ms']:6.2f} ms"
            f"   p99 {s['p99_ms']:6.2f} ms   all accepted in {s['seconds']:.2f} s",
            f"  Parity (durable):   {p['per_second']:7.1f} msg/s   p50 {p['p50_ms']:6.2f} ms"
            f"   p99 {p['p99_ms']:6.2f} ms   all accepted in {p['seconds']:.2f} s",
            f"  intake ratio {result['intake_ratio']:.3f} of Sink; p99 x{result['p99_ratio']}",
            f"  every message in a case after {p['until_all_in_cases_s']:.2f} s "
            f"= {result['end_to_end_ratio']:.2f} x Sink's time "
            f"({p['normalized_after_intake_s']:.2f} s after the last 250)",
            f"  server CPU share: Sink {s['server_cpu_share']}, Parity {p['server_cpu_share']}",
            f"  disk: fsync of 4 KiB p50 {fsync['p50_ms']} ms, p99 {fsync['p99_ms']} ms; "
            f"load average {result['load_average'][0]} on {os.cpu_count()} CPUs",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_client":
        port, count, connections, seed = (int(a) for a in argv[1:5])
        client_main(port, count, connections, seed, argv[5])
        return 0
    if argv and argv[0] == "_sink":
        sink_main()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the JSON only, no summary")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = [bench(k, args.messages, args.connections, args.rounds) for k in kinds]
    report = {"benchmark": "smtp_intake", "cpus": os.cpu_count(), "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    if not args.json:
        for result in results:
            print(human(result))
        print()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
