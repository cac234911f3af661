"""Twilio test support: our fixtures, requests signed as Twilio signs them, a webhook app on
an ephemeral port, and a fake Twilio REST API (aiohttp) the real twilio.rest.Client talks to."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine
from twilio.request_validator import RequestValidator

from connectors.twilio.intake import TwilioWebhooks
from connectors.twilio.settings import TwilioSettings
from inbox.secrets import Secret
from inbox.web import create_app
from normalizer.intake import RawInput, Stored, store
from tests.support.fake_server import serving

FIXTURES = Path(__file__).parent / "fixtures"
ACCOUNT = "AC00000000000000000000000000000001"
TOKEN = "test-auth-token-0123456789abcdef"
# What Twilio is configured to call: behind a TLS proxy, not the test server's own address.
PUBLIC = "https://support.example.com/hooks"
OUR_NUMBER = "+14155550100"


def fixture(name: str, **replace: str) -> dict[str, str]:
    text = (FIXTURES / f"{name}.json").read_text()
    for key, value in replace.items():
        text = text.replace("{" + key + "}", value)
    data: dict[str, str] = json.loads(text)
    return data


def sign(path: str, params: dict[str, str], token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(PUBLIC + path, params))


def settings(**kw: Any) -> TwilioSettings:
    return TwilioSettings.model_validate(
        {"enabled": True, "public_url": PUBLIC, "from_number": OUR_NUMBER, **kw}
    )


async def stored_in_thread(engine: Engine, item: RawInput) -> Stored:
    return (await asyncio.to_thread(store, engine, [item]))[0]


class Hooks:
    """The inbox app with the Twilio routes, as the daemon mounts them, on port 0."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.hooks = TwilioWebhooks(
            settings(), engine, Secret(TOKEN), lambda item: stored_in_thread(engine, item)
        )
        self.app = create_app(engine, routes=self.hooks.routes())
        self.client: TestClient[Any, Any] = TestClient(TestServer(self.app))

    async def __aenter__(self) -> Hooks:
        await self.client.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def settled(self) -> None:
        """Wait until the status callbacks posted so far are applied (after their 200)."""
        await self.hooks.settled()

    async def post(
        self, path: str, params: dict[str, str], signature: str | None = None
    ) -> tuple[int, str]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        sig = sign(path, params) if signature is None else signature
        if sig:
            headers["X-Twilio-Signature"] = sig
        response = await self.client.post(path, data=urlencode(params), headers=headers)
        return response.status, await response.text()


# --- the fake Twilio REST API --------------------------------------------------------------


@dataclass
class FakeTwilio:
    """Messages.json create and list, and media downloads, behind HTTP basic auth.

    A create with `MediaUrl`s (an MMS) fetches each URL, as Twilio does before it sends the
    message, with no credentials of ours, and keeps what came back (`fetched`: the URL, the
    HTTP status, the Content-Type and the bytes). A URL that does not answer 200 fails the
    create with Twilio's 21620-style error, as an unreachable media URL fails at Twilio.
    """

    account: str = ACCOUNT
    token: str = TOKEN
    received: list[dict[str, str]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    media: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    base_url: str = ""
    # Answer this many sends with 503 before taking them: Twilio down for a moment.
    unavailable: int = 0
    fetched: list[dict[str, Any]] = field(default_factory=list)

    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account}:{self.token}".encode()).decode()
        return request.headers.get("Authorization", "") == f"Basic {expected}"

    def app(self) -> web.Application:
        app = web.Application()
        prefix = f"/2010-04-01/Accounts/{self.account}"
        app.router.add_post(prefix + "/Messages.json", self.create)
        app.router.add_get(prefix + "/Messages.json", self.list)
        app.router.add_get(prefix + "/Messages/{msid}/Media/{mid}", self.download)
        return app

    async def create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        posted = await request.post()
        form = {k: str(v) for k, v in posted.items()}
        media_urls = [str(v) for v in posted.getall("MediaUrl", [])]
        if media_urls:
            form["MediaUrl"] = " ".join(media_urls)
        self.received.append(form)
        if self.unavailable > 0:
            self.unavailable -= 1
            body = {"code": 20503, "message": "Service Unavailable", "status": 503}
            return web.json_response(body, status=503)
        async with aiohttp.ClientSession() as session:
            for url in media_urls:
                async with session.get(url) as got:
                    self.fetched.append(
                        {
                            "url": url,
                            "status": got.status,
                            "content_type": got.headers.get("Content-Type", ""),
                            "data": await got.read(),
                        }
                    )
                if got.status != 200:
                    body = {
                        "code": 21620,
                        "message": f"Media urls: {url} is not reachable",
                        "status": 400,
                    }
                    return web.json_response(body, status=400)
        now = datetime.now(UTC)
        message: dict[str, Any] = {
            "sid": "SM" + secrets.token_hex(16),
            "account_sid": self.account,
            "to": form.get("To"),
            "from": form.get("From"),
            "body": form.get("Body"),
            "status": "queued",
            "direction": "outbound-api",
            "num_segments": "1",
            "num_media": str(len(media_urls)),
            "date_created": format_datetime(now),
            "date_updated": format_datetime(now),
            "date_sent": format_datetime(now),
            "api_version": "2010-04-01",
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "messaging_service_sid": None,
            "uri": f"/2010-04-01/Accounts/{self.account}/Messages/x.json",
            "subresource_uris": {},
        }
        self.messages.append(message)
        return web.json_response(message, status=201)

    async def list(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        q = request.query
        found = [
            m
            for m in self.messages
            if (not q.get("To") or m["to"] == q["To"])
            and (not q.get("From") or m["from"] == q["From"])
            and (
                not q.get("DateSent>")
                or parsedate_to_datetime(m["date_sent"]).date()
                >= datetime.fromisoformat(q["DateSent>"]).date()
            )
        ]
        return web.json_response(
            {
                "messages": found,
                "page": 0,
                "page_size": 50,
                "first_page_uri": request.path_qs,
                "next_page_uri": None,
                "previous_page_uri": None,
                "uri": request.path_qs,
                "start": 0,
                "end": len(found),
            }
        )

    async def download(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        found = self.media.get(request.match_info["mid"])
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[1], content_type=found[0])


def fake_twilio() -> AbstractContextManager[FakeTwilio]:
    """The fake on port 0, on a loop of its own in a thread: the Twilio client is blocking."""
    return serving(FakeTwilio())
