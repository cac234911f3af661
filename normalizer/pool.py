"""Parsing in child processes, each input under a wall-clock budget that can really stop it.

A parse is pure (raw bytes in, InboundMessage out) and runs on bytes a stranger chose, so its
cost is whatever the slowest library on the path allows. A thread cannot be stopped, so
every parse runs in a child process: a parse still running when its budget is over has its
process killed (SIGKILL, not a polite request) and replaced, and its input becomes a dead
letter naming the budget. Several children parse at once (`[normalizer] workers`), and
results are handed back as each finishes, so one slow input holds one child, never the
others. Everything that touches the store stays in the parent.

Children come from a forkserver that has already imported the mail parser: the daemon's
process has threads (a fork of it could inherit a held lock), and a replacement for a killed
child must start in milliseconds, not in an interpreter's start-up time. The other channels'
parsers come with each job in the parser table (normalizer/parse.py); a child imports a
parser's module, small and pure, the first time a job names it.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from inbox.channels import SENDER_CHECKED_CHANNELS
from inbox.suggestions import text_signature
from normalizer.mail import Caps
from normalizer.mailauth import MailAuthSettings, evaluate
from normalizer.message import InboundMessage, ParseError
from normalizer.parse import Parsers, parse


@dataclass(frozen=True)
class ParseJob:
    key: int  # the intake id
    channel: str
    raw: bytes
    envelope: Mapping[str, Any]
    received_at: datetime
    caps: Caps
    # channel -> parser, as the composition root built it (normalizer/parse.py); a dict of
    # module-level functions, which pickle by name.
    parsers: Parsers
    # The parse's own budget. A parse that finishes past it is refused like one killed at it.
    budget_s: float = 5.0
    # Email only: check the sender (SPF, DKIM, DMARC, ARC) after the parse, in the child.
    mail_auth: MailAuthSettings | None = None
    history: bool = False  # imported mail: trusted headers only, no DNS (mailauth.evaluate)

    def allowance_s(self) -> float:
        """Wall-clock time the child may take before it is killed: the parse budget, plus
        the sender check's DNS budget for email (DNS past its budget is `temperror`, so a
        child still running at this point is stuck in the parse)."""
        if self.mail_auth is None or self.channel not in SENDER_CHECKED_CHANNELS:
            return self.budget_s
        return self.budget_s + self.mail_auth.budget_seconds + 1.0


@dataclass(frozen=True)
class ParseResult:
    key: int
    message: InboundMessage | None
    # Why the input cannot become a message: its dead letter's reason.
    error: str | None = None
    crashed: bool = False  # a parser bug rather than bad input (logged with its type)
    timed_out: bool = False
    # CPU spent in the child on this input; for a killed parse, the budget (an upper bound).
    cpu_seconds: float = 0.0
    # messages.auth for email (None for other channels, and when no check was asked for).
    auth: dict[str, str] | None = None
    # The text's near-duplicate signature and shingle count (inbox/suggestions.py), pure
    # work done here so that the process filing the message only folds it into its case.
    signature: tuple[bytes, int] | None = None


def budget_reason(seconds: float) -> str:
    return f"parse exceeded {seconds:g} s budget"


def parse_job(job: ParseJob) -> ParseResult:
    """The pure parse of one input, as a child runs it (and as tests may call it), then the
    sender check for email."""
    started, wall = time.process_time(), time.monotonic()
    try:
        message = parse(
            job.channel,
            job.raw,
            envelope=job.envelope,
            received_at=job.received_at,
            caps=job.caps,
            parsers=job.parsers,
        )
    except ParseError as exc:
        return ParseResult(job.key, None, str(exc), cpu_seconds=time.process_time() - started)
    except Exception as exc:  # a parser bug is still this input's problem, not the worker's
        return ParseResult(
            job.key,
            None,
            f"parser crashed: {type(exc).__name__}: {exc}"[:2000],
            crashed=True,
            cpu_seconds=time.process_time() - started,
        )
    if time.monotonic() - wall > job.budget_s:
        # Finished, but late: the child's allowance includes the DNS budget, which the parse
        # may not borrow, or an input's fate would depend on how fast DNS answered.
        return ParseResult(
            job.key,
            None,
            budget_reason(job.budget_s),
            timed_out=True,
            cpu_seconds=time.process_time() - started,
        )
    auth = None
    if job.mail_auth is not None and message.channel in SENDER_CHECKED_CHANNELS:
        auth = evaluate(
            job.raw, job.envelope, message.sender.handle, job.mail_auth, history=job.history
        )
    return ParseResult(
        job.key,
        message,
        cpu_seconds=time.process_time() - started,
        auth=auth,
        signature=message_signature(message),
    )


def message_signature(message: InboundMessage) -> tuple[bytes, int] | None:
    """What the case's merge-suggestion signature learns from `message`, if anything."""
    if message.meta.get("delivery_report"):
        return None  # a bounce's boilerplate would make every bounced case look alike
    return text_signature(f"{message.subject}\n{message.text}")


def _serve(conn: Connection) -> None:
    """A child's life: parse what the parent sends until it closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        conn.send(parse_job(job))


@dataclass
class _Child:
    process: BaseProcess
    conn: Connection

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.join(timeout=5)
        with contextlib.suppress(Exception):
            self.conn.close()


@dataclass
class _Running:
    child: _Child
    job: ParseJob
    deadline: float


_CONTEXT = multiprocessing.get_context("forkserver")
# The sender check's libraries too: a replacement child must not spend its first mail's
# budget importing them; and the language detector's model, which takes a second or more
# to load (normalizer/language_model.py).
_CONTEXT.set_forkserver_preload(
    ["normalizer.pool", "dns.resolver", "dkim", "spf", "normalizer.language_model"]
)


class ParsePool:
    """Up to `workers` child processes; `run` parses a stream of jobs through them."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._idle: list[_Child] = []
        # One dispatcher at a time: a child's pipe carries one job's answer at a time.
        self._lock = threading.Lock()
        self.killed = 0  # children killed over budget, for tests and status

    def _spawn(self) -> _Child:
        parent, child = _CONTEXT.Pipe(duplex=True)
        process = _CONTEXT.Process(target=_serve, args=(child,), daemon=True, name="parse")
        process.start()
        child.close()
        return _Child(process, parent)

    def _checkout(self) -> _Child:
        while self._idle:
            child = self._idle.pop()
            if child.process.is_alive():
                return child
            child.kill()
        return self._spawn()

    def run(
        self,
        jobs: list[ParseJob],
        budget_s: float,
        refill: Callable[[int], list[ParseJob]] | None = None,
    ) -> Iterator[ParseResult]:
        """Parse `jobs`, `workers` at a time, yielding each result as soon as it is ready.

        When a child is free, the jobs are used up and another is still running (a slow
        input), `refill(n)` is asked for up to n more jobs, so the slow one delays nothing.
        A parse not finished `budget_s` after it started is killed and yields a timed-out
        result.
        """
        with self._lock:
            pending = deque(jobs)
            running: dict[Connection, _Running] = {}
            try:
                while pending or running:
                    if not pending and running and refill is not None:
                        free = self.workers - len(running)
                        if free > 0:
                            pending.extend(refill(free))
                    while pending and len(running) < self.workers:
                        job = pending.popleft()
                        child = self._checkout()
                        try:
                            child.conn.send(job)
                        except (OSError, ValueError):  # the child died while idle
                            child.kill()
                            child = self._spawn()
                            child.conn.send(job)
                        deadline = time.monotonic() + max(budget_s, job.allowance_s())
                        running[child.conn] = _Running(child, job, deadline)
                    nearest = min(r.deadline for r in running.values())
                    # Wake for a refill now and then, even while a slow parse is running.
                    timeout = max(0.0, min(nearest - time.monotonic(), 0.2 if refill else 1e9))
                    ready = [c for c in wait(list(running), timeout) if isinstance(c, Connection)]
                    for conn in sorted(ready, key=lambda c: running[c].job.key):
                        yield self._collect(running.pop(conn))
                    now = time.monotonic()
                    for conn, run in list(running.items()):
                        if run.deadline <= now:
                            del running[conn]
                            run.child.kill()
                            self.killed += 1
                            yield ParseResult(
                                run.job.key,
                                None,
                                budget_reason(budget_s),
                                timed_out=True,
                                cpu_seconds=budget_s,
                            )
            finally:
                # Abandoned (the consumer failed or stopped): a running child's answer must
                # never be read as another job's, so running children are killed.
                for run in running.values():
                    run.child.kill()

    def _collect(self, run: _Running) -> ParseResult:
        try:
            result: ParseResult = run.child.conn.recv()
        except (EOFError, OSError) as exc:  # killed from outside, out of memory, a crash in C
            run.child.kill()
            return ParseResult(
                run.job.key, None, f"parser process died: {type(exc).__name__}", crashed=True
            )
        self._idle.append(run.child)
        if result.key != run.job.key:  # cannot happen: one job per child at a time
            run.child.kill()
            self._idle.remove(run.child)
            return ParseResult(run.job.key, None, "parser answered another job", crashed=True)
        return result

    def close(self) -> None:
        with self._lock:
            for child in self._idle:
                with contextlib.suppress(Exception):
                    child.conn.send(None)
                child.kill()
            self._idle.clear()


_POOLS: dict[int, ParsePool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(workers: int) -> ParsePool:
    """The process's pool of `workers` children (created on first use, closed at exit)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ParsePool(workers)
        return pool


@atexit.register
def _close_pools() -> None:
    for pool in list(_POOLS.values()):
        pool.close()
