"""One poller base for the polling connectors (IMAP, Twitter/X, Reddit).

What every poller needs, written once (see docs/architecture/polling.md):
- the poller lock and standby: one instance polls an account (or an IMAP folder); any other
  asks for the lock every `standby_retry_seconds`, and the holder stops when the lock's
  database session is gone (connectors/poller_lock.py);
- a verdict per error, from the connector's own `classify`: `AuthFailed`, `RateLimited`,
  `Paused`, `Transient` or `Fatal`, and one rule (`next_step`) that turns a verdict into what
  status says and how long to wait: bad credentials disable the poller without a restart
  loop (and free the lock for a standby), or, where a connector asks for it, are retried
  slowly; a 429 waits for its reset or Retry-After; network errors back off with jitter on
  the outbox's retry curve;
- pauses (Twitter's 402 "credits depleted") that hold every loop of the connector;
- checkpoints committed in the same transaction as the data they cover (`commit`);
- one status shape: `state`, `reason` and `paused_until` for every poller, then the
  connector's own fields (`extras`), which keep the names they always had.

A connector keeps what is its own: what to fetch, how to turn it into raw input, how to
classify an error.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from connectors.base import ConnectorHealth
from connectors.poller_lock import PollerLock, hold
from inbox.outbox import backoff
from normalizer.intake import CheckpointUpdate, RawInput, Stored, store

log = logging.getLogger(__name__)


# --- what an error means ----------------------------------------------------------------------


@dataclass(frozen=True)
class AuthFailed:
    """The credentials were refused: asking again with the same ones only earns refusals."""

    reason: str


@dataclass(frozen=True)
class RateLimited:
    """Asked too often: wait until `until` (epoch seconds) or `after` seconds, then ask again."""

    until: float | None = None
    after: float | None = None
    reason: str = "rate limit reached"


@dataclass(frozen=True)
class Paused:
    """The service will not serve us for a while (no credits left): every loop waits."""

    reason: str
    seconds: float


@dataclass(frozen=True)
class Transient:
    """A network error, a 5xx, the store away for a moment: back off and try again."""

    reason: str


@dataclass(frozen=True)
class Fatal:
    """This source cannot work with these settings (a 403): it stops; the others go on."""

    reason: str


Verdict = AuthFailed | RateLimited | Paused | Transient | Fatal


@dataclass(frozen=True)
class Retry:
    """How a poller retries: the backoff curve, and what bad credentials do."""

    base_s: float = 1.0
    cap_s: float = 300.0
    # None: bad credentials disable the poller until a restart. A number: they are retried
    # that often (give or take a tenth), for a mailbox whose password an admin may fix.
    auth_retry_s: float | None = None


@dataclass(frozen=True)
class Step:
    """What a verdict means now: the state status shows, and the wait (None: stop)."""

    state: str
    wait_s: float | None
    reason: str


def next_step(
    verdict: Verdict,
    failures: int,
    policy: Retry,
    now: float,
    rand: Callable[[], float] = random.random,
) -> Step:
    """The one rule every poller follows after an error (`failures` counts from 1)."""
    if isinstance(verdict, AuthFailed):
        if policy.auth_retry_s is None:
            return Step("disabled", None, verdict.reason)
        return Step("auth failed", policy.auth_retry_s * (0.9 + 0.2 * rand()), verdict.reason)
    if isinstance(verdict, RateLimited):
        if verdict.until is not None:
            wait = verdict.until - now
        elif verdict.after is not None:
            wait = verdict.after
        else:
            wait = backoff(failures, policy.base_s, policy.cap_s, rand)
        return Step("waiting_rate_limit", max(0.0, wait), verdict.reason)
    if isinstance(verdict, Paused):
        return Step("paused", max(0.0, verdict.seconds), verdict.reason)
    if isinstance(verdict, Fatal):
        return Step("disabled", None, verdict.reason)
    return Step("error", backoff(failures, policy.base_s, policy.cap_s, rand), verdict.reason)


def retry_after(headers: Mapping[str, str], attempt: int, cap_s: float) -> float:
    """How long to wait out a 429: Retry-After, else the window's reset, else backoff.

    Both headers count seconds here (Reddit's `x-ratelimit-reset` does; an HTTP-date
    Retry-After is not a number and falls through to the backoff). At least one second,
    so a "0" never turns the wait into a busy loop; at most `cap_s`.
    """
    for name in ("retry-after", "x-ratelimit-reset"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        if seconds >= 0:
            return min(cap_s, max(1.0, seconds))
    return min(cap_s, 2.0**attempt * random.uniform(1.0, 1.5))


async def sleep_or_stop(seconds: float, *events: asyncio.Event) -> bool:
    """Wait `seconds` or until one of `events` is set; True when one was."""
    if any(e.is_set() for e in events):
        return True
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return any(e.is_set() for e in events)


def iso(value: datetime | None) -> str | None:
    """A status timestamp: UTC, whole seconds, "Z"."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_epoch(value: float | None) -> str | None:
    return iso(datetime.fromtimestamp(value, UTC)) if value is not None else None


# --- the base ---------------------------------------------------------------------------------


class Poller:
    """A polling connector (or one IMAP folder): the lock, standby, disabling and status.

    A subclass sets `name` and `label`, implements `serve` (the polling, run only while the
    lock is ours) and `classify`, and adds its own status fields in `extras`.
    """

    name: str = "poller"
    # What a standby says in its log and status while another instance holds the lock.
    standby_note = "another instance holds the poller lock"

    def __init__(
        self, engine: Engine, lock_name: str, *, standby_retry_seconds: float, label: str = ""
    ) -> None:
        self.engine = engine
        self.lock = PollerLock(engine, lock_name)
        self.standby_retry_seconds = standby_retry_seconds
        self.label = label or lock_name
        self.health = ConnectorHealth()
        self.state = "starting"  # running | standby | paused | disabled
        self.reason: str | None = None
        self.paused_until: float | None = None

    # --- what a subclass provides ---------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set. Raising `Disable` disables the poller."""
        raise NotImplementedError

    def classify(self, exc: BaseException) -> Verdict:
        """What an error means for this connector; anything unknown is transient."""
        return Transient(f"{type(exc).__name__}: {exc}")

    def extras(self) -> dict[str, Any]:
        """The connector's own status fields, next to the common ones."""
        return {}

    def standing_by(self) -> None:
        """Called each time the lock was refused (IMAP shows it in its folder's status)."""

    def took_over(self) -> None:
        """Called when the lock was taken after standing by."""

    # --- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The fields every poller reports: its state, why, and the end of a pause."""
        return {
            "state": self.state,
            "reason": self.reason,
            "paused_until": iso_epoch(self.paused_until),
        }

    def publish(self) -> None:
        """Replace the health details as a whole: the heartbeat thread reads them any time."""
        self.health.details = {**self.status(), **self.extras()}

    # --- the lock ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        # Nothing is opened, signed in or fetched before the lock is ours: a standby spends
        # none of the account's rate budget and touches no mailbox.
        while not await asyncio.to_thread(self.lock.try_acquire):
            if self.state != "standby":
                log.info("%s: %s; standing by", self.label, self.standby_note)
            self.state, self.reason = "standby", self.standby_note
            self.standing_by()
            self.publish()
            if await sleep_or_stop(self.standby_retry_seconds, stop):
                return
        if self.state == "standby":
            log.info("%s: took the poller lock over", self.label)
            self.took_over()
        self.state, self.reason = "running", None
        self.publish()
        try:
            await hold(self.lock, self._serve_or_disable(stop), self.standby_retry_seconds)
        finally:
            await asyncio.to_thread(self.lock.release)

    async def _serve_or_disable(self, stop: asyncio.Event) -> None:
        try:
            await self.serve(stop)
        except Disable as exc:
            self.disable(exc.reason)
            # Disabled, not crashed: returning would make the daemon restart us, and every
            # restart would knock with the same bad credentials. The lock goes, so a standby
            # (perhaps with working credentials) can take over.
            await asyncio.to_thread(self.lock.release)
            await stop.wait()

    def disable(self, reason: str) -> None:
        self.state, self.reason = "disabled", reason
        self.health.error(reason)
        log.error("%s connector disabled: %s", self.name, reason)
        self.publish()

    # --- pauses ---------------------------------------------------------------------------

    def pause(self, reason: str, seconds: float) -> None:
        self.state, self.reason = "paused", reason
        self.paused_until = time.time() + seconds
        self.health.error(reason)
        log.warning("%s connector paused: %s", self.name, reason)
        self.publish()

    def resume(self) -> None:
        """After a success: a pause ends once it has run its course, "starting" ends now.

        A request already under way when another one met the pause does not end it.
        """
        if self.state == "paused" and self.paused_until and time.time() < self.paused_until:
            return
        if self.state in ("paused", "starting"):
            self.state, self.reason, self.paused_until = "running", None, None

    async def wait_out_pause(self, *events: asyncio.Event) -> bool:
        """Wait while paused; True when one of `events` was set meanwhile."""
        while self.paused_until is not None and time.time() < self.paused_until:
            if await sleep_or_stop(self.paused_until - time.time(), *events):
                return True
        return False

    # --- checkpoints ----------------------------------------------------------------------

    def commit(
        self, items: Sequence[RawInput], checkpoints: Sequence[CheckpointUpdate]
    ) -> list[Stored]:
        """Store `items` and the checkpoints that cover them in one transaction.

        A crash before the commit leaves neither (the items are fetched again), after it
        both: a checkpoint never runs ahead of what is stored.
        """
        if not items and not checkpoints:
            return []
        return store(self.engine, list(items), list(checkpoints))


class Disable(Exception):
    """Raised inside `serve`: the poller stops for good (until a restart) and says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
