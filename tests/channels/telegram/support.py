"""Telegram test support: our fixtures (written after the Bot API's documented `Update`
shapes), the settings, and a fake Bot API (aiohttp) the real connector and sender talk to.

The fake keeps Telegram's rules that matter here: `getUpdates` answers the updates from
`offset` on and forgets those before it (an offset confirms them), at most `limit` of them;
`getFile` gives a `file_path` served under /file/bot<token>/; a wrong token gets 401; a
sendMessage, sendPhoto or sendDocument may be answered with queued errors (a 429 with
`parameters.retry_after`). sendPhoto and sendDocument take multipart/form-data only, as
Telegram does for an upload, and the fake keeps each file's bytes as received.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from connectors.telegram.settings import TelegramSettings
from tests.support.fake_server import serving

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "7755001122:AAH3kq9Zt-parity_test_token_x1"
SECRET = "parity-webhook-secret_8f2c"
# The fixtures a private chat brings (stored), and those that are not taken in.
PRIVATE = ("text", "photo_caption", "document", "voice", "reply", "forwarded_sticker")
IGNORED = {"group": "group", "edited": "edited"}


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def body_of(update: dict[str, Any]) -> bytes:
    # Telegram posts compact JSON.
    return json.dumps(update, separators=(",", ":"), ensure_ascii=False).encode()


def settings(base_url: str = "https://api.telegram.org", **kw: Any) -> TelegramSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "api_base_url": base_url,
        "poll_timeout_s": 0,
        "timeout_s": 5.0,
        "standby_retry_seconds": 0.2,
        **kw,
    }
    return TelegramSettings.model_validate(values)


def ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def refused(code: int, description: str, **parameters: Any) -> dict[str, Any]:
    """A Bot API error answer, as Telegram shapes it."""
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


@dataclass
class FakeBotApi:
    token: str = TOKEN
    updates: list[dict[str, Any]] = field(default_factory=list)
    # file_id -> (file_path, bytes)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    file_failures: int = 0
    # Error answers to sendMessage, in order, before it succeeds: (HTTP status, body).
    fail: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    # Answers to sendPhoto / sendDocument, in order: an error (HTTP status, body), or None
    # for a call that succeeds.
    fail_files: list[tuple[int, dict[str, Any]] | None] = field(default_factory=list)
    # Files received by sendPhoto / sendDocument: method, the fields, the file's name, its
    # declared type and its bytes as they came.
    uploads: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    offsets: list[int | None] = field(default_factory=list)
    base_url: str = ""
    next_message_id: int = 100
    # Called with each getUpdates' offset before it is answered (a test's crash point).
    before_updates: list[Callable[[int | None], None]] = field(default_factory=list)

    def add(self, *names: str) -> None:
        for name in names:
            self.updates.append(fixture(name))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self.method)
        app.router.add_get("/file/bot{token}/{path:.+}", self.file)
        return app

    async def method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(refused(401, "Unauthorized"), status=401)
        name = request.match_info["method"]
        if name in ("sendPhoto", "sendDocument"):
            return await self.send_file(request, name)
        body: dict[str, Any] = await request.json() if request.can_read_body else {}
        self.calls.append((name, body))
        if name == "getMe":
            return ok(
                {
                    "id": int(self.token.partition(":")[0]),
                    "is_bot": True,
                    "first_name": "Acme Support",
                    "username": "acme_support_bot",
                    "can_join_groups": False,
                    "can_read_all_group_messages": False,
                    "supports_inline_queries": False,
                }
            )
        if name in ("deleteWebhook", "setWebhook"):
            return ok(True)
        if name == "getUpdates":
            offset = body.get("offset")
            self.offsets.append(offset)
            for hook in self.before_updates:
                hook(offset)
            if isinstance(offset, int):
                # An offset confirms every update before it: Telegram forgets them.
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            return ok(self.updates[: int(body.get("limit", 100))])
        if name == "getFile":
            found = self.files.get(str(body.get("file_id")))
            if found is None:
                return web.json_response(refused(400, "Bad Request: invalid file_id"), status=400)
            path, data = found
            return ok(
                {
                    "file_id": body["file_id"],
                    "file_unique_id": "u" + str(body["file_id"])[-6:],
                    "file_size": len(data),
                    "file_path": path,
                }
            )
        if name == "sendMessage":
            if self.fail:
                status, answer = self.fail.pop(0)
                return web.json_response(answer, status=status)
            self.sent.append(body)
            self.next_message_id += 1
            return ok(
                {
                    "message_id": self.next_message_id,
                    "from": {"id": 7755001122, "is_bot": True, "first_name": "Acme Support"},
                    "chat": {"id": body["chat_id"], "type": "private"},
                    "date": 1763640400,
                    "text": body["text"],
                }
            )
        return web.json_response(refused(404, "Not Found: method not found"), status=404)

    async def send_file(self, request: web.Request, name: str) -> web.Response:
        if not request.content_type.startswith("multipart/form-data"):
            return web.json_response(refused(400, "Bad Request: there is no file"), status=400)
        field_name = "photo" if name == "sendPhoto" else "document"
        fields: dict[str, str] = {}
        upload: dict[str, Any] | None = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            if part.name == field_name and part.filename is not None:
                upload = {
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type", ""),
                    "data": bytes(await part.read()),
                }
            elif part.name:
                fields[part.name] = await part.text()
        self.calls.append((name, dict(fields)))
        if upload is None or "chat_id" not in fields:
            return web.json_response(
                refused(400, f"Bad Request: there is no {field_name}"), status=400
            )
        planned = self.fail_files.pop(0) if self.fail_files else None
        if planned is not None:
            status, answer = planned
            return web.json_response(answer, status=status)
        self.uploads.append({"method": name, **fields, **upload})
        self.next_message_id += 1
        return ok(
            {
                "message_id": self.next_message_id,
                "chat": {"id": int(fields["chat_id"]), "type": "private"},
                "date": 1763640400,
                **({"caption": fields["caption"]} if "caption" in fields else {}),
            }
        )

    async def file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        if self.file_failures > 0:
            self.file_failures -= 1
            return web.Response(status=502, text="Bad Gateway")
        for path, data in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)


def fake_bot_api() -> AbstractContextManager[FakeBotApi]:
    """The fake on port 0, on a loop of its own in a thread: the senders are blocking."""
    return serving(FakeBotApi())


def deliver(engine: Any, *names: str) -> None:
    """Store fixtures as the connector does (its own keys), then normalize them."""
    from connectors.telegram.intake import raw_input
    from normalizer.intake import store
    from tests.support.helpers import normalize

    items = []
    for name in names:
        item, _ = raw_input(body_of(fixture(name)))
        assert item is not None, name
        items.append(item)
    store(engine, items)
    normalize(engine)
