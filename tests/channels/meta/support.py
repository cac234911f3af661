"""Meta test support: our fixtures (written after Meta's documented webhook shapes), bodies
signed as Meta signs them (the hmac module here, not the code under test), the inbox app with
the Meta routes on port 0, and a fake Graph API (aiohttp) the real senders talk to."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import BodyPartReader, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine

from connectors.meta.intake import MetaWebhooks
from connectors.meta.settings import MetaSettings
from inbox.secrets import Secret
from inbox.web import create_app
from normalizer.intake import RawInput, Stored, store
from tests.support.fake_server import serving

FIXTURES = Path(__file__).parent / "fixtures"
APP_SECRET = "0f3c9a7d1e2b4c5d6e7f8091a2b3c4d5"
VERIFY_TOKEN = "parity-verify-6d1f0c"
WA_TOKEN = "EAAwhatsapp-test-token"
PAGE_TOKEN = "EAApage-test-token"
PHONE_NUMBER_ID = "106540352242922"
PAGE_ID = "109876543210987"
IG_ID = "17841400008460056"


def fixture_text(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_text(name))
    return data


def body_of(doc: dict[str, Any]) -> bytes:
    # Meta sends compact JSON; the signature is over exactly these bytes.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def settings(base_url: str = "https://graph.facebook.com", **kw: Any) -> MetaSettings:
    return MetaSettings.model_validate(
        {
            "enabled": True,
            "graph_base_url": base_url,
            "whatsapp_phone_number_id": PHONE_NUMBER_ID,
            "page_id": PAGE_ID,
            "instagram_account_id": IG_ID,
            **kw,
        }
    )


async def stored_in_thread(engine: Engine, item: RawInput) -> Stored:
    return (await asyncio.to_thread(store, engine, [item]))[0]


class Hooks:
    """The inbox app with the Meta routes, as the daemon mounts them, on port 0."""

    def __init__(self, engine: Engine, submit: Any = None) -> None:
        self.engine = engine
        self.hooks = MetaWebhooks(
            engine,
            Secret(VERIFY_TOKEN),
            Secret(APP_SECRET),
            submit or (lambda item: stored_in_thread(engine, item)),
        )
        self.app = create_app(engine, routes=self.hooks.routes())
        self.client: TestClient[Any, Any] = TestClient(TestServer(self.app))

    async def __aenter__(self) -> Hooks:
        await self.client.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def post(self, body: bytes, signature: str | None = None) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        sig = sign(body) if signature is None else signature
        if sig:
            headers["X-Hub-Signature-256"] = sig
        response = await self.client.post("/meta/webhook", data=body, headers=headers)
        return response.status, await response.text()


# --- the fake Graph API ---------------------------------------------------------------------


@dataclass
class FakeGraph:
    """/me, the phone number id, media ids and files, `messages`, comment replies, and the
    two uploads: WhatsApp's `/{phone-number-id}/media` (answers a media id) and Messenger's
    `/me/message_attachments` (answers an attachment id), each multipart/form-data only,
    the bytes kept as received. A message naming a media or attachment id never uploaded
    is refused, as Meta refuses it.

    `fail` holds error answers to give, in order, before succeeding: (HTTP status, Graph
    error body), shaped as Meta's error answers are. `fail_uploads` the same for uploads,
    None for an upload that succeeds.
    """

    tokens: tuple[str, ...] = (WA_TOKEN, PAGE_TOKEN)
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    media: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    # Scoped id -> the User Profile API's answer (name for Messenger, username for Instagram).
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile_requests: int = 0
    media_failures: int = 0
    media_requests: int = 0
    base_url: str = ""
    sent: int = 0
    # Uploaded files by the id given for them: the path, the form's text fields, the file
    # part's name, declared type and bytes.
    uploaded: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_uploads: list[tuple[int, dict[str, Any]] | None] = field(default_factory=list)
    # Files a message named by URL (Instagram), as Meta fetched them while taking it: the
    # URL, the answer's status and Content-Type, and the bytes.
    fetched: list[dict[str, Any]] = field(default_factory=list)
    # The error answer the nth message received (counting from 1) gets, whatever `fail` holds.
    fail_at: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def _token(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    def _refused(self) -> web.Response:
        return web.json_response(
            error(
                190, "Error validating access token: Session has expired.", "OAuthException", 463
            ),
            status=401,
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v21.0/me", self.me)
        app.router.add_post("/v21.0/{node}/messages", self.messages)
        app.router.add_post("/v21.0/{node}/media", self.upload)
        app.router.add_post("/v21.0/{node}/message_attachments", self.upload)
        app.router.add_post("/v21.0/{node}/comments", self.comment)
        app.router.add_post("/v21.0/{node}/replies", self.comment)
        app.router.add_get("/v21.0/{node}", self.node)
        app.router.add_get("/files/{media}", self.file)
        return app

    async def me(self, request: web.Request) -> web.Response:
        if self._token(request) not in self.tokens:
            return self._refused()
        return web.json_response({"name": "Acme Cloud Support", "id": PAGE_ID})

    async def node(self, request: web.Request) -> web.Response:
        if self._token(request) not in self.tokens:
            return self._refused()
        node = request.match_info["node"]
        if node == PHONE_NUMBER_ID:
            return web.json_response(
                {
                    "verified_name": "Acme Cloud Support",
                    "display_phone_number": "+1 555-078-3881",
                    "quality_rating": "GREEN",
                    "id": PHONE_NUMBER_ID,
                }
            )
        if node in self.profiles:
            self.profile_requests += 1
            return web.json_response({**self.profiles[node], "id": node})
        if node in self.media:
            kind, data = self.media[node]
            return web.json_response(
                {
                    "messaging_product": "whatsapp",
                    "url": f"{self.base_url}/files/{node}",
                    "mime_type": kind,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "file_size": len(data),
                    "id": node,
                }
            )
        return web.json_response(
            error(
                100,
                f"Unsupported get request. Object with ID '{node}' does not exist",
                "GraphMethodException",
                33,
            ),
            status=400,
        )

    async def file(self, request: web.Request) -> web.Response:
        self.media_requests += 1
        if self.media_failures > 0:
            self.media_failures -= 1
            return web.Response(status=500, text="try again")
        found = self.media.get(request.match_info["media"])
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[1], content_type=found[0])

    async def upload(self, request: web.Request) -> web.Response:
        if self._token(request) not in self.tokens:
            return self._refused()
        whatsapp = request.path.endswith("/media")
        if whatsapp and request.match_info["node"] != PHONE_NUMBER_ID:
            return web.json_response(
                error(100, "Invalid phone number id", "OAuthException"), status=400
            )
        if not request.content_type.startswith("multipart/form-data"):
            return web.json_response(
                error(100, "(#100) Upload attachment failure.", "OAuthException"), status=400
            )
        file_field = "file" if whatsapp else "filedata"
        fields: dict[str, str] = {}
        got: dict[str, Any] | None = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            if part.name == file_field and part.filename is not None:
                got = {
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type", ""),
                    "data": bytes(await part.read()),
                }
            elif part.name:
                fields[part.name] = await part.text()
        if got is None:
            return web.json_response(
                error(100, f"(#100) The parameter {file_field} is required", "OAuthException"),
                status=400,
            )
        if whatsapp and fields.get("messaging_product") != "whatsapp":
            return web.json_response(
                error(100, "(#100) The parameter messaging_product is required"), status=400
            )
        if not whatsapp:
            message = json.loads(fields.get("message") or "{}")
            kind = message.get("attachment", {}).get("type")
            if kind not in ("image", "audio", "video", "file"):
                return web.json_response(error(100, "(#100) Invalid attachment type"), status=400)
        planned = self.fail_uploads.pop(0) if self.fail_uploads else None
        if planned is not None:
            return web.json_response(planned[1], status=planned[0])
        upload_id = f"{'MEDIA' if whatsapp else 'ATT'}{len(self.uploaded) + 1:04d}"
        self.uploaded[upload_id] = {"path": request.path, "fields": fields, **got}
        if whatsapp:
            return web.json_response({"id": upload_id})
        return web.json_response({"attachment_id": upload_id})

    def _unknown_upload(self, body: dict[str, Any]) -> str | None:
        """The media or attachment id a message names that was never uploaded, if any."""
        for kind in ("image", "document", "audio", "video"):
            item = body.get(kind)
            if isinstance(item, dict) and "id" in item and item["id"] not in self.uploaded:
                return str(item["id"])
        attachment = (body.get("message") or {}).get("attachment")
        if isinstance(attachment, dict):
            found = (attachment.get("payload") or {}).get("attachment_id")
            if found is not None and found not in self.uploaded:
                return str(found)
        return None

    async def _fetch_by_url(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """An attachment named by URL is fetched while the message is taken, as Meta does;
        an error answer when the URL does not give a file, else None."""
        attachment = (body.get("message") or {}).get("attachment")
        if not isinstance(attachment, dict):
            return None
        url = (attachment.get("payload") or {}).get("url")
        if url is None:
            return None
        if attachment.get("type") not in ("image", "video", "audio", "file"):
            return error(100, "(#100) Invalid attachment type")
        async with aiohttp.ClientSession() as session, session.get(str(url)) as got:
            data = await got.read()
            self.fetched.append(
                {
                    "url": url,
                    "status": got.status,
                    "content_type": got.headers.get("Content-Type", ""),
                    "data": data,
                }
            )
        if got.status != 200:
            return error(100, "(#100) Upload attachment failure.", "OAuthException", 2018047)
        return None

    async def messages(self, request: web.Request) -> web.Response:
        if self._token(request) not in self.tokens:
            return self._refused()
        body = await request.json()
        self.received.append((request.path, body))
        if (unknown := self._unknown_upload(body)) is not None:
            return web.json_response(
                error(100, f"(#100) Invalid media or attachment id {unknown}"), status=400
            )
        if (refused := await self._fetch_by_url(body)) is not None:
            return web.json_response(refused, status=400)
        if (planned := self.fail_at.get(len(self.received))) is not None:
            return web.json_response(planned[1], status=planned[0])
        if self.fail:
            status, answer = self.fail.pop(0)
            return web.json_response(answer, status=status)
        self.sent += 1
        if body.get("messaging_product") == "whatsapp":
            to = str(body["to"])
            return web.json_response(
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": to, "wa_id": to}],
                    "messages": [{"id": f"wamid.SENT{self.sent:04d}"}],
                }
            )
        return web.json_response(
            {"recipient_id": body["recipient"]["id"], "message_id": f"m_SENT{self.sent:04d}"}
        )

    async def comment(self, request: web.Request) -> web.Response:
        if self._token(request) not in self.tokens:
            return self._refused()
        body = await request.json()
        self.received.append((request.path, body))
        if self.fail:
            status, answer = self.fail.pop(0)
            return web.json_response(answer, status=status)
        self.sent += 1
        return web.json_response({"id": f"{request.match_info['node']}_reply{self.sent}"})


def error(
    code: int, message: str, kind: str = "OAuthException", subcode: int | None = None
) -> dict[str, Any]:
    """A Graph API error answer, as Meta shapes it."""
    body: dict[str, Any] = {
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": "AbCdEfGhIjKlMnOpQrStUv",
    }
    if subcode is not None:
        body["error_subcode"] = subcode
    return {"error": body}


def fake_graph() -> AbstractContextManager[FakeGraph]:
    """The fake on port 0, on a loop of its own in a thread: the senders are blocking."""
    return serving(FakeGraph())
