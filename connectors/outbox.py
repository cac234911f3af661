"""Draining the outbox: one loop every sending connector shares, and its retry policy.

A channel plugs in a `ChannelSender` (email: connectors/email_outbox.py; SMS:
connectors/twilio.py). Twitter and Reddit drive the same store calls (`inbox.outbox`) from
their own loops (connectors/twitter_outbox.py, connectors/reddit_outbox.py), because their
pollers own the API client and its rate limits. The drainer recovers rows a crashed process
left "sending", claims due rows atomically, sends each once, classifies a failure as
retriable or permanent, and records every attempt. Retries back off exponentially with
jitter up to a cap (`inbox.outbox.backoff`), and stop after `max_attempts`: a row is never
retried forever, and a failed row stays visible in `parity outbox list`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy import Engine

from connectors.base import ConnectorHealth
from connectors.config import OutboxSettings
from inbox.db import StorageUnavailable
from inbox.models import utcnow
from inbox.outbox import Claimed, Result, backoff, claim, has_work, record, recover

log = logging.getLogger(__name__)


class Retriable(Exception):
    """A failure that may pass: timeouts, refused connections, 4xx, HTTP 429 and 5xx."""


class Permanent(Exception):
    """A failure that will not pass by trying again: SMTP 5xx, HTTP 4xx, a bad address."""


def http_retriable(status: int) -> bool:
    """For HTTP channels: 408, 425, 429 and 5xx may pass; any other 4xx will not."""
    return status in (408, 425, 429) or status >= 500


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

    def classify(self, exc: BaseException) -> tuple[bool, str]:
        """(retriable, description) of a failure `send` raised."""
        ...


@dataclass
class DrainReport:
    recovered: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0


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
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.settings = settings
        self.worker = worker
        self.rand = rand
        self.name = f"outbox-{sender.channel}"
        self.health = ConnectorHealth()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def attempt(self, row: Claimed) -> Result:
        """Send one claimed row and say what came of it; never raises for a send failure."""
        now = utcnow()
        expiry = timedelta(hours=self.settings.ack_expire_hours)
        if row.kind == "ack" and now - row.created_at > expiry:
            return Result(
                "failed",
                f"expired: not sent within {self.settings.ack_expire_hours} h of being queued; "
                "a late acknowledgement would mislead",
            )
        try:
            provider_id = self.sender.send(row)
        except Exception as exc:
            retriable, text = self.sender.classify(exc)
            number = row.attempts + 1
            if not retriable:
                return Result("failed", text)
            if number >= self.settings.max_attempts:
                return Result("failed", f"gave up after {number} attempts: {text}")
            delay = backoff(
                number, self.settings.backoff_base_s, self.settings.backoff_max_s, self.rand
            )
            return Result("retry", text, next_attempt_at=now + timedelta(seconds=delay))
        return Result("sent", provider_id=provider_id)

    def drain_once(self, max_rows: int | None = None) -> DrainReport:
        """Recover interrupted rows, then send every due row (or `max_rows`); blocking."""
        report = DrainReport()
        if not has_work(self.engine, self.sender.channel):
            return report
        report.recovered = recover(self.engine, self.sender.channel, resend=self.sender.resend_safe)
        lease = timedelta(seconds=self.settings.lease_seconds)
        done = 0
        while max_rows is None or done < max_rows:
            batch = claim(
                self.engine,
                self.sender.channel,
                self.worker,
                limit=self.settings.batch_size if max_rows is None else max_rows - done,
                lease=lease,
                assign_id=self.sender.assign_id,
            )
            if not batch:
                break
            for row in batch:
                result = self.attempt(row)
                record(self.engine, row, self.worker, result)
                done += 1
                if result.outcome == "sent":
                    report.sent += 1
                    self.health.success()
                elif result.outcome == "retry":
                    report.retried += 1
                    self.health.error(f"outbox {row.id}: {result.error}")
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
        return report

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
