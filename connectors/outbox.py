"""Draining the outbox: one loop every sending connector shares, and its retry policy.

A channel plugs in a `ChannelSender` (email: connectors/mail/relay.py; SMS and voice:
connectors/twilio/outbox.py; Reddit: connectors/reddit/outbox.py; Twitter:
connectors/twitter/outbox.py). The drainer recovers rows a crashed process left "sending",
looks up rows whose fate is unknown (`reconcile`), claims due rows atomically, sends each
once, classifies a failure as retriable or permanent, and records
every attempt. Retries back off exponentially with jitter up to a cap
(`inbox.outbox.backoff`), and stop after `max_attempts`: a row is never retried forever, and a
failed row stays visible in `parity outbox list`. A sender adds only its transport, its error
classification and its lookup; the states, attempts, retry curve and audit rows are these."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Protocol, runtime_checkable

from sqlalchemy import Connection, Engine

from connectors.base import ConnectorHealth
from connectors.config import OutboxSettings
from inbox.db import StorageUnavailable
from inbox.models import utcnow
from inbox.outbox import (
    Claimed,
    Result,
    backoff,
    claim,
    has_work,
    note_checked,
    record,
    recover,
    release,
    renew,
    resolve_unknown,
    save_route,
    unknown_rows,
)

log = logging.getLogger(__name__)


class Retriable(Exception):
    """A failure that may pass: timeouts, refused connections, 4xx, HTTP 429 and 5xx."""


class Permanent(Exception):
    """A failure that will not pass by trying again: SMTP 5xx, HTTP 4xx, a bad address."""


class Halted(Exception):
    """A sender gave a row up because it was asked to stop (the process is shutting down),
    while waiting and with nothing of the row in flight: the row goes back to the queue,
    due at once and no attempt counted, like the rows of the batch not yet tried. Whatever
    of it went out before must be kept on the row by the sender (Twitter's `parts_sent`),
    so the next run sends only the rest."""


def http_retriable(status: int) -> bool:
    """For HTTP channels: 408, 425, 429 and 5xx may pass; any other 4xx will not."""
    return status in (408, 425, 429) or status >= 500


@dataclass(frozen=True)
class Failure:
    """What a failed send means, as its sender classifies it (richer than (retriable, text))."""

    retriable: bool
    text: str
    # The provider said when to come back (a 429's reset): used instead of the curve.
    delay_s: float | None = None
    # The provider may have carried the request out: "unknown", looked up, never resent blindly.
    unknown: bool = False
    # The provider refused us, not the row (credentials): the row goes back uncounted, due
    # after `pause_s`, and `stop` is raised so the connector stops sending for now.
    pause_s: float | None = None
    stop: BaseException | None = None
    # The row can never go this way (a thread closed to replies): when it is recorded as
    # failed, the sender's `fallback(conn, row)` queues another way in the same transaction.
    fallback: bool = False


@dataclass(frozen=True)
class Lookup:
    """What a sender found when it looked an unknown row up at its provider."""

    found: str | None  # the provider's id of the sent item; None when it is not there
    refs: Sequence[str] = ()


class ChannelSender(Protocol):
    """How one channel sends a claimed row."""

    channel: str
    # True when receivers drop a copy by an id we choose (email's Message-ID): a row left
    # "sending" by a crash is then sent again. Otherwise it becomes "unknown".
    resend_safe: bool

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        """The id receivers deduplicate on, fixed before the first attempt (or None)."""
        ...

    def send(self, row: Claimed) -> str | None:
        """Send one row; return the provider's id for it. Raise on failure."""
        ...

    def classify(self, exc: BaseException) -> tuple[bool, str] | Failure:
        """What a failure `send` raised means: (retriable, description), or a `Failure`."""
        ...


@runtime_checkable
class Reconciling(ChannelSender, Protocol):
    """A sender that can look an "unknown" row up at its provider (`reconcile`)."""

    # True when a lookup that finds nothing proves the row was never sent (it is queued
    # again); otherwise it is left "unknown" for an agent, since resending could post twice.
    resend_if_absent: bool

    def reconcile(self, row: Claimed) -> Lookup:
        """Look the row up at the provider; raise when it cannot be looked up now."""
        ...


@dataclass
class DrainReport:
    recovered: int = 0
    reconciled: int = 0
    sent: int = 0
    retried: int = 0
    unknown: int = 0
    failed: int = 0
    outcomes: dict[int, str] = field(default_factory=dict)


# A row looked up a moment ago is not looked up again before this: the provider is likely
# still unreachable, and each lookup costs a request.
RECONCILE_EVERY_S = 60.0
# A claimed row begins its send with its lease at most this old. The lease is minutes long;
# a second of it is what one statement a second for the rows waiting their turn costs, where
# a statement per row sent (a commit each) slowed a drain of quick sends.
RENEW_EVERY_S = 1.0


def as_failure(verdict: tuple[bool, str] | Failure) -> Failure:
    return verdict if isinstance(verdict, Failure) else Failure(*verdict)


class OutboxDrainer:
    """Sends one channel's outbox rows; `run` is the daemon's supervised loop."""

    def __init__(
        self,
        engine: Engine,
        sender: ChannelSender,
        settings: OutboxSettings,
        *,
        worker: str,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.sender = sender
        self.settings = settings
        self.worker = worker
        self.rand = rand
        self.name = f"outbox-{sender.channel}"
        self.health = ConnectorHealth()
        # Tests set this to play a crash after the provider accepted a row, before it is
        # recorded.
        self.after_send: Callable[[Claimed], None] | None = None
        self._checked: dict[int, float] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def attempt(self, row: Claimed) -> tuple[Result, Failure | None]:
        """Send one claimed row and say what came of it; never raises for a send failure."""
        now = utcnow()
        expiry = timedelta(hours=self.settings.ack_expire_hours)
        if row.kind == "ack" and now - row.created_at > expiry:
            return Result(
                "failed",
                f"expired: not sent within {self.settings.ack_expire_hours} h of being queued; "
                "a late acknowledgement would mislead",
            ), None
        try:
            provider_id = self.sender.send(row)
        except Halted:
            raise  # not a failure: the caller gives the row back (`drain_once`)
        except Exception as exc:
            failure = as_failure(self.sender.classify(exc))
            return self._after_failure(row, failure), failure
        if self.after_send is not None:
            self.after_send(row)
        refs = getattr(self.sender, "refs", None)
        return Result(
            "sent", provider_id=provider_id, refs=refs(row, provider_id) if refs else ()
        ), None

    def _after_failure(self, row: Claimed, failure: Failure) -> Result:
        now = utcnow()
        number = row.attempts + 1
        if failure.unknown:
            return Result("unknown", failure.text)
        if not failure.retriable:
            return Result("failed", failure.text)
        if number >= self.settings.max_attempts:
            return Result("failed", f"gave up after {number} attempts: {failure.text}")
        delay = failure.delay_s or backoff(
            number, self.settings.backoff_base_s, self.settings.backoff_max_s, self.rand
        )
        return Result("retry", failure.text, next_attempt_at=now + timedelta(seconds=delay))

    def reconcile_unknown(self, halt: threading.Event | None = None) -> int:
        """Look each "unknown" row up at the provider (senders that can); returns how many
        were resolved: found (sent) or, where absence proves it, queued again."""
        sender = self.sender
        if not isinstance(sender, Reconciling):
            return 0
        resolved = 0
        now = time.monotonic()
        for row in unknown_rows(self.engine, sender.channel):
            if halt is not None and halt.is_set():
                break
            if row.payload.get("checked_at"):
                continue  # looked for already and left for an agent
            if now - self._checked.get(row.id, -1e9) < RECONCILE_EVERY_S:
                continue
            self._checked[row.id] = now
            try:
                lookup = sender.reconcile(row)
            except Exception as exc:
                failure = as_failure(sender.classify(exc))
                if failure.stop is not None:
                    raise failure.stop from exc
                # Cannot know now: the row stays "unknown" (visible to agents) and is looked
                # up again later. It is never resent blindly.
                log.warning("outbox %s: could not look it up: %s", row.id, exc)
                continue
            if lookup.found is None and not sender.resend_if_absent:
                note_checked(
                    self.engine,
                    row.id,
                    "outcome unknown and not found at the provider; left for an agent, "
                    "since sending again could deliver it twice",
                )
                continue
            if resolve_unknown(
                self.engine,
                row.id,
                found=lookup.found is not None,
                provider_id=lookup.found,
                refs=lookup.refs,
            ):
                resolved += 1
                self._checked.pop(row.id, None)
        return resolved

    def drain_once(
        self, max_rows: int | None = None, halt: threading.Event | None = None
    ) -> DrainReport:
        """Recover interrupted rows, look up unknown ones, then send every due row (or
        `max_rows`); blocking. `halt` set: the rows claimed and not yet sent go back."""
        report = DrainReport()
        channel = self.sender.channel
        # Look before writing: on SQLite a write transaction holds up intake, and most polls
        # find nothing due and no lease run out.
        if has_work(self.engine, channel):
            report.recovered = recover(self.engine, channel, resend=self.sender.resend_safe)
        report.reconciled = self.reconcile_unknown(halt)
        if not has_work(self.engine, channel):
            return report
        lease = timedelta(seconds=self.settings.lease_seconds)
        done = 0
        while max_rows is None or done < max_rows:
            batch = claim(
                self.engine,
                channel,
                self.worker,
                limit=self.settings.batch_size if max_rows is None else max_rows - done,
                lease=lease,
                assign_id=self.sender.assign_id,
            )
            if not batch:
                break
            leased_at, ours = self.clock(), {row.id for row in batch}
            for index, claimed in enumerate(batch):
                if halt is not None and halt.is_set():
                    for rest in batch[index:]:
                        # Never sent: back in the queue, and no attempt counted.
                        release(self.engine, rest, self.worker, "stopped before sending", utcnow())
                    return report
                # Each row begins its send with its lease at most RENEW_EVERY_S old: the rows
                # still waiting are renewed together once that much time has gone, one
                # statement for all of them rather than one per row sent.
                if self.clock() - leased_at >= RENEW_EVERY_S:
                    ours = renew(self.engine, batch[index:], self.worker, utcnow() + lease)
                    leased_at = self.clock()
                if claimed.id not in ours:
                    log.warning(
                        "outbox %s: its lease ran out before its turn; not sent here", claimed.id
                    )
                    continue
                try:
                    self._one(claimed, report)
                except Halted as stopped:
                    release(self.engine, claimed, self.worker, str(stopped), utcnow())
                    for rest in batch[index + 1 :]:
                        release(self.engine, rest, self.worker, "stopped before sending", utcnow())
                    return report
                done += 1
        return report

    def _routed(self, row: Claimed) -> Claimed:
        """An agent's reply from the inbox has no route yet (acknowledgements are planned with
        one): the sender's `reply_route` gives it one, kept on the row so a check after a
        crash looks in the right place."""
        route_of = getattr(self.sender, "reply_route", None)
        if route_of is None or row.payload.get("mode"):
            return row
        route: dict[str, object] = route_of(row)
        save_route(self.engine, row.id, route)
        return replace(row, payload=route)

    def _one(self, claimed: Claimed, report: DrainReport) -> None:
        row = self._routed(claimed)
        result, failure = self.attempt(row)
        if failure is not None and failure.pause_s is not None:
            # Refused before doing anything, and this channel stops sending for now: the
            # row was not attempted, so no attempt is counted.
            at = utcnow() + timedelta(seconds=failure.pause_s)
            release(self.engine, row, self.worker, failure.text, at)
            self.health.error(f"outbox {row.id}: {failure.text}")
            if failure.stop is not None:
                raise failure.stop
            return
        then: Callable[[Connection], None] | None = None
        fallback = getattr(self.sender, "fallback", None)
        if failure is not None and failure.fallback and fallback and result.outcome == "failed":

            def then(conn: Connection) -> None:
                fallback(conn, row)

        record(self.engine, row, self.worker, result, then=then)
        report.outcomes[row.id] = result.outcome
        if result.outcome == "sent":
            report.sent += 1
            self.health.success()
        else:
            if result.outcome == "retry":
                report.retried += 1
            elif result.outcome == "unknown":
                report.unknown += 1
            else:
                report.failed += 1
            self.health.error(f"outbox {row.id}: {result.error}")
        log.info(
            "outbox %s (%s to %s): %s%s",
            row.id,
            row.kind,
            row.recipient,
            result.outcome,
            f": {result.error}" if result.error else "",
        )

    def notify(self) -> None:
        """Called from any thread when a row was queued: look now instead of at the next poll."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not stop.is_set():
            self._wake.clear()
            try:
                report = await asyncio.to_thread(self.drain_once)
                self.health.details.update(
                    {
                        "last_drain": {
                            "sent": report.sent,
                            "retried": report.retried,
                            "failed": report.failed,
                            "recovered": report.recovered,
                        }
                    }
                )
            except StorageUnavailable as exc:
                self.health.error(f"storage unavailable: {exc}")
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(
                    waiters, timeout=self.settings.poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
