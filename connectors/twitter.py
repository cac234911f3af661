"""The Twitter/X connector: mentions and direct messages into intake, the outbox out to X.

Intake keeps docs/architecture/promises.md, promise 1: the cursor advances in the same
transaction as the messages it covers:
- mentions: each page is stored together with the checkpoint. While a round of pages is
  under way the checkpoint holds the round's pagination token, and `since_id` advances to the
  round's newest id with the last page, so a restart resumes exactly where it stopped;
- DMs have no since_id. The checkpoint is the newest event's id and time. Each poll reads
  from the newest event back to `dm_overlap_seconds` before that time; the repeats in the
  overlap are recognised by intake (source key = the event id) and add nothing.
Our own tweets and DMs (the support account's) are never stored: otherwise our own
acknowledgements would come back as customer messages and be acknowledged in turn.

Failures: a 429 waits for x-rate-limit-reset and repeats the same request (nothing is
skipped, the checkpoint has not moved); a 402 "credits depleted" pauses the connector with
that reason; a 401 disables it with a clear status and no restart loop; a 403 stops the one
stream it concerns (an app without DM access still reads mentions).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine

from connectors.base import ConnectorHealth
from connectors.config import TwitterSettings
from connectors.poller_lock import PollerLock, hold
from connectors.twitter_api import Budget, XApi, XError, seconds_until
from connectors.twitter_auth import TwitterCredentials
from connectors.twitter_outbox import Delivery, Stop, plan_acks
from inbox.db import StorageUnavailable
from inbox.models import utcnow
from inbox.outbox import backoff
from normalizer.acks import AckLimits
from normalizer.eta import EtaEstimate
from normalizer.intake import CheckpointUpdate, RawInput, load_checkpoint, store

log = logging.getLogger(__name__)

CONNECTOR = "twitter"
CHANNEL = "twitter"


# --- pure: API pages to intake items ----------------------------------------------------


def _item_bytes(kind: str, account_id: str, data: Mapping[str, Any], user: Any) -> bytes:
    document = {
        "kind": kind,
        "account_id": account_id,
        "data": data,
        "includes": {"users": [user] if isinstance(user, dict) else []},
    }
    # Canonical JSON: a page fetched twice gives the same bytes, so one blob.
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _users_by_id(body: Mapping[str, Any]) -> dict[str, Any]:
    includes = body.get("includes") or {}
    return {str(u.get("id")): u for u in includes.get("users") or [] if isinstance(u, dict)}


@dataclass(frozen=True)
class Page:
    items: list[RawInput]
    own: int  # our own tweets/DMs, left out
    other: int  # events that are not messages (joins, leaves), left out


def mention_items(body: Mapping[str, Any], account_id: str, received_at: datetime) -> Page:
    users = _users_by_id(body)
    items: list[RawInput] = []
    own = 0
    for tweet in body.get("data") or []:
        author = str(tweet.get("author_id") or "")
        if author == account_id:
            own += 1
            continue
        items.append(
            _raw_input(
                "mention",
                f"tweet:{tweet.get('id')}",
                f"twitter:mentions:{account_id}",
                _item_bytes("mention", account_id, tweet, users.get(author)),
                received_at,
            )
        )
    return Page(items, own, 0)


def dm_items(body: Mapping[str, Any], account_id: str, received_at: datetime) -> Page:
    users = _users_by_id(body)
    items: list[RawInput] = []
    own = other = 0
    for event in body.get("data") or []:
        if event.get("event_type", "MessageCreate") != "MessageCreate":
            other += 1
            continue
        sender = str(event.get("sender_id") or "")
        if sender == account_id:
            own += 1
            continue
        items.append(
            _raw_input(
                "dm",
                f"dm:{event.get('id')}",
                f"twitter:dm:{account_id}",
                _item_bytes("dm", account_id, event, users.get(sender)),
                received_at,
            )
        )
    return Page(items, own, other)


def _raw_input(
    kind: str, source_key: str, address: str, payload: bytes, received_at: datetime
) -> RawInput:
    """One mention or DM as intake stores it: keyed by its X id, addressed to our account."""
    return RawInput(
        connector=CONNECTOR,
        channel=CHANNEL,
        source_key=source_key,
        payload=payload,
        envelope={"kind": kind, "address": address},
        received_at=received_at,
    )


def newest_tweet_id(*candidates: str | None) -> str | None:
    """The largest of tweet ids (64-bit snowflakes compare as numbers, not as strings)."""
    ids = [c for c in candidates if c and c.isdigit()]
    return max(ids, key=int) if ids else None


def event_time(event: Mapping[str, Any]) -> datetime | None:
    value = event.get("created_at")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def newer_event(
    current: tuple[str | None, str | None], event: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """(id, time) of whichever is newer: the current newest, or this event."""
    when = event_time(event)
    event_id = str(event.get("id") or "")
    if when is None or not event_id.isdigit():
        return current
    current_id, current_at = current
    key_new = (when, int(event_id))
    if current_at is not None and current_id is not None:
        known = datetime.fromisoformat(current_at)
        if (known, int(current_id)) >= key_new:
            return current
    return event_id, when.isoformat()


# --- the connector ---------------------------------------------------------------------------


@dataclass
class StreamState:
    name: str
    interval: float
    state: str = "starting"  # ok | waiting_rate_limit | paused | error | disabled
    reason: str | None = None
    last_poll_at: datetime | None = None
    waiting_until: float | None = None
    fetched: int = 0
    stored: int = 0
    skipped_own: int = 0
    skipped_other: int = 0
    cursor: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "last_poll_at": _iso(self.last_poll_at),
            "waiting_until": _iso_epoch(self.waiting_until),
            "fetched": self.fetched,
            "stored": self.stored,
            "skipped_own": self.skipped_own,
            "skipped_other": self.skipped_other,
            "cursor": self.cursor,
        }


class TwitterConnector:
    name = "twitter"

    def __init__(
        self,
        settings: TwitterSettings,
        engine: Engine,
        credentials: TwitterCredentials,
        *,
        instance: str,
        on_stored: Callable[[int], None] | None = None,
        delivery_poll_s: float = 2.0,
        lock_retry_s: float = 15.0,
        api_timeout: tuple[float, float] = (10.0, 30.0),
        eta: EtaEstimate | None = None,
        ack_limits: AckLimits | None = None,
        timezone: str = "UTC",
    ) -> None:
        # The business hours' time zone, in which a promised time is worded.
        self.timezone = timezone
        self.eta = eta
        self.ack_limits = ack_limits
        self.settings = settings
        self.engine = engine
        self.account_id = settings.user_id
        self.on_stored = on_stored
        self.delivery_poll_s = delivery_poll_s
        self.lock_retry_s = lock_retry_s
        self.health = ConnectorHealth()
        self.budgets: dict[str, Budget] = {}
        self.api = XApi(
            settings.api_base_url,
            credentials,
            settings.user_id,
            timeout=api_timeout,
            on_budget=self._on_budget,
        )
        self.delivery = Delivery(
            engine,
            self.api,
            worker=instance,
            credits_retry_seconds=settings.credits_retry_seconds,
        )
        self.streams = {
            "mentions": StreamState("mentions", settings.mentions_poll_seconds),
            "dms": StreamState("dms", settings.dm_poll_seconds),
        }
        self.state = "starting"  # running | standby | paused | disabled
        self.reason: str | None = None
        self.paused_until: float | None = None
        self.lock = PollerLock(engine, CONNECTOR)
        self._publish()

    # --- status --------------------------------------------------------------------------

    def _on_budget(self, endpoint: str, budget: Budget) -> None:
        self.budgets[endpoint] = budget

    def _publish(self) -> None:
        self.health.details = {
            "state": self.state,
            "reason": self.reason,
            "account_id": self.account_id,
            "api_base_url": self.settings.api_base_url,
            "paused_until": _iso_epoch(self.paused_until),
            "rate_limits": {name: b.as_status() for name, b in sorted(self.budgets.items())},
            "streams": {name: s.status() for name, s in self.streams.items()},
            "outbox": dict(self.delivery.counts),
        }

    def _disable(self, reason: str) -> None:
        self.state, self.reason = "disabled", reason
        self.health.error(reason)
        log.error("twitter connector disabled: %s", reason)
        self._publish()

    def _pause(self, reason: str) -> None:
        self.state, self.reason = "paused", reason
        self.paused_until = time.time() + self.settings.credits_retry_seconds
        self.health.error(reason)
        log.warning("twitter connector paused: %s", reason)
        self._publish()

    def _resume(self) -> None:
        # A request already under way when another one met the 402 does not end the pause:
        # only a success after the pause has run its course does.
        if self.state == "paused" and self.paused_until and time.time() < self.paused_until:
            return
        if self.state in ("paused", "starting"):
            self.state, self.reason, self.paused_until = "running", None, None

    # --- running ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not await asyncio.to_thread(self.lock.try_acquire):
            self.state, self.reason = "standby", "another instance holds the twitter poller lock"
            self._publish()
            if await _sleep(self.lock_retry_s, stop):
                return
        halt = asyncio.Event()  # set when authentication failed: everything stops
        try:
            self.state, self.reason = "running", None
            self._publish()
            await hold(
                self.lock,
                asyncio.gather(
                    self._poll_loop("mentions", stop, halt),
                    self._poll_loop("dms", stop, halt),
                    self._delivery_loop(stop, halt),
                ),
                self.lock_retry_s,
            )
            if halt.is_set():
                # Disabled, not crashed: returning would make the daemon restart us, and
                # every restart would knock on X with the same bad credentials. The lock
                # goes, so a standby (perhaps with working credentials) can take over.
                await asyncio.to_thread(self.lock.release)
                await stop.wait()
        finally:
            await asyncio.to_thread(self.lock.release)
            self.api.close()

    async def _wait_out_pause(self, *events: asyncio.Event) -> bool:
        while self.paused_until is not None and time.time() < self.paused_until:
            if await _sleep(self.paused_until - time.time(), *events):
                return True
        return False

    async def _poll_loop(self, name: str, stop: asyncio.Event, halt: asyncio.Event) -> None:
        stream = self.streams[name]
        failures = 0
        while not (stop.is_set() or halt.is_set()):
            if await self._wait_out_pause(stop, halt):
                return
            wait: float = stream.interval
            try:
                await (self.poll_mentions(stop) if name == "mentions" else self.poll_dms(stop))
                failures = 0
                stream.state, stream.reason = "ok", None
                self._resume()
                self.health.success()
            except XError as exc:
                if exc.kind == "auth":
                    self._disable(
                        f"authentication failed ({exc}); check the credentials in "
                        f"{self.settings.consumer_key_env}, {self.settings.access_token_env} "
                        "and their secrets"
                    )
                    halt.set()
                    return
                if exc.kind == "forbidden":
                    stream.state, stream.reason = "disabled", f"forbidden: {exc}"
                    self.health.error(f"{name}: {exc}")
                    log.error("twitter %s stopped: %s", name, exc)
                    self._publish()
                    return
                if exc.kind == "credits":
                    stream.state, stream.reason = "paused", str(exc)
                    self._pause(f"credits depleted: {exc}")
                    continue
                failures += 1
                stream.state, stream.reason = "error", str(exc)
                self.health.error(f"{name}: {exc}")
                wait = min(backoff(failures, 5.0, 900.0), max(stream.interval, 5.0) * 8)
            except StorageUnavailable as exc:
                failures += 1
                stream.state, stream.reason = "error", f"storage unavailable: {exc}"
                self.health.error(stream.reason)
                wait = backoff(failures, 2.0, 60.0)
            self._publish()
            if await _sleep(wait, stop, halt):
                return

    async def _delivery_loop(self, stop: asyncio.Event, halt: asyncio.Event) -> None:
        recovered = False
        while not (stop.is_set() or halt.is_set()):
            if await self._wait_out_pause(stop, halt):
                return
            wait = self.delivery_poll_s
            try:
                if not recovered:
                    # We hold the poller lock, so rows still "sending" are a dead process's.
                    await asyncio.to_thread(self.delivery.recover_orphans)
                    recovered = True
                    await asyncio.to_thread(self.delivery.reconcile_unknown)
                await asyncio.to_thread(
                    plan_acks,
                    self.engine,
                    self.settings,
                    dm_available=self.streams["dms"].state != "disabled",
                    eta=self.eta,
                    limits=self.ack_limits,
                    timezone=self.timezone,
                )
                item = await asyncio.to_thread(self.delivery.next_item)
                if item is not None:
                    await asyncio.to_thread(self.delivery.deliver, item)
                    wait = 0.0
            except Stop as exc:
                if exc.error.kind == "auth":
                    self._disable(f"authentication failed while sending ({exc.error})")
                    halt.set()
                    return
                self._pause(f"credits depleted: {exc.error}")
            except StorageUnavailable as exc:
                self.health.error(f"outbox: storage unavailable: {exc}")
                wait = max(wait, 2.0)
            except Exception as exc:  # one bad row must not stop every send
                log.exception("twitter delivery failed")
                self.health.error(f"outbox: {type(exc).__name__}: {exc}")
                wait = max(wait, 5.0)
            self._publish()
            if wait and await _sleep(wait, stop, halt):
                return

    # --- one request, waiting out rate limits ------------------------------------------

    async def _call(
        self,
        stream: StreamState,
        endpoint: str,
        request: Callable[[], dict[str, Any]],
        stop: asyncio.Event,
    ) -> dict[str, Any] | None:
        """The answer to `request`, after any rate-limit wait; None if asked to stop."""
        while True:
            budget = self.budgets.get(endpoint)
            # A used-up window: a request now would only earn a 429.
            reset_at = budget.reset_at if budget is not None and budget.remaining == 0 else None
            used_up = reset_at is not None and reset_at > time.time()
            if used_up and await self._wait_for_reset(stream, reset_at, stop):
                return None
            try:
                return await asyncio.to_thread(request)
            except XError as exc:
                if exc.kind != "rate_limited":
                    raise
                log.warning("twitter %s rate-limited: %s", endpoint, exc)
                if await self._wait_for_reset(stream, exc.reset_at, stop):
                    return None

    async def _wait_for_reset(
        self, stream: StreamState, reset_at: float | None, stop: asyncio.Event
    ) -> bool:
        wait = seconds_until(reset_at)
        stream.state = "waiting_rate_limit"
        stream.reason = "rate limit reached; waiting for x-rate-limit-reset"
        stream.waiting_until = time.time() + wait
        self._publish()
        stopped = await _sleep(wait, stop)
        stream.state, stream.reason, stream.waiting_until = "ok", None, None
        self._publish()
        return stopped

    def _stored(self, stream: StreamState, page: Page, fetched: int, new: int) -> None:
        stream.fetched += fetched
        stream.stored += new
        stream.skipped_own += page.own
        stream.skipped_other += page.other
        if new and self.on_stored is not None:
            self.on_stored(new)
        self._publish()

    # --- mentions ----------------------------------------------------------------------

    def _mentions_key(self) -> str:
        return f"mentions:{self.account_id}"

    async def poll_mentions(self, stop: asyncio.Event) -> int:
        """One round: every mention since the checkpoint, page by page; new items stored."""
        stream = self.streams["mentions"]
        key = self._mentions_key()
        saved = await asyncio.to_thread(load_checkpoint, self.engine, CONNECTOR, key) or {}
        since_id: str | None = saved.get("since_id")
        unfinished = saved.get("round") or {}
        token: str | None = unfinished.get("next_token")
        newest: str | None = unfinished.get("newest_id")
        stored = 0
        while True:
            try:
                body = await self._call(
                    stream, "mentions", partial(self.api.mentions, since_id, token), stop
                )
            except XError as exc:
                if exc.kind == "rejected" and token is not None:
                    # A saved pagination token X no longer accepts: read the round again from
                    # since_id. What was already stored is recognised by intake.
                    log.warning("mentions pagination token refused (%s); restarting round", exc)
                    token, newest = None, None
                    await asyncio.to_thread(
                        store,
                        self.engine,
                        [],
                        [CheckpointUpdate(CONNECTOR, key, {"since_id": since_id})],
                    )
                    continue
                raise
            if body is None:
                return stored
            tweets = body.get("data") or []
            meta = body.get("meta") or {}
            page = mention_items(body, self.account_id, utcnow())
            newest = newest_tweet_id(
                newest, meta.get("newest_id"), *(str(t.get("id")) for t in tweets)
            )
            next_token = meta.get("next_token")
            if next_token and next_token != token:
                value: dict[str, Any] = {
                    "since_id": since_id,
                    "round": {"newest_id": newest, "next_token": next_token},
                }
            else:
                next_token = None
                value = {"since_id": newest_tweet_id(newest, since_id)}
            results = await asyncio.to_thread(
                store, self.engine, page.items, [CheckpointUpdate(CONNECTOR, key, value)]
            )
            new = sum(not r.duplicate for r in results)
            stored += new
            stream.cursor = value
            stream.last_poll_at = utcnow()
            self._stored(stream, page, len(tweets), new)
            if not next_token:
                return stored
            token = next_token

    # --- direct messages ---------------------------------------------------------------

    def _dm_key(self) -> str:
        return f"dm_events:{self.account_id}"

    async def poll_dms(self, stop: asyncio.Event) -> int:
        """One round: DM events from the newest back to the overlap before the checkpoint."""
        stream = self.streams["dms"]
        key = self._dm_key()
        saved = await asyncio.to_thread(load_checkpoint, self.engine, CONNECTOR, key) or {}
        known: tuple[str | None, str | None] = (saved.get("newest_id"), saved.get("newest_at"))
        unfinished = saved.get("round") or {}
        token: str | None = unfinished.get("next_token")
        newest: tuple[str | None, str | None] = (
            unfinished.get("newest_id", known[0]),
            unfinished.get("newest_at", known[1]),
        )
        horizon = (
            datetime.fromisoformat(known[1]) - timedelta(seconds=self.settings.dm_overlap_seconds)
            if known[1]
            else None
        )
        stored = 0
        while True:
            try:
                body = await self._call(
                    stream, "dm_events", partial(self.api.dm_events, token), stop
                )
            except XError as exc:
                if exc.kind == "rejected" and token is not None:
                    log.warning("dm pagination token refused (%s); restarting round", exc)
                    token = None
                    await asyncio.to_thread(
                        store,
                        self.engine,
                        [],
                        [
                            CheckpointUpdate(
                                CONNECTOR,
                                key,
                                {"newest_id": known[0], "newest_at": known[1]},
                            )
                        ],
                    )
                    continue
                raise
            if body is None:
                return stored
            events = body.get("data") or []
            page = dm_items(body, self.account_id, utcnow())
            reached_known = False
            for event in events:
                newest = newer_event(newest, event)
                when = event_time(event)
                if horizon is not None and when is not None and when < horizon:
                    reached_known = True
            next_token = (body.get("meta") or {}).get("next_token")
            done = reached_known or not next_token or next_token == token
            value: dict[str, Any] = {"newest_id": newest[0], "newest_at": newest[1]}
            if not done:
                value = {
                    "newest_id": known[0],
                    "newest_at": known[1],
                    "round": {
                        "next_token": next_token,
                        "newest_id": newest[0],
                        "newest_at": newest[1],
                    },
                }
            results = await asyncio.to_thread(
                store, self.engine, page.items, [CheckpointUpdate(CONNECTOR, key, value)]
            )
            new = sum(not r.duplicate for r in results)
            stored += new
            stream.cursor = value
            stream.last_poll_at = utcnow()
            self._stored(stream, page, len(events), new)
            if done:
                return stored
            token = next_token


async def _sleep(seconds: float, *events: asyncio.Event) -> bool:
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


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _iso_epoch(value: float | None) -> str | None:
    return _iso(datetime.fromtimestamp(value, UTC)) if value is not None else None


__all__: Sequence[str] = ("TwitterConnector", "dm_items", "mention_items")
