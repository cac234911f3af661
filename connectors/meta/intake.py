"""Meta's webhook on the HTTP listener: the subscription check, then signed deliveries.

`GET /meta/webhook` answers Meta's subscription check: `hub.mode=subscribe` and a
`hub.verify_token` equal (compared in constant time) to the secret named by
`verify_token_env` get `hub.challenge` echoed back; anything else gets 403.

`POST /meta/webhook` checks `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the
app secret) before it reads anything of the body: a bad or missing signature is 403 and
nothing is stored. Then every event of the body is stored through intake, raw, keyed by its
own id (wamid, mid, comment id), and only then does Meta get 200. A store that refuses the
write raises StorageUnavailable, which the listener answers with 503, so Meta retries; a
redelivered body finds its keys stored and adds nothing. Status reports (a WhatsApp
`statuses` entry, a Messenger `delivery` or `read`) move our outbox rows instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy import Engine

from connectors.base import ConnectorHealth
from connectors.meta.parse import events, load, statuses
from connectors.meta.status import WebhookStats, apply_status
from inbox.secrets import Secret
from inbox.web.routes import Route
from normalizer.intake import RawInput, Stored
from normalizer.message import ParseError

log = logging.getLogger(__name__)

CONNECTOR = "meta"
PATH = "/meta/webhook"
SIGNATURE_HEADER = "X-Hub-Signature-256"
Submit = Callable[[RawInput], Awaitable[Stored]]


def signature_ok(secret: bytes, body: bytes, header: str) -> bool:
    """Whether `header` is "sha256=" and the hex HMAC-SHA256 of `body` under `secret`."""
    scheme, _, given = header.strip().partition("=")
    if scheme != "sha256" or not given:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    # Constant time: a timing difference would let a sender guess the digest byte by byte.
    return hmac.compare_digest(expected, given.lower())


class MetaWebhooks:
    """The two routes; `submit` stores one raw input durably (IntakeWriter.submit)."""

    def __init__(
        self,
        engine: Engine,
        verify_token: Secret,
        app_secret: Secret,
        submit: Submit,
        *,
        stats: WebhookStats | None = None,
        health: ConnectorHealth | None = None,
    ) -> None:
        self.engine = engine
        self.verify_token = verify_token
        self.app_secret = app_secret
        self.submit = submit
        self.health = health or ConnectorHealth()
        self.stats = stats or WebhookStats(self.health)

    def routes(self) -> list[Route]:
        return [
            Route(
                "GET",
                PATH,
                self.subscribe,
                "Meta: the webhook subscription check (echoes hub.challenge)",
                "meta",
                auth="signature",
                kind="text",
                responses={200: "the challenge", 403: "wrong verify token"},
            ),
            Route(
                "POST",
                PATH,
                self.deliver,
                "Meta: WhatsApp, Messenger and Instagram events, signed by the app secret",
                "meta",
                auth="signature",
                kind="text",
                responses={200: "stored", 403: "bad signature", 503: "not stored; retry"},
            ),
        ]

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        mode = request.query.get("hub.mode", "")
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge", "")
        expected = self.verify_token.reveal().encode()
        if mode != "subscribe" or not hmac.compare_digest(token.encode(), expected):
            log.warning("meta webhook: subscription check with a wrong verify token")
            raise web.HTTPForbidden(text="wrong verify token")
        return web.Response(text=challenge, content_type="text/plain")

    async def deliver(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        header = request.headers.get(SIGNATURE_HEADER, "")
        if not signature_ok(self.app_secret.reveal().encode(), raw, header):
            self.stats.signature_failure()
            log.warning("meta webhook: bad or missing %s", SIGNATURE_HEADER)
            raise web.HTTPForbidden(text="bad signature")
        try:
            doc = load(raw)
            found = events(doc)
            reports = statuses(doc)
        except ParseError as exc:
            # Signed by Meta yet unreadable: a retry would be the same; keep nothing.
            raise web.HTTPBadRequest(text=str(exc)) from exc
        stored = await asyncio.gather(
            *(
                self.submit(
                    RawInput(
                        connector=CONNECTOR,
                        channel=event.channel,
                        source_key=event.source_key,
                        # The whole body: the blob is kept once by its hash, whatever the
                        # number of events in it.
                        payload=raw,
                        envelope={"at": list(event.at)},
                    )
                )
                for event in found
            )
        )
        if reports:
            await asyncio.to_thread(self._statuses, reports)
        for channel in {e.channel for e in found} | {s.channel for s in reports}:
            self.stats.received(channel)
        self.health.success()
        return web.json_response(
            {"stored": sum(not s.duplicate for s in stored), "events": len(stored)}
        )

    def _statuses(self, reports: list[Any]) -> None:
        for report in reports:
            apply_status(self.engine, report)
