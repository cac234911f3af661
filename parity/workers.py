"""Normalizer worker processes: `[normalizer] processes` of them beside `parity run`, or on
their own as `parity worker`, so the nodes that take mail in and the nodes that file it into
cases scale apart (issue 19).

Each worker process is a whole normalizer: its own engine, its own claim loop (rows are
leased with SKIP LOCKED on PostgreSQL, so workers never take the same row), its own pool of
parse processes. One process is a Python interpreter with one lock, so a single process
files at most what one core parses and persists; N processes file up to N cores' worth,
until the store itself is the limit (bench/normalize.py measures where).

Children are started with `spawn` (a fresh interpreter: the parent has threads, and a fork
could inherit a lock held by one of them), and are tied to their parent by a pipe:
- parent to child: "wake" when intake stored something (so a worker does not wait for its
  next poll), "stop" to drain and leave; the pipe closing (the parent died, even by SIGKILL)
  means stop too, so no worker outlives its `parity run`;
- child to parent: "case" when a case was opened, so the parent's outbox drainers send the
  acknowledgement now rather than at their next poll.

Stopping drains: a worker finishes the rows it is filing, hands back the rows it claimed
and has not started (their lease is cleared), writes its last heartbeat and exits. One that
has not left after `STOP_GRACE_S` is killed; its leases expire and other workers retry them.

Every worker process writes a heartbeat to connector_state under the name "normalizer",
so `parity connectors status`, /healthz and /metrics show the live ones, on any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from sqlalchemy import Engine, update

from connectors.registry import ack_route_table, parser_table
from inbox import audit
from inbox.db import StorageUnavailable, insert_ignore, is_sqlite, make_engine, write
from inbox.models import ConnectorState, utcnow
from normalizer import memory
from normalizer.worker import Normalizer, Outcome, WorkerLoop
from parity import logs
from parity.settings import Settings
from parity.status import HEARTBEAT_S, NORMALIZER

log = logging.getLogger(__name__)

# A worker asked to stop finishes the rows it is filing (a chunk, each parse under its
# budget) in well under this; past it the worker is killed and its leases run out.
STOP_GRACE_S = 30.0
# A crashed worker process is started again after this, doubling up to the cap.
RESTART_FIRST_S = 1.0
RESTART_CAP_S = 60.0

_CONTEXT = multiprocessing.get_context("spawn")


def process_count(settings: Settings, engine: Engine) -> int:
    """How many normalizer worker processes this node runs: `[normalizer] processes`, or 1
    on SQLite and the core count on PostgreSQL."""
    return settings.normalizer.process_count(is_sqlite(engine))


def engine_for(settings: Settings) -> Engine:
    db = settings.database
    return make_engine(
        db.resolved_url(),
        busy_timeout_ms=db.busy_timeout_ms,
        keepalive_s=db.keepalive_s,
        sqlite_cache_mb=db.sqlite_cache_mb,
    )


def record_heartbeat(
    engine: Engine,
    instance: str,
    worker: WorkerLoop,
    *,
    running: bool,
    details: dict[str, Any] | None = None,
) -> None:
    """Write one worker's row in connector_state (name "normalizer", this instance)."""
    values = {
        "running": running,
        "heartbeat_at": utcnow(),
        "last_success_at": worker.last_success,
        "last_error": worker.last_error,
        "last_error_at": utcnow() if worker.last_error else None,
        "restarts": 0,
        "details": {"processed": worker.processed, **(details or {})},
    }
    with write(engine) as conn:
        conn.execute(
            insert_ignore(conn, ConnectorState, ["connector", "instance"]),
            [{"connector": NORMALIZER, "instance": instance, **values}],
        )
        conn.execute(
            update(ConnectorState)
            .where(ConnectorState.connector == NORMALIZER, ConnectorState.instance == instance)
            .values(**values)
        )


def normalizer_for(
    settings: Settings,
    engine: Engine,
    *,
    name: str | None = None,
    on_case: Callable[[Outcome], None] | None = None,
) -> Normalizer:
    """The one way the composition root builds a normalizer: every worker (in `parity run`,
    in `parity worker`'s processes, in the CLI's commands) gets the same settings, the
    registry's parser table and its acknowledgement routes."""
    return Normalizer(
        engine,
        settings.store(),
        settings.normalizer,
        name=name,
        on_case=on_case,
        acks=settings.acknowledgements,
        mail_auth=settings.mail_auth,
        parsers=parser_table(),
        ack_routes=ack_route_table(settings.connectors),
        csat=settings.csat,
    )


class WorkerProcess:
    """One normalizer worker process's life (in a child, or in `parity worker` itself)."""

    def __init__(
        self,
        settings: Settings,
        control: Connection | None = None,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        parent: int | None = None,
    ) -> None:
        self.settings = settings
        self.control = control
        self.heartbeat_s = heartbeat_s
        self.parent = parent
        self.engine = engine_for(settings)
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.stop = asyncio.Event()
        self._send_lock = threading.Lock()
        self.worker = WorkerLoop(
            normalizer_for(
                settings,
                self.engine,
                name=self.instance,
                on_case=self._case_opened if control is not None else None,
            )
        )

    def _case_opened(self, _outcome: Outcome) -> None:
        if self.control is None:
            return
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            self.control.send("case")

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the parent's pipe: "wake" wakes the worker; "stop", or the pipe closing
        because the parent is gone, stops it."""
        assert self.control is not None
        while True:
            try:
                message = self.control.recv()
            except (EOFError, OSError):
                break
            if message == "stop":
                break
            if message == "wake":
                self.worker.notify()
        loop.call_soon_threadsafe(self.stop.set)

    async def run(self) -> int:
        # Before the worker's threads start (normalizer/memory.py).
        memory.limit_arenas()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        if self.control is not None:
            threading.Thread(target=self._listen, args=(loop,), daemon=True).start()
        log.info("normalizer worker %s started", self.instance)
        tasks = [
            asyncio.create_task(self.worker.run(self.stop), name="normalizer"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        await self.stop.wait()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("worker task ended with %r", result)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._beat, False)
        self.engine.dispose()
        log.info("normalizer worker %s stopped (%d filed)", self.instance, self.worker.processed)
        return 0

    def _beat(self, running: bool) -> None:
        details = {"parent": self.parent} if self.parent else {}
        record_heartbeat(self.engine, self.instance, self.worker, running=running, details=details)

    async def _heartbeat(self) -> None:
        while not self.stop.is_set():
            try:
                await asyncio.to_thread(self._beat, True)
            except StorageUnavailable as exc:
                log.warning("could not record the worker's status: %s", exc)
            except Exception:
                log.exception("could not record the worker's status")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=self.heartbeat_s)


def _child_main(settings: Settings, control: Connection, parent: int, heartbeat_s: float) -> None:
    """A spawned worker process: the same logging and audit permission as its parent."""
    logs.configure(settings.logging.level, settings.logging.json_lines)
    audit.permit(settings.audit.allow_unkeyed)
    process = WorkerProcess(settings, control, heartbeat_s=heartbeat_s, parent=parent)
    raise SystemExit(asyncio.run(process.run()))


@dataclass
class _Slot:
    process: BaseProcess | None = None
    conn: Connection | None = None
    restarts: int = 0
    crashes_in_a_row: int = 0
    started_at: float = 0.0
    restart_at: float = 0.0


class WorkerProcesses:
    """`count` spawned worker processes, kept running until `stop`."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        on_case: Callable[[], None] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.settings = settings
        self.count = count
        self.on_case = on_case
        self.heartbeat_s = heartbeat_s
        self.slots = [_Slot() for _ in range(count)]
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with self._lock:
            for slot in self.slots:
                self._spawn(slot)
        for target in (self._supervise, self._wake_children):
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()
            self._threads.append(thread)

    def _spawn(self, slot: _Slot) -> None:
        parent, child = _CONTEXT.Pipe(duplex=True)
        process = _CONTEXT.Process(
            target=_child_main,
            args=(self.settings, child, os.getpid(), self.heartbeat_s),
            name="parity-worker",
        )
        process.start()
        child.close()  # the child's end lives in the child only: its EOF is our death
        slot.process, slot.conn, slot.started_at = process, parent, time.monotonic()

    def notify(self, _count: int = 0) -> None:
        """Called from any thread when input was stored: wake the workers (coalesced)."""
        self._wake.set()

    def _wake_children(self) -> None:
        while not self._stopping.is_set():
            if not self._wake.wait(timeout=0.5):
                continue
            self._wake.clear()
            with self._lock:
                for slot in self.slots:
                    self._send(slot, "wake")
            time.sleep(0.02)  # a burst of stored mail is one wake, not thousands

    @staticmethod
    def _send(slot: _Slot, message: str) -> None:
        if slot.conn is not None:
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(message)

    def _supervise(self) -> None:
        """Read the children's "case" notes; start a crashed child again, with backoff."""
        while not self._stopping.is_set():
            with self._lock:
                conns = {s.conn: s for s in self.slots if s.conn is not None}
            for conn in wait(list(conns), timeout=0.25) if conns else []:
                assert isinstance(conn, Connection)
                try:
                    while conn.poll():
                        if conn.recv() == "case" and self.on_case is not None:
                            self.on_case()
                except (EOFError, OSError):
                    with self._lock:
                        slot = conns[conn]
                        if slot.conn is conn:
                            slot.conn = None
                            conn.close()
            if not conns:
                time.sleep(0.25)
            self._restart_dead()

    def _restart_dead(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._stopping.is_set():
                return
            for slot in self.slots:
                process = slot.process
                if process is None or process.is_alive():
                    continue
                if slot.restart_at == 0.0:
                    if now - slot.started_at > RESTART_CAP_S:
                        slot.crashes_in_a_row = 0
                    slot.crashes_in_a_row += 1
                    delay = min(RESTART_FIRST_S * 2 ** (slot.crashes_in_a_row - 1), RESTART_CAP_S)
                    slot.restart_at = now + delay
                    log.error(
                        "normalizer worker process %s exited with %s; starting another in %.0f s",
                        process.pid,
                        process.exitcode,
                        delay,
                    )
                if now >= slot.restart_at:
                    if slot.conn is not None:
                        slot.conn.close()
                    slot.restart_at = 0.0
                    slot.restarts += 1
                    self._spawn(slot)

    def alive(self) -> int:
        return sum(1 for s in self.slots if s.process is not None and s.process.is_alive())

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None and s.process.pid]

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ask every worker to drain and leave; kill those still there after `grace_s`."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            for slot in self.slots:
                self._send(slot, "stop")
            deadline = time.monotonic() + grace_s
            for slot in self.slots:
                if slot.process is None:
                    continue
                slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
                if slot.process.is_alive():
                    log.warning("worker process %s did not stop; killed", slot.process.pid)
                    slot.process.kill()
                    slot.process.join(timeout=5)
                if slot.conn is not None:
                    slot.conn.close()
                    slot.conn = None


def run(settings: Settings, processes: int | None = None) -> int:
    """`parity worker`: normalizer workers only, no HTTP, SMTP or pollers. One process runs
    in this one; more are children of it, stopped (drained) with it."""
    engine = engine_for(settings)
    count = processes if processes is not None else process_count(settings, engine)
    engine.dispose()
    print(
        f"Parity: {count} normalizer worker process{'es' if count != 1 else ''} "
        "(no connectors: intake runs elsewhere)",
        flush=True,
    )
    if count == 1:
        return asyncio.run(WorkerProcess(settings).run())
    children = WorkerProcesses(settings, count)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    children.start()
    while not stop.wait(timeout=1.0):
        pass
    log.info("stopping %d worker processes", count)
    children.stop()
    return 0
