"""Telegram in: long polling `getUpdates` under the poller lock, or a webhook; media after.

Polling (`mode = "polling"`): one instance holds the poller lock and asks `getUpdates`
with the offset stored in the checkpoints table. Each answer's updates are stored raw with
the next offset in the same transaction (`Poller.commit`): the offset tells Telegram it may
forget the updates before it, and it is sent only on the next call, after that commit. A
crash before the commit loses nothing (Telegram sends them again), after it doubles nothing
(the offset moved with them, and the keys are stable anyway). A standby takes the lock and
the offset over when the holder dies.

Webhook (`mode = "webhook"`): `POST /telegram/webhook` on the HTTP listener. The header
`X-Telegram-Bot-Api-Secret-Token` must equal the secret (constant time) or the answer is
403 and nothing is read. A readable update is stored through intake before the 200; a
signed but unreadable body is stored too, under a key made from its bytes, and the parser
files it as a dead letter with those bytes (answering an error would only make Telegram
send the same bytes again). Group messages and edits are counted and answered 200.

Either way the files of stored messages (photos, documents, voice) are fetched with
`getFile` after the store, by the shared media step (connectors/media.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import mimetypes
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, select

from connectors.base import ConnectorHealth
from connectors.media import MediaFile, attach, extension, media_due, note_failure
from connectors.poller import (
    AuthFailed,
    Disable,
    Poller,
    RateLimited,
    Retry,
    Transient,
    Verdict,
    iso,
    next_step,
    sleep_or_stop,
)
from connectors.telegram.api import BotApi, BotApiError, hide_token
from connectors.telegram.parse import Routed, iter_media, load, route
from connectors.telegram.settings import TelegramSettings
from inbox.db import StorageUnavailable, read
from inbox.models import Message, utcnow
from inbox.secrets import Secret
from inbox.web.routes import Route
from normalizer.intake import (
    CheckpointUpdate,
    RawInput,
    Stored,
    load_checkpoint,
    unreadable_input,
)
from normalizer.message import ParseError

log = logging.getLogger(__name__)

CONNECTOR = "telegram"
CHANNEL = "telegram"
PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
Submit = Callable[[RawInput], Awaitable[Stored]]


def checkpoint_key(token: Secret) -> str:
    """The offset's checkpoint key: per bot (its id, the public part of the token), so a
    new bot's token does not start from another bot's offset."""
    return "bot:" + token.reveal().partition(":")[0]


def raw_input(payload: bytes) -> tuple[RawInput | None, Routed | None]:
    """One update's bytes to what intake stores: (input, how it was routed).

    (None, routed) for an update that is not taken in (a group message, an edit);
    an unreadable one is (input under "unreadable:<sha256>", None): stored, and the parser
    makes it a dead letter with its bytes.
    """
    try:
        routed = route(load(payload))
    except ParseError as exc:
        return unreadable_input(CONNECTOR, CHANNEL, payload, str(exc)), None
    if routed.action != "store":
        return None, routed
    return (
        RawInput(
            connector=CONNECTOR,
            channel=CHANNEL,
            source_key=routed.source_key,
            payload=payload,
            envelope={"update_id": routed.update_id},
        ),
        routed,
    )


def next_offset(updates: list[Any], current: int | None) -> int | None:
    """The offset after a getUpdates answer: one past the highest update id in it."""
    ids: list[int] = [
        int(u["update_id"])
        for u in updates
        if isinstance(u, dict)
        and isinstance(u.get("update_id"), int)
        and not isinstance(u.get("update_id"), bool)
    ]
    if not ids:
        return current
    top = max(ids) + 1
    return top if current is None else max(top, current)


@dataclass
class Counts:
    """What status shows of the intake, whichever mode: kept in the connector's health."""

    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    ignored_group: int = 0
    ignored_edited: int = 0
    ignored_other: int = 0
    bad_secret: int = 0
    last_update_at: str | None = None

    def took(self, stored: list[Stored], routed: list[Routed | None]) -> None:
        self.duplicates += sum(s.duplicate for s in stored)
        self.stored += sum(not s.duplicate for s in stored)
        self.dead_lettered += sum(r is None for r in routed)
        if stored:
            self.last_update_at = iso(utcnow())

    def ignored(self, routed: Routed) -> None:
        # Counted and logged: not taken in on purpose (docs/channels/telegram.md), never
        # dropped silently.
        log.info("telegram: update %s not taken in: %s", routed.update_id, routed.reason)
        name = f"ignored_{routed.reason}"
        setattr(self, name, getattr(self, name) + 1)
        self.last_update_at = iso(utcnow())

    def as_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "ignored": {
                "group": self.ignored_group,
                "edited": self.ignored_edited,
                "other": self.ignored_other,
            },
            "bad_secret": self.bad_secret,
            "last_update_at": self.last_update_at,
        }


# --- media: the shared step, with getFile -----------------------------------------------------


def pending_media(
    engine: Engine, limit: int = 200, now: datetime | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """Telegram messages whose files are still to fetch (newest first)."""
    with read(engine) as conn:
        rows = conn.execute(
            select(Message.id, Message.meta)
            .where(Message.channel == CHANNEL, Message.direction == "inbound")
            .order_by(Message.id.desc())
            .limit(limit)
        ).all()
        conn.rollback()
    found = []
    for message_id, meta in rows:
        meta = dict(meta or {})
        ours = meta.get(CONNECTOR) or {}
        if (
            any(True for _ in iter_media(meta))
            and not ours.get("media_fetched")
            and media_due(ours, now or utcnow())
        ):
            found.append((message_id, meta))
    return found


async def fetch_media_once(
    engine: Engine,
    api: BotApi,
    settings: TelegramSettings,
    health: ConnectorHealth,
    now: datetime | None = None,
) -> int:
    """Fetch every pending message's files that are due (a failed one waits its backoff,
    connectors/media.py); how many attachments were stored."""
    stored = 0
    now = now or utcnow()
    for message_id, meta in await asyncio.to_thread(pending_media, engine, 200, now):
        files: list[MediaFile] = []
        try:
            for media in iter_media(meta):
                size = media.get("file_size")
                if isinstance(size, int) and size > settings.media_max_bytes:
                    # Telegram said how big it is: over the cap, no attempt will change it.
                    raise _TooBig(f"{media.get('kind')} is {size} bytes, over the cap")
                data, path = await api.download(str(media["file_id"]), settings.media_max_bytes)
                kind = str(media.get("mime_type") or "") or _type_of(path)
                name = str(media.get("file_name") or "") or (
                    str(media.get("kind") or "file") + extension(kind)
                )
                files.append(MediaFile(kind, data, name))
        except _TooBig as exc:
            await asyncio.to_thread(
                note_failure, engine, message_id, meta, CONNECTOR, str(exc), max_attempts=1
            )
            continue
        except BotApiError as exc:
            attempts = settings.media_attempts
            await asyncio.to_thread(
                note_failure,
                engine,
                message_id,
                meta,
                CONNECTOR,
                str(exc),
                max_attempts=attempts,
                now=now,
            )
            health.error(f"message {message_id}: media: {exc}")
            continue
        stored += await asyncio.to_thread(attach, engine, message_id, CONNECTOR, files)
    return stored


class _TooBig(Exception):
    pass


def _type_of(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


# --- polling -----------------------------------------------------------------------------------


def classify(exc: BaseException) -> Verdict:
    """What a failed getUpdates means for the poller."""
    if isinstance(exc, StorageUnavailable):
        return Transient(f"storage unavailable: {exc}")
    if isinstance(exc, BotApiError):
        if exc.code in (401, 404) or exc.status in (401, 404):
            # The Bot API answers 401 (or 404 for a malformed one) to a token it refuses.
            return AuthFailed(f"Telegram refused the bot token: {exc}")
        if exc.code == 429 or exc.status == 429:
            return RateLimited(after=exc.retry_after, reason=str(exc))
        # 409: a webhook is set, or another getUpdates runs: transient until it is not.
        return Transient(str(exc))
    return Transient(hide_token(f"{type(exc).__name__}: {exc}"))


class TelegramPoller(Poller):
    """Long polling under the poller lock; the lock holder also fetches the files."""

    name = CONNECTOR

    def __init__(
        self,
        settings: TelegramSettings,
        engine: Engine,
        token: Secret,
        *,
        on_stored: Callable[[int], None] | None = None,
        retry: Retry | None = None,
    ) -> None:
        super().__init__(
            engine,
            "telegram:" + checkpoint_key(token),
            standby_retry_seconds=settings.standby_retry_seconds,
            label="telegram",
        )
        self.settings = settings
        self.token = token
        self.api = BotApi(settings, token)
        self.on_stored = on_stored
        self.retry = retry or Retry(base_s=1.0, cap_s=300.0)
        self.counts = Counts()
        self.key = checkpoint_key(token)
        self.offset: int | None = None
        # Tests set this to play a crash between fetching and committing.
        self.before_commit: Callable[[list[RawInput]], None] | None = None

    def classify(self, exc: BaseException) -> Verdict:
        return classify(exc)

    def extras(self) -> dict[str, Any]:
        return {"mode": "polling", "offset": self.offset, **self.counts.as_dict()}

    async def poll_once(self) -> int:
        """One getUpdates and its commit; how many new updates were stored."""
        saved = await asyncio.to_thread(load_checkpoint, self.engine, CONNECTOR, self.key)
        current = saved.get("offset") if saved else None
        self.offset = current if isinstance(current, int) else None
        updates = await self.api.get_updates(
            self.offset, self.settings.poll_limit, self.settings.poll_timeout_s
        )
        items: list[RawInput] = []
        routed: list[Routed | None] = []
        for update in updates:
            # Each update is kept on its own: one replayable input per message.
            payload = json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode()
            item, how = raw_input(payload)
            if item is None:
                assert how is not None
                self.counts.ignored(how)
                continue
            items.append(item)
            routed.append(how)
        offset = next_offset(updates, self.offset)
        checkpoints = []
        if offset is not None and offset != self.offset:
            checkpoints.append(CheckpointUpdate(CONNECTOR, self.key, {"offset": offset}))
        if self.before_commit is not None:
            self.before_commit(items)
        stored = await asyncio.to_thread(self.commit, items, checkpoints)
        self.offset = offset
        self.counts.took(stored, routed)
        new = sum(not s.duplicate for s in stored)
        if new and self.on_stored is not None:
            self.on_stored(new)
        return new

    async def serve(self, stop: asyncio.Event) -> None:
        failures = 0
        try:
            try:
                # getUpdates is refused (409) while a webhook is set: polling is the mode now.
                await self.api.call("deleteWebhook", {"drop_pending_updates": False})
            except BotApiError as exc:
                verdict = classify(exc)
                if isinstance(verdict, AuthFailed):
                    raise Disable(verdict.reason) from exc
            while not stop.is_set():
                try:
                    if not await _unless_stopped(self.poll_once(), stop):
                        break
                    await fetch_media_once(self.engine, self.api, self.settings, self.health)
                    failures = 0
                    self.health.success()
                    self.state, self.reason = "running", None
                    self.publish()
                    # A long poll waits at Telegram; without one (timeout 0), here.
                    if self.settings.poll_timeout_s == 0 and await sleep_or_stop(1.0, stop):
                        break
                    continue
                except Exception as exc:
                    failures += 1
                    step = next_step(self.classify(exc), failures, self.retry, time.time())
                    if step.wait_s is None:
                        raise Disable(step.reason) from exc
                    self.state, self.reason = step.state, step.reason
                    log.warning("telegram: %s", step.reason)
                    self.health.error(step.reason)
                    self.publish()
                if await sleep_or_stop(step.wait_s, stop):
                    break
        finally:
            await self.api.close()


async def _unless_stopped(work: Awaitable[Any], stop: asyncio.Event) -> bool:
    """Run `work` (a long poll) unless `stop` comes first; False when it did. A long poll
    waits up to poll_timeout_s at Telegram: a shutdown does not wait for it. (The commit runs
    in a thread and is one transaction: it is all there or not at all.)"""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    task.result()
    return True


# --- webhook -------------------------------------------------------------------------------


class TelegramWebhook:
    """The webhook route and, as the connector's supervised task, the media step (and the
    webhook's registration when `webhook_url` is set)."""

    name = CONNECTOR

    def __init__(
        self,
        settings: TelegramSettings,
        engine: Engine,
        token: Secret,
        secret: Secret,
        submit: Submit,
        *,
        poll_seconds: float = 10.0,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.token = token
        self.secret = secret
        self.submit = submit
        self.api = BotApi(settings, token)
        self.health = ConnectorHealth()
        self.counts = Counts()
        self.poll_seconds = poll_seconds
        self.publish()

    def publish(self) -> None:
        self.health.details = {"mode": "webhook", "offset": None, **self.counts.as_dict()}

    def routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                PATH,
                self.deliver,
                "Telegram: one bot update, with the webhook's secret token",
                "telegram",
                auth="signature",
                kind="text",
                responses={200: "stored (or ignored)", 403: "wrong secret", 503: "retry"},
            )
        ]

    async def deliver(self, request: web.Request) -> web.StreamResponse:
        given = request.headers.get(SECRET_HEADER, "").encode()
        # Constant time: a timing difference would let a sender guess the secret.
        if not hmac.compare_digest(given, self.secret.reveal().encode()):
            self.counts.bad_secret += 1
            self.publish()
            log.warning("telegram webhook: wrong or missing %s", SECRET_HEADER)
            raise web.HTTPForbidden(text="wrong secret token")
        raw = await request.read()
        item, routed = raw_input(raw)
        if item is None:
            assert routed is not None
            self.counts.ignored(routed)
            self.publish()
            return web.json_response({"stored": 0, "ignored": routed.reason})
        stored = await self.submit(item)
        self.counts.took([stored], [routed])
        self.health.success()
        self.publish()
        return web.json_response({"stored": int(not stored.duplicate)})

    async def register(self) -> None:
        """setWebhook with our URL and secret, when the settings give the URL."""
        if not self.settings.webhook_url:
            return
        await self.api.call(
            "setWebhook",
            {
                "url": self.settings.webhook_url,
                "secret_token": self.secret.reveal(),
                "allowed_updates": ["message"],
            },
        )
        log.info("telegram: webhook registered at %s", self.settings.webhook_url)

    async def run(self, stop: asyncio.Event) -> None:
        registered = False
        try:
            while not stop.is_set():
                try:
                    if not registered:
                        await self.register()
                        registered = True
                    await fetch_media_once(self.engine, self.api, self.settings, self.health)
                except Exception as exc:  # Telegram or the store away: next pass
                    text = hide_token(str(exc), self.token)
                    log.warning("telegram: %s", text)
                    self.health.error(text[:500])
                self.publish()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)
        finally:
            await self.api.close()
