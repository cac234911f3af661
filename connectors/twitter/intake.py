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

Failures, classified here and handled by the poller base (connectors/poller.py, which also
holds the poller lock and publishes the common status): a 429 waits for x-rate-limit-reset
and repeats the same request (nothing is skipped, the checkpoint has not moved); a 402
"credits depleted" pauses the connector with that reason; a 401 disables it with a clear
status and no restart loop; a 403 stops the one stream it concerns (an app without DM access
still reads mentions); anything else backs off with jitter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine

from connectors import poller
from connectors.config import OutboxSettings
from connectors.poller import Disable, Poller, Retry, iso, iso_epoch, next_step, sleep_or_stop
from connectors.twitter.api import Budget, XApi, XError, seconds_until
from connectors.twitter.auth import TwitterCredentials
from connectors.twitter.outbox import (
    ACK_STATE,
    Stop,
    TwitterSender,
    drainer,
    recover_orphans,
    tally,
)
from connectors.twitter.settings import TwitterSettings
from inbox.db import StorageUnavailable
from inbox.models import utcnow
from normalizer.intake import CheckpointUpdate, RawInput, load_checkpoint

log = logging.getLogger(__name__)

CONNECTOR = "twitter"
CHANNEL = "twitter"
# The store refusing writes for a moment: try again soon (a failover takes seconds).
STORE_RETRY = Retry(base_s=2.0, cap_s=60.0)


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
            "last_poll_at": iso(self.last_poll_at),
            "waiting_until": iso_epoch(self.waiting_until),
            "fetched": self.fetched,
            "stored": self.stored,
            "skipped_own": self.skipped_own,
            "skipped_other": self.skipped_other,
            "cursor": self.cursor,
        }


class TwitterConnector(Poller):
    name = "twitter"
    standby_note = "another instance holds the twitter poller lock"

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
        timezone: str = "UTC",
        outbox: OutboxSettings | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        super().__init__(engine, CONNECTOR, standby_retry_seconds=lock_retry_s, label="twitter")
        # The business hours' time zone, in which a promised time is worded.
        self.timezone = timezone
        self.settings = settings
        self.account_id = settings.user_id
        self.on_stored = on_stored
        self.delivery_poll_s = delivery_poll_s
        self.lock_retry_s = lock_retry_s
        self.budgets: dict[str, Budget] = {}
        self.api = XApi(
            settings.api_base_url,
            credentials,
            settings.user_id,
            timeout=api_timeout,
            on_budget=self._on_budget,
            media_processing_timeout_s=settings.media_processing_timeout_s,
        )
        # The drainer's thread's view of the connector stopping: set by the delivery loop,
        # it also ends the sender's wait for X's processing (tests may pass their own).
        self.stopping = stopping if stopping is not None else threading.Event()
        # The shared outbox drainer, run by the holder of the poller lock: the one sender.
        self.delivery = drainer(
            engine,
            TwitterSender(
                self.api,
                engine,
                credits_retry_seconds=settings.credits_retry_seconds,
                halt=self.stopping,
            ),
            instance,
            outbox,
        )
        self.outbox_counts: dict[str, int] = {"sent": 0, "retry": 0, "failed": 0, "unknown": 0}
        self.streams = {
            "mentions": StreamState("mentions", settings.mentions_poll_seconds),
            "dms": StreamState("dms", settings.dm_poll_seconds),
        }
        self._refused: str | None = None  # why the credentials were refused, once they were
        self.publish()

    # --- status --------------------------------------------------------------------------

    def _on_budget(self, endpoint: str, budget: Budget) -> None:
        self.budgets[endpoint] = budget

    def extras(self) -> dict[str, Any]:
        """Twitter's own status fields, next to the poller base's state, reason, pause."""
        return {
            "account_id": self.account_id,
            "api_base_url": self.settings.api_base_url,
            "rate_limits": {name: b.as_status() for name, b in sorted(self.budgets.items())},
            "streams": {name: s.status() for name, s in self.streams.items()},
            "outbox": dict(self.outbox_counts),
        }

    def classify(self, exc: BaseException) -> poller.Verdict:
        """What X's answer means: 401, 402, 403 and 429 each have their own verdict."""
        if isinstance(exc, StorageUnavailable):
            return poller.Transient(f"storage unavailable: {exc}")
        if not isinstance(exc, XError):
            return super().classify(exc)
        if exc.kind == "auth":
            return poller.AuthFailed(
                f"authentication failed ({exc}); check the credentials in "
                f"{self.settings.consumer_key_env}, {self.settings.access_token_env} "
                "and their secrets"
            )
        if exc.kind == "forbidden":
            return poller.Fatal(f"forbidden: {exc}")
        if exc.kind == "credits":
            return poller.Paused(f"credits depleted: {exc}", self.settings.credits_retry_seconds)
        if exc.kind == "rate_limited":
            return poller.RateLimited(until=exc.reset_at, reason=str(exc))
        return poller.Transient(str(exc))

    # --- running ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await super().run(stop)
        finally:
            self.api.close()

    async def serve(self, stop: asyncio.Event) -> None:
        halt = asyncio.Event()  # set when authentication failed: everything stops
        await asyncio.gather(
            self._poll_loop("mentions", stop, halt),
            self._poll_loop("dms", stop, halt),
            self._delivery_loop(stop, halt),
        )
        if halt.is_set():
            raise Disable(self._refused or "authentication failed")

    def _refuse(self, reason: str, halt: asyncio.Event) -> None:
        # Shown at once; the poller base disables the connector once every loop has ended.
        self._refused = reason
        self.state, self.reason = "disabled", reason
        self.publish()
        halt.set()

    async def _poll_loop(self, name: str, stop: asyncio.Event, halt: asyncio.Event) -> None:
        stream = self.streams[name]
        failures = 0
        while not (stop.is_set() or halt.is_set()):
            if await self.wait_out_pause(stop, halt):
                return
            wait: float = stream.interval
            try:
                await (self.poll_mentions(stop) if name == "mentions" else self.poll_dms(stop))
                failures = 0
                stream.state, stream.reason = "ok", None
                self.resume()
                self.health.success()
            except (XError, StorageUnavailable) as exc:
                verdict = self.classify(exc)
                if isinstance(verdict, poller.AuthFailed):
                    self._refuse(verdict.reason, halt)
                    return
                if isinstance(verdict, poller.Fatal):
                    if name == "dms":
                        # The worker plans acknowledgements (normalizer/worker.py): it
                        # reads from the store that DMs cannot be sent, whatever process
                        # it runs in. Stored before the stream says so.
                        refused = CheckpointUpdate(*ACK_STATE, {"dm_available": False})
                        try:
                            await asyncio.to_thread(self.commit, [], [refused])
                        except StorageUnavailable as down:
                            # Then a DM acknowledgement is queued and fails at X with
                            # the reason on the case: worse wording, nothing lost.
                            log.warning("could not store that DMs are refused: %s", down)
                    stream.state, stream.reason = "disabled", verdict.reason
                    self.health.error(f"{name}: {exc}")
                    log.error("twitter %s stopped: %s", name, exc)
                    self.publish()
                    return
                if isinstance(verdict, poller.Paused):
                    stream.state, stream.reason = "paused", str(exc)
                    self.pause(verdict.reason, verdict.seconds)
                    continue
                failures += 1
                policy = (
                    STORE_RETRY
                    if isinstance(exc, StorageUnavailable)
                    else Retry(base_s=5.0, cap_s=min(900.0, max(stream.interval, 5.0) * 8))
                )
                step = next_step(verdict, failures, policy, time.time())
                stream.state, stream.reason = "error", step.reason
                self.health.error(
                    step.reason if isinstance(exc, StorageUnavailable) else f"{name}: {exc}"
                )
                wait = step.wait_s or 0.0
            self.publish()
            if await sleep_or_stop(wait, stop, halt):
                return

    async def _delivery_loop(self, stop: asyncio.Event, halt: asyncio.Event) -> None:
        sending = self.stopping  # the drainer's thread's view of `stop` and `halt`
        sending.clear()  # a serve after a restart sends again
        watcher = asyncio.create_task(_set_when(sending, stop, halt))
        try:
            await self._deliver(stop, halt, sending)
        finally:
            watcher.cancel()

    async def _deliver(
        self, stop: asyncio.Event, halt: asyncio.Event, sending: threading.Event
    ) -> None:
        recovered = False
        while not (stop.is_set() or halt.is_set()):
            if await self.wait_out_pause(stop, halt):
                return
            wait = self.delivery_poll_s
            try:
                if not recovered:
                    # We hold the poller lock, so rows still "sending" are a dead process's;
                    # the drain below looks them up at X.
                    found = await asyncio.to_thread(recover_orphans, self.engine)
                    self.outbox_counts["unknown"] += found
                    recovered = True
                report = await asyncio.to_thread(self.delivery.drain_once, None, sending)
                tally(self.outbox_counts, report)
            except Stop as exc:
                if exc.error.kind == "auth":
                    self._refuse(f"authentication failed while sending ({exc.error})", halt)
                    return
                self.pause(f"credits depleted: {exc.error}", self.settings.credits_retry_seconds)
            except StorageUnavailable as exc:
                self.health.error(f"outbox: storage unavailable: {exc}")
                wait = max(wait, 2.0)
            except Exception as exc:  # one bad pass must not stop every send
                log.exception("twitter delivery failed")
                self.health.error(f"outbox: {type(exc).__name__}: {exc}")
                wait = max(wait, 5.0)
            self.publish()
            if await sleep_or_stop(wait, stop, halt):
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
        self.publish()
        stopped = await sleep_or_stop(wait, stop)
        stream.state, stream.reason, stream.waiting_until = "ok", None, None
        self.publish()
        return stopped

    def _stored(self, stream: StreamState, page: Page, fetched: int, new: int) -> None:
        stream.fetched += fetched
        stream.stored += new
        stream.skipped_own += page.own
        stream.skipped_other += page.other
        if new and self.on_stored is not None:
            self.on_stored(new)
        self.publish()

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
                        self.commit, [], [CheckpointUpdate(CONNECTOR, key, {"since_id": since_id})]
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
                self.commit, page.items, [CheckpointUpdate(CONNECTOR, key, value)]
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
                        self.commit,
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
            # DMs could be read, so they may be sent: said with the cursor, in its transaction.
            results = await asyncio.to_thread(
                self.commit,
                page.items,
                [
                    CheckpointUpdate(CONNECTOR, key, value),
                    CheckpointUpdate(*ACK_STATE, {"dm_available": True}),
                ],
            )
            new = sum(not r.duplicate for r in results)
            stored += new
            stream.cursor = value
            stream.last_poll_at = utcnow()
            self._stored(stream, page, len(events), new)
            if done:
                return stored
            token = next_token


async def _set_when(flag: threading.Event, *events: asyncio.Event) -> None:
    """Set `flag` once any of `events` is set (a worker thread cannot await an event)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        flag.set()
    finally:
        for waiter in waiters:
            waiter.cancel()


__all__: Sequence[str] = ("TwitterConnector", "dm_items", "mention_items")
