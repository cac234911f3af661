"""Meta's webhook on the HTTP listener: the subscription check, then signed deliveries.

`GET /meta/webhook` answers Meta's subscription check: `hub.mode=subscribe` and a
`hub.verify_token` equal (compared in constant time) to the secret named by
`verify_token_env` get `hub.challenge` echoed back; anything else gets 403.

`POST /meta/webhook` checks `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the
app secret) before it reads anything of the body: a bad or missing signature is 403 and
nothing is stored. Then every event of the body is stored through intake, raw, keyed by its
own id (wamid, mid, comment id), and only then does Meta get 200. A store that refuses the
write raises StorageUnavailable, which the listener answers with 503, so Meta retries; a
redelivered body finds its keys stored and adds nothing.

Delivery reports (a WhatsApp `statuses` entry, a Messenger or Instagram `delivery` or
`read`) are stored the same way, one intake row each in state "report", and applied to our
outbox rows after the 200 (connectors/meta/status.py `apply_reports`, connectors/reports.py).
A signed body that cannot be read is stored whole as well, to become a dead letter with why
(normalizer/intake.py `unreadable_input`, as for every webhook): Meta signed it, so it is
never dropped, and it gets 200, since Meta would only send the same bytes again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web
from sqlalchemy import Engine

from connectors.base import ConnectorHealth
from connectors.media_url import ReplyFiles, media_key
from connectors.meta.parse import read_body, status_key
from connectors.meta.status import UNHANDLED, WebhookStats, apply_reports
from connectors.reports import AfterReply
from inbox.channels import channels_of
from inbox.secrets import Secret
from inbox.web.routes import Route
from normalizer.intake import RawInput, Stored, sha256, unreadable_input

log = logging.getLogger(__name__)

CONNECTOR = "meta"
PATH = "/meta/webhook"
# Where Meta fetches the files of an Instagram reply (connectors/media_url.py), and the
# context their URLs' key is derived under from the app secret.
MEDIA_PATH = "/meta/media/{sha256}"
MEDIA_CONTEXT = b"parity meta instagram media url v1"
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
        # The app secret as bytes, once: every POST is checked against it.
        self._secret = app_secret.reveal().encode()
        self.media = ReplyFiles(
            engine,
            media_key(app_secret, MEDIA_CONTEXT),
            MEDIA_PATH,
            "meta",
            "Meta: a file of an Instagram reply, fetched by Meta at a signed, expiring URL",
        )
        self.after = AfterReply(CONNECTOR, partial(apply_reports, engine), self.health)

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
            self.media.route(),
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
        if not signature_ok(self._secret, raw, header):
            self.stats.signature_failure()
            log.warning("meta webhook: bad or missing %s", SIGNATURE_HEADER)
            raise web.HTTPForbidden(text="bad signature")
        body = read_body(raw)
        items = [
            RawInput(
                connector=CONNECTOR,
                channel=event.channel,
                source_key=event.source_key,
                # The whole body: the blob is kept once by its hash, whatever the number of
                # events in it.
                payload=raw,
                envelope={"at": list(event.at)},
            )
            for event in body.events
        ]
        # Delivery reports are stored raw too, before the 200, and applied to the outbox
        # after it (apply_reports): Meta is never answered for something we did not keep.
        items += [
            RawInput(
                connector=CONNECTOR,
                channel=report.channel,
                source_key=status_key(report),
                payload=raw,
                acknowledge=False,
                state="report",
            )
            for report in body.statuses
        ]
        if body.unhandled:
            # Parts Parity does not take in (a field we do not handle, an echo, a reaction):
            # not an error, so no dead letter, but never dropped silently either. The body
            # is kept raw, once (keyed by its bytes), in state "unhandled", which the
            # normalizer never claims, and counted per channel in the connector's status.
            items.append(
                RawInput(
                    connector=CONNECTOR,
                    channel=body.channel or channels_of(CONNECTOR)[0],
                    source_key=f"unhandled:{sha256(raw)}",
                    payload=raw,
                    envelope={"unhandled": list(body.unhandled)},
                    acknowledge=False,
                    state=UNHANDLED,
                )
            )
            self.stats.unhandled(body.channel or channels_of(CONNECTOR)[0], body.unhandled)
        if body.unreadable is not None:
            # Signed by Meta yet unreadable: a retry would bring the same bytes, so it is
            # answered 200, but kept whole, as a dead letter the normalizer files with why.
            items.append(
                unreadable_input(
                    CONNECTOR, body.channel or channels_of(CONNECTOR)[0], raw, body.unreadable
                )
            )
        if len(items) == 1:  # most webhooks: no task per item
            stored = [await self.submit(items[0])]
        else:
            stored = list(await asyncio.gather(*(self.submit(item) for item in items)))
        if body.statuses:
            self.apply_soon()
        if body.channel is not None:
            # One body, one `object`: all its events and reports are of the one channel.
            self.stats.received(body.channel)
        self.health.success()
        new = sum(not s.duplicate for s in stored)
        if body.unreadable or body.unhandled:
            return web.json_response(
                {
                    "stored": new,
                    "events": len(body.events),
                    "reports": len(body.statuses),
                    **({"unreadable": body.unreadable} if body.unreadable else {}),
                    **({"unhandled": list(body.unhandled)} if body.unhandled else {}),
                }
            )
        # Three counts need no JSON encoder: this answer is on every webhook's path.
        return web.Response(
            text=f'{{"stored": {new}, "events": {len(body.events)}, '
            f'"reports": {len(body.statuses)}}}',
            content_type="application/json",
        )

    def apply_soon(self) -> None:
        """Apply the stored reports now, after the 200 (connectors/reports.py)."""
        self.after.soon()

    async def settled(self) -> None:
        """Wait until the reports stored so far are applied (tests; a clean shutdown)."""
        await self.after.settled()
