"""The Bot API, as far as Parity uses it, over aiohttp; and what its errors mean.

Chosen over python-telegram-bot after measuring both (docs/channels/telegram.md, "Why the
Bot API over aiohttp"): aiohttp is already Parity's HTTP stack, the calls are few
(getUpdates, getFile, sendMessage, sendPhoto, sendDocument, getMe, setWebhook,
deleteWebhook), and the library
would add its own HTTP client (httpx and four more packages) and import time for them.

Every call answers `{"ok": true, "result": ...}` or `{"ok": false, "error_code": N,
"description": "...", "parameters": {"retry_after": S}}`. The token is part of every URL
("/bot<token>/method"), so no URL and no library message leaves this module unmasked.

The senders and `parity doctor` are blocking: they call through `call_sync`, which runs one
request on a loop of its own (sends are few; a poller keeps one session open instead).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

from connectors.telegram.settings import TelegramSettings
from inbox.secrets import Secret, mask

# A bot token as it appears in a URL: "bot" then the bot id, a colon and the secret part.
_TOKEN_IN_TEXT = re.compile(r"bot\d+:[A-Za-z0-9_-]+")
# A Bot API answer is small; a getUpdates of 100 updates is far below this.
MAX_ANSWER_BYTES = 16 * 1024 * 1024


def hide_token(text: str, token: Secret | None = None) -> str:
    """`text` with the bot token removed, whether or not it is a known secret."""
    if token is not None and token.reveal():
        text = text.replace(token.reveal(), "***")
    return _TOKEN_IN_TEXT.sub("bot***", mask(text))


@dataclass
class BotApiError(Exception):
    """An error answer of the Bot API (or a transport failure: status 0)."""

    status: int
    code: int | None
    description: str
    # parameters.retry_after of a 429: seconds to wait before asking again.
    retry_after: float | None = None
    # The request may have reached Telegram (no answer in time): a resend could send twice.
    unsure: bool = False

    def __str__(self) -> str:
        code = self.code if self.code is not None else (self.status or "unreachable")
        return f"Bot API {code}: {self.description}"[:500]


def error_of(status: int, body: Any) -> BotApiError:
    """A Bot API error answer to a BotApiError; an unreadable one keeps its HTTP status."""
    if not isinstance(body, dict):
        return BotApiError(status, None, "no error body")
    code = body.get("error_code")
    params = body.get("parameters")
    wait = params.get("retry_after") if isinstance(params, dict) else None
    return BotApiError(
        status,
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        str(body.get("description") or "")[:400],
        float(wait) if isinstance(wait, int | float) and not isinstance(wait, bool) else None,
    )


@dataclass(frozen=True)
class Upload:
    """One file for a multipart Bot API call: the form field that names it ("photo",
    "document"), and the file."""

    field: str
    filename: str
    content_type: str
    data: bytes


def form_of(payload: dict[str, Any], upload: Upload) -> aiohttp.FormData:
    """The multipart body of a call with a file: each payload value a text field (the Bot
    API reads numbers from text), the file last."""
    form = aiohttp.FormData()
    for key, value in payload.items():
        form.add_field(key, value if isinstance(value, str) else json.dumps(value))
    form.add_field(
        upload.field, upload.data, filename=upload.filename, content_type=upload.content_type
    )
    return form


class BotApi:
    """A few Bot API calls with one token; open it in the loop that uses it."""

    def __init__(self, settings: TelegramSettings, token: Secret) -> None:
        self.settings = settings
        self.token = token
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def url(self, method: str) -> str:
        return f"{self.settings.api_base_url}/bot{self.token.reveal()}/{method}"

    def file_url(self, file_path: str) -> str:
        return f"{self.settings.api_base_url}/file/bot{self.token.reveal()}/{file_path}"

    def session(self) -> aiohttp.ClientSession:
        # A session belongs to the loop it was made in: a new loop gets a new one.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession()
            self._loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    async def call(
        self,
        method: str,
        payload: dict[str, Any] | None = None,
        *,
        wait_s: float = 0.0,
        upload: Upload | None = None,
    ) -> Any:
        """POST `payload` as JSON to `method`; its `result`. `wait_s`: a long poll's wait,
        added to the request timeout. `upload`: a file sent with the payload's fields as
        multipart/form-data (sendPhoto, sendDocument), the only way the Bot API takes bytes."""
        timeout = aiohttp.ClientTimeout(
            total=self.settings.timeout_s + wait_s, connect=min(10.0, self.settings.timeout_s)
        )
        sent: dict[str, Any] = (
            {"json": payload or {}} if upload is None else {"data": form_of(payload or {}, upload)}
        )
        try:
            async with self.session().post(self.url(method), timeout=timeout, **sent) as response:
                raw = await response.content.read(MAX_ANSWER_BYTES + 1)
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            # Refused or unreachable: the request never got to Telegram.
            raise BotApiError(
                0, None, hide_token(f"connection failed: {exc}", self.token)
            ) from None
        except TimeoutError:
            raise BotApiError(0, None, "no answer in time", unsure=True) from None
        except aiohttp.ClientError as exc:
            text = hide_token(f"{type(exc).__name__}: {exc}", self.token)
            raise BotApiError(0, None, text, unsure=True) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise BotApiError(status, None, f"answer over {MAX_ANSWER_BYTES} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            body = None
        if not isinstance(body, dict) or body.get("ok") is not True:
            raise error_of(status, body)
        return body.get("result")

    async def get_updates(self, offset: int | None, limit: int, wait_s: int) -> list[Any]:
        payload: dict[str, Any] = {
            "limit": limit,
            "timeout": wait_s,
            "allowed_updates": ["message"],
        }
        if offset is not None:
            payload["offset"] = offset
        result = await self.call("getUpdates", payload, wait_s=wait_s)
        if not isinstance(result, list):
            raise BotApiError(200, None, "getUpdates answered no list")
        return result

    async def download(self, file_id: str, max_bytes: int) -> tuple[bytes, str]:
        """A file's bytes and its path at Telegram: getFile, then the file URL, bounded."""
        found = await self.call("getFile", {"file_id": file_id})
        path = found.get("file_path") if isinstance(found, dict) else None
        if not isinstance(path, str) or not path or ".." in path or path.startswith("/"):
            raise BotApiError(200, None, "getFile gave no usable file_path")
        size = found.get("file_size")
        if isinstance(size, int) and size > max_bytes:
            raise BotApiError(200, None, f"file is {size} bytes, over the cap of {max_bytes}")
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s * 4)
        try:
            async with self.session().get(self.file_url(path), timeout=timeout) as response:
                if response.status >= 400:
                    raise BotApiError(response.status, None, "file download refused")
                data = await response.content.read(max_bytes + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            text = hide_token(f"file download failed: {type(exc).__name__}: {exc}", self.token)
            raise BotApiError(0, None, text) from None
        if len(data) > max_bytes:
            raise BotApiError(200, None, f"file over the cap of {max_bytes} bytes")
        return data, path


def call_sync(
    settings: TelegramSettings,
    token: Secret,
    method: str,
    payload: dict[str, Any] | None = None,
    upload: Upload | None = None,
) -> Any:
    """One call from blocking code (a sender's thread, `parity doctor`)."""

    async def once() -> Any:
        api = BotApi(settings, token)
        try:
            return await api.call(method, payload, upload=upload)
        finally:
            await api.close()

    return asyncio.run(once())
