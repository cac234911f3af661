"""Twilio: signed webhooks in (SMS, MMS, calls, voicemail), SMS out through the outbox.

Webhooks: the signature is checked against `public_url` plus the path and query, never the
request's own URL (behind a TLS proxy scheme and host differ). Then the form post is stored,
raw, through intake, and only then does Twilio get 200 with TwiML; a store that refuses the
write gives 503, so Twilio retries. The intake key is the MessageSid, CallSid, RecordingSid or
TranscriptionSid: a retried webhook changes nothing. A signed post without its id is kept too,
keyed by its bytes, and becomes a dead letter (the parser says which id is missing), through
the intake step every webhook shares (normalizer/intake.py `unreadable_input`).

Status callbacks on the SMS we sent are stored raw as well (state "report") before the 200,
and applied to the outbox after it, never moving a row back (connectors/twilio/status.py).

Opt-outs (STOP, START) are kept per number in the checkpoint table, connector "twilio": the
sender checks it before every send, so nothing goes to a number that opted out. A keyword
changes that state only in the transaction that first stores its MessageSid: a replayed START
(validly signed, but captured before a later STOP) is a duplicate and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode

import requests
from aiohttp import web
from sqlalchemy import Engine, select
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from connectors.base import ConnectorHealth
from connectors.media import MediaFile, attach, extension, media_due, note_failure
from connectors.media_url import ReplyFiles, media_key
from connectors.reports import AfterReply
from connectors.twilio.parse import (
    STATUS_UNREADABLE,
    form,
    keyword,
    normalise_number,
    source_key,
)
from connectors.twilio.settings import TwilioSettings
from connectors.twilio.status import apply_left, apply_reports, report_key, report_of
from inbox.config import SlaSettings
from inbox.db import read
from inbox.models import Checkpoint, Message, utcnow
from inbox.secrets import Secret
from inbox.sla import due_time
from inbox.web.routes import Route
from normalizer.acks import describe_eta
from normalizer.intake import CheckpointUpdate, RawInput, Stored, unreadable_input
from normalizer.message import ParseError

log = logging.getLogger(__name__)

CONNECTOR = "twilio"
TWIML = "application/xml"
HELP_TEXT = (
    "This number reaches our support team. Text your question and a person will answer. "
    "Reply STOP to stop texts, START to receive them again."
)
Submit = Callable[[RawInput], Awaitable[Stored]]
# Where Twilio fetches the files of an MMS reply (connectors/media_url.py), and the context
# their URLs' key is derived under from the auth token.
MEDIA_PATH = "/twilio/media/{sha256}"
MEDIA_CONTEXT = b"parity twilio mms media url v1"


def optout_key(number: str) -> str:
    return f"optout:{number}"


def opted_out(engine: Engine, number: str) -> bool:
    with read(engine) as conn:
        value = conn.execute(
            select(Checkpoint.value).where(
                Checkpoint.connector == CONNECTOR, Checkpoint.key == optout_key(number)
            )
        ).scalar_one_or_none()
        conn.rollback()
    return bool(value and value.get("opted_out"))


def opt_out_update(number: str, opted: bool, at: datetime) -> CheckpointUpdate:
    return CheckpointUpdate(
        CONNECTOR, optout_key(number), {"opted_out": opted, "at": at.isoformat()}
    )


def keyword_updates(params: Mapping[str, str], at: datetime) -> tuple[CheckpointUpdate, ...]:
    """The opt-out change a texted STOP or START asks for, to apply with its first storage."""
    number = normalise_number(params.get("From", ""))
    word = keyword(params.get("Body", ""))
    if number is None or word not in ("stop", "start"):
        return ()
    return (opt_out_update(number, word == "stop", at),)


class TwilioWebhooks:
    """The six webhook routes; `submit` stores one raw input durably (IntakeWriter.submit)."""

    def __init__(
        self,
        settings: TwilioSettings,
        engine: Engine,
        auth_token: Secret,
        submit: Submit,
        *,
        sla: SlaSettings | None = None,
        health: ConnectorHealth | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.validator = RequestValidator(auth_token.reveal())
        self.media = ReplyFiles(
            engine,
            media_key(auth_token, MEDIA_CONTEXT),
            MEDIA_PATH,
            "twilio",
            "Twilio: a file of an MMS reply, fetched by Twilio at a signed, expiring URL",
        )
        self.submit = submit
        self.sla = sla or SlaSettings()
        self.base = settings.public_url.rstrip("/")
        self.health = health or ConnectorHealth()
        self.after = AfterReply(CONNECTOR, partial(apply_reports, engine), self.health)

    def eta_text(self, now: datetime | None = None) -> str:
        """The SLA target of a case opened now, in words (rounded up, never sooner)."""
        now = now or utcnow()
        due, _rule = due_time(now, "", "", self.sla)
        return describe_eta(now, due, self.sla.business_hours.timezone)

    def url(self, path: str) -> str:
        return self.base + path

    def routes(self) -> list[Route]:
        def route(path: str, handler: Any, summary: str) -> Route:
            return Route(
                "POST",
                path,
                handler,
                summary,
                "twilio",
                auth="signature",
                kind="text",
                responses={200: "TwiML", 403: "bad signature", 503: "not stored; retry"},
            )

        return [
            route("/twilio/sms", self.twilio_sms, "Twilio: incoming SMS or MMS"),
            route("/twilio/voice", self.twilio_voice, "Twilio: incoming call"),
            route("/twilio/voice/menu", self.twilio_menu, "Twilio: the caller's menu choice"),
            route("/twilio/recording", self.twilio_recording, "Twilio: voicemail recording status"),
            route("/twilio/transcription", self.twilio_transcription, "Twilio: voicemail text"),
            route("/twilio/status", self.twilio_status, "Twilio: delivery status of a sent SMS"),
            self.media.route(),
        ]

    async def _signed(self, request: web.Request) -> tuple[bytes, dict[str, str]]:
        raw = await request.read()
        try:
            params = form(raw)
        except ParseError as exc:
            raise web.HTTPForbidden(text="unreadable form post") from exc
        signature = request.headers.get("X-Twilio-Signature", "")
        # Path and query as Twilio requested them; scheme and host are the public ones.
        public = self.url(request.raw_path)
        if not signature or not self.validator.validate(public, params, signature):
            log.warning("twilio webhook %s: bad or missing signature", request.path)
            raise web.HTTPForbidden(text="bad signature")
        return raw, params

    async def _store(
        self,
        kind: str,
        channel: str,
        raw: bytes,
        params: Mapping[str, str],
        query: Mapping[str, str] | None = None,
        on_first_store: tuple[CheckpointUpdate, ...] = (),
    ) -> Stored:
        envelope = {
            "kind": kind,
            "address": params.get("To", ""),
            # Signed with the rest: what we put in callback URLs (the caller).
            **({"query": dict(query)} if query else {}),
        }
        try:
            key = source_key(kind, params)
        except ParseError as exc:
            # Signed by Twilio yet without its id: kept like every channel's unreadable
            # input, under "unkeyed:<kind>:<sha256>", and the parser files it as a dead
            # letter with why. A STOP in it still counts, on its first storage, as before.
            item = unreadable_input(
                CONNECTOR, channel, raw, str(exc), prefix=f"unkeyed:{kind}", envelope=envelope
            )
            return await self.submit(replace(item, on_first_store=on_first_store))
        return await self.submit(
            RawInput(
                connector=CONNECTOR,
                channel=channel,
                source_key=key,
                payload=raw,
                envelope=envelope,
                on_first_store=on_first_store,
            )
        )

    @staticmethod
    def _twiml(body: str) -> web.Response:
        return web.Response(text=body, content_type=TWIML)

    async def twilio_sms(self, request: web.Request) -> web.StreamResponse:
        raw, params = await self._signed(request)
        # STOP and START change the opt-out state in the transaction that first stores their
        # MessageSid, never on a duplicate: a signature proves Twilio sent it, not when.
        await self._store(
            "sms", "sms", raw, params, on_first_store=keyword_updates(params, utcnow())
        )
        reply = MessagingResponse()
        if keyword(params.get("Body", "")) == "help":
            reply.message(HELP_TEXT)
        return self._twiml(str(reply))

    async def twilio_voice(self, request: web.Request) -> web.StreamResponse:
        raw, params = await self._signed(request)
        await self._store("call", "voice", raw, params)
        reply = VoiceResponse()
        reply.say(
            "Thank you for calling. Our office may be closed, but your call is now a case, "
            f"and a person will answer {self.eta_text()}. "
            "Your case reference will come to you by text message."
        )
        gather = reply.gather(
            num_digits=1, action=self.url("/twilio/voice/menu"), method="POST", timeout=5
        )
        gather.say("Press 1 for a callback, or leave a message after the tone.")
        self._record(reply, params)
        return self._twiml(str(reply))

    def _record(self, reply: VoiceResponse, call: Mapping[str, str]) -> None:
        # Twilio's recording-status callback names the call but not the caller: the caller
        # rides in the callback URL, which Twilio signs with the rest.
        caller = urlencode({"From": call.get("From", ""), "To": call.get("To", "")})
        reply.record(
            max_length=180,
            play_beep=True,
            transcribe=True,
            transcribe_callback=self.url("/twilio/transcription"),
            recording_status_callback=self.url("/twilio/recording") + "?" + caller,
            recording_status_callback_method="POST",
        )
        reply.say("Thank you. Goodbye.")
        reply.hangup()

    async def twilio_menu(self, request: web.Request) -> web.StreamResponse:
        raw, params = await self._signed(request)
        await self._store("menu", "voice", raw, params)
        reply = VoiceResponse()
        if params.get("Digits") == "1":
            reply.say("Thank you. We will call you back. Goodbye.")
            reply.hangup()
        else:
            reply.say("Please leave a message after the tone.")
            self._record(reply, params)
        return self._twiml(str(reply))

    async def twilio_recording(self, request: web.Request) -> web.StreamResponse:
        raw, params = await self._signed(request)
        await self._store("recording", "voice", raw, params, request.query)
        return self._twiml(str(VoiceResponse()))

    async def twilio_transcription(self, request: web.Request) -> web.StreamResponse:
        raw, params = await self._signed(request)
        await self._store("transcription", "voice", raw, params)
        return self._twiml(str(VoiceResponse()))

    async def twilio_status(self, request: web.Request) -> web.StreamResponse:
        raw, params = await self._signed(request)
        report = report_of(params)
        if report is None:
            # Signed, yet no message id or status: a dead letter with why, like any
            # unreadable post (the parser of kind "status" says the same on a replay).
            await self.submit(
                unreadable_input(
                    CONNECTOR,
                    "sms",
                    raw,
                    STATUS_UNREADABLE,
                    prefix="unkeyed:status",
                    envelope={"kind": "status", "address": params.get("To", "")},
                )
            )
        else:
            # Stored raw before the 200, applied after it (connectors/twilio/status.py):
            # Twilio is never told "got it" about a report we did not keep.
            await self.submit(
                RawInput(
                    connector=CONNECTOR,
                    channel="sms",
                    source_key=report_key(report),
                    payload=raw,
                    envelope={"kind": "status"},
                    acknowledge=False,
                    state="report",
                )
            )
            self.after.soon()
        return self._twiml(str(MessagingResponse()))

    async def settled(self) -> None:
        """Wait until the status callbacks stored so far are applied (tests; shutdown)."""
        await self.after.settled()


# --- MMS media ------------------------------------------------------------------------------


class MediaFetcher:
    """Downloads MMS media (MediaUrlN) after the message is stored, with the account's
    credentials, and stores each as an attachment of its message.

    Twilio keeps the media until deleted, so fetching after the 200 loses nothing; a failed
    download is tried again on the next pass, up to `max_attempts`, then noted on the message.
    """

    # The Twilio connector's supervised task: `parity connectors status` reports it as twilio.
    name = "twilio"

    def __init__(
        self,
        engine: Engine,
        account_sid: str,
        token: Secret,
        *,
        poll_seconds: float = 10.0,
        max_attempts: int = 5,
        max_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.engine = engine
        self.auth = (account_sid, token)
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.max_bytes = max_bytes
        self.health = ConnectorHealth()

    def pending(self, now: datetime | None = None) -> list[tuple[int, dict[str, Any]]]:
        with read(self.engine) as conn:
            found = [
                (row.id, dict(row.meta or {}))
                for row in conn.execute(
                    select(Message.id, Message.meta)
                    .where(Message.channel == "sms", Message.dedup_key.like("twilio:sms:MM%"))
                    .order_by(Message.id.desc())
                    .limit(200)
                )
            ]
            conn.rollback()
        return [
            (mid, meta)
            for mid, meta in found
            if (meta.get("twilio") or {}).get("media")
            and not (meta.get("twilio") or {}).get("media_fetched")
            and media_due(meta.get("twilio") or {}, now or utcnow())
        ]

    def download(self, url: str) -> tuple[str, bytes]:
        sid, token = self.auth
        # requests drops the credentials when Twilio redirects to its media storage host.
        response = requests.get(url, auth=(sid, token.reveal()), timeout=30, stream=True)
        response.raise_for_status()
        data = response.raw.read(self.max_bytes + 1, decode_content=True)
        if len(data) > self.max_bytes:
            raise ValueError(f"media over {self.max_bytes} bytes")
        return response.headers.get("Content-Type", "application/octet-stream"), data

    def fetch_once(self, now: datetime | None = None) -> int:
        """Fetch the media of every message still missing them and due (a failed one waits
        its backoff, connectors/media.py); the number of attachments stored."""
        stored = 0
        now = now or utcnow()
        for message_id, meta in self.pending(now):
            try:
                files = [self.download(str(m["url"])) for m in meta["twilio"]["media"]]
            except (requests.RequestException, ValueError) as exc:
                note_failure(
                    self.engine,
                    message_id,
                    meta,
                    "twilio",
                    str(exc),
                    max_attempts=self.max_attempts,
                    now=now,
                )
                self.health.error(f"message {message_id}: media: {exc}")
                continue
            named = [
                MediaFile(kind, data, f"media-{index}{extension(kind)}")
                for index, (kind, data) in enumerate(files)
            ]
            stored += attach(self.engine, message_id, "twilio", named)
            self.health.success()
        return stored

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                # Status callbacks the webhook stored and a crash (or a store refusing
                # writes) kept it from applying after the 200.
                await asyncio.to_thread(apply_left, self.engine)
            except Exception as exc:  # the store away: the next pass
                log.warning("twilio: applying status callbacks: %s", exc)
                self.health.error(f"status callbacks: {exc}"[:500])
            await asyncio.to_thread(self.fetch_once)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)
