"""Normalizer worker processes (issue 19): `parity run --no-normalizer` only takes in,
`parity worker` only files, `[normalizer] processes = 2` runs two real processes that share
the backlog, and no worker outlives its parent. Real processes, real SMTP, both stores."""

from __future__ import annotations

import os
import signal
import smtplib
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from inbox.models import Case, Intake, Message
from parity.status import worker_status
from tests.support.helpers import ingest
from tests.support.outbox_helpers import mail
from tests.support.smtp_support import (
    ParityProcess,
    daemon_settings,
    running,
    send_one,
    varied_mail,
    wait_until_normalized,
)


def worker_process(settings: Path, log_path: Path, *args: str) -> ParityProcess:
    argv = [sys.executable, "-m", "parity", "--settings", str(settings), "worker", *args]
    return ParityProcess(argv, log_path)


def intake_states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Intake.state, func.count()).group_by(Intake.state)).all())


def in_cases(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(Message)
                .where(Message.case_id.in_(select(Case.id)))
            ).scalar_one()
        )


def live_workers(engine: Engine, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
    """Wait until `count` worker processes report running; their status rows."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = [w for w in worker_status(engine) if w["running"]]
        if len(found) >= count:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{len(found)} worker processes running, not {count}")


def pid_of(instance: str) -> int:
    return int(instance.rsplit(":", 1)[1])


def parent_of(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited, not yet reaped by whoever inherited it


def wait_gone(pids: list[int], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(p) for p in pids):
            return
        time.sleep(0.1)
    raise AssertionError(f"still running: {[p for p in pids if not gone(p)]}")


def test_an_intake_node_only_takes_in_and_a_worker_node_files_it(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    settings, smtp_port, _ = daemon_settings(tmp_path, db_url, web=False)
    intake = ParityProcess.run(
        settings, "--only", "smtp", "--no-normalizer", log_path=tmp_path / "intake.log"
    )
    with running(intake):
        intake.wait_for_port(smtp_port)
        mails = varied_mail(12, tag="intake-only")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as client:
            assert [send_one(client, m) for m in mails] == ["250"] * len(mails)
        # Time in which a node that normalized would have filed a dozen mails (it wakes on
        # every store); this one must leave them all pending.
        time.sleep(3)
        stored = intake_states(engine)
        assert set(stored) == {"pending"} and stored["pending"] >= len(mails)
        assert in_cases(engine) == 0
        assert "no normalizer" in intake.log()
        assert worker_status(engine) == []  # no worker anywhere yet

        worker = worker_process(settings, tmp_path / "worker.log")
        with running(worker):
            wait_until_normalized(engine, timeout=120)
            assert intake_states(engine) == {"done": stored["pending"]}
            assert in_cases(engine) == len(mails)
            # The default: one process on SQLite (itself), one per core on PostgreSQL.
            expected = 1 if db_url.startswith("sqlite") else (os.cpu_count() or 1)
            found = live_workers(engine, expected)
            assert len(found) == expected, found
            if expected == 1:
                assert pid_of(found[0]["instance"]) == worker.proc.pid
            else:
                assert {parent_of(pid_of(w["instance"])) for w in found} == {worker.proc.pid}
            worker.signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0, worker.log()
        assert f"{expected} normalizer worker process" in worker.log()
        # Their last heartbeats say they stopped, and that they filed something between
        # them (a count, not a proof of each row: a chunk that hit a busy store counts).
        final = worker_status(engine)
        assert len(final) == expected and not any(w["running"] for w in final)
        assert sum(w["processed"] for w in final) > 0, worker.log()
        intake.signal(signal.SIGTERM)
        assert intake.wait(timeout=60) == 0, intake.log()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_processes_on_postgresql_really_run_two_and_die_with_their_parent(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    settings, _, _ = daemon_settings(
        tmp_path, db_url, web=False, extra={"normalizer": {"processes": 2, "batch_size": 5}}
    )
    parent = worker_process(settings, tmp_path / "worker.log")
    with running(parent):
        statuses = live_workers(engine, 2)
        pids = sorted(pid_of(s["instance"]) for s in statuses)
        assert len(set(pids)) == 2 and parent.proc.pid not in pids
        assert [parent_of(p) for p in pids] == [parent.proc.pid] * 2
        assert "2 normalizer worker processes" in parent.log()

        count = 80
        for i in range(count):
            ingest(engine, mail(f"Question {i}", sender=f"p{i % 20}@example.org"))
        wait_until_normalized(engine, timeout=180)
        assert intake_states(engine) == {"done": count}
        # Both filed a share: each row names the worker that claimed it, and each heartbeat
        # counts what its process filed (written every few seconds, so waited for).
        with engine.connect() as conn:
            claimers = set(conn.execute(select(Intake.claimed_by).distinct()).scalars())
        assert claimers == {s["instance"] for s in statuses}
        deadline = time.monotonic() + 30
        filed: dict[str, int] = {}
        while time.monotonic() < deadline:
            filed = {w["instance"]: w["processed"] for w in worker_status(engine) if w["running"]}
            if len(filed) == 2 and all(n > 0 for n in filed.values()):
                break
            time.sleep(0.5)
        assert len(filed) == 2 and all(n > 0 for n in filed.values()), filed
        with engine.connect() as conn:
            # 20 people, 20 cases: two processes threading at once opened none twice.
            assert conn.execute(select(func.count()).select_from(Case)).scalar_one() == 20

        # The parent dies without a word (SIGKILL): the children see their pipe close.
        parent.proc.send_signal(signal.SIGKILL)
        parent.proc.wait(timeout=30)
        wait_gone(pids)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_parity_run_with_two_processes_files_smtp_mail_and_drains_on_sigterm(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    settings, smtp_port, _ = daemon_settings(
        tmp_path, db_url, web=False, extra={"normalizer": {"processes": 2}}
    )
    daemon = ParityProcess.run(settings, "--only", "smtp", log_path=tmp_path / "run.log")
    with running(daemon):
        daemon.wait_for_port(smtp_port)
        # The banner follows the bound ports (parity run says what runs once it runs).
        daemon.wait_for_log("2 normalizer worker processes")
        pids = sorted(pid_of(s["instance"]) for s in live_workers(engine, 2))
        assert [parent_of(p) for p in pids] == [daemon.proc.pid] * 2
        mails = varied_mail(18, tag="two-procs")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as client:
            assert [send_one(client, m) for m in mails] == ["250"] * len(mails)
        wait_until_normalized(engine, timeout=120)
        assert in_cases(engine) == len(mails)
        # A backlog the workers are in the middle of when the stop comes.
        for i in range(60):
            ingest(engine, mail(f"Late {i}", sender=f"late{i}@example.org"))
        time.sleep(0.5)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=90) == 0, daemon.log()
    wait_gone(pids, timeout=10)
    # Drained: what a worker had claimed and not filed was handed back, not left leased.
    with engine.connect() as conn:
        leased = conn.execute(
            select(func.count())
            .select_from(Intake)
            .where(Intake.state == "pending", Intake.claimed_by.is_not(None))
        ).scalar_one()
    assert leased == 0
    assert all(not w["running"] for w in worker_status(engine))
    assert os.getpid() not in pids
