"""Web form test support: the inbox app with the form's routes on an ephemeral port, the
proof of work done here with hashlib (not by the code under test), and page scraping."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine

from connectors.webform.settings import WebformSettings
from connectors.webform.web import WebForm
from inbox.secrets import Secret
from inbox.web import create_app
from inbox.web.config import InboxSettings
from normalizer.intake import IntakeWriter

SECRET = "webform-test-secret-0123456789"
PUBLIC = "https://help.example.com"
# Small buckets and little work so tests run fast; each test can override.
FAST: dict[str, Any] = {
    "enabled": True,
    "public_url": PUBLIC,
    "pow_bits": 8,
    "pow_max_bits": 12,
    "nojs_min_fill_seconds": 0,
    "wait_seconds": 0,
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + bytes(40)


def settings(**kw: Any) -> WebformSettings:
    return WebformSettings.model_validate({**FAST, **kw})


def stamp(token: str, bits: int) -> str:
    """A nonce whose SHA-256(token ":" nonce) starts with `bits` zero bits, found here."""
    n = 0
    while True:
        nonce = format(n, "x")
        digest = hashlib.sha256(f"{token}:{nonce}".encode()).digest()
        if int.from_bytes(digest, "big") >> (256 - bits) == 0 if bits else True:
            return nonce
        n += 1


def field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', html) or re.search(
        rf'value="([^"]*)"[^>]*name="{name}"', html
    )
    assert found is not None, f"no field {name}"
    return found.group(1).replace("&amp;", "&")


def bits_of(html: str) -> int:
    found = re.search(r'data-bits="(\d+)"', html)
    assert found is not None
    return int(found.group(1))


class Site:
    """The inbox app with the web form's routes, as the daemon mounts them."""

    def __init__(
        self, engine: Engine, section: WebformSettings | None = None, **inbox: Any
    ) -> None:
        self.engine = engine
        self.settings = section or settings()
        self.writer = IntakeWriter(engine)
        self.form = WebForm(self.settings, engine, Secret(SECRET), self.writer.submit)
        self.app = create_app(
            engine, InboxSettings(trust_forwarded_for=True, **inbox), routes=self.form.routes()
        )
        self.client: TestClient[Any, Any] = TestClient(TestServer(self.app))

    async def __aenter__(self) -> Site:
        await self.client.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        self.writer.stop()
        self.form.buckets.stop()

    async def get(self, path: str, address: str = "198.51.100.7") -> tuple[int, str, Any]:
        response = await self.client.get(
            path, headers={"X-Forwarded-For": address}, allow_redirects=False
        )
        return response.status, await response.text(), response.headers

    async def page(self, address: str = "198.51.100.7") -> tuple[str, int]:
        status, html, _ = await self.get("/contact", address)
        assert status == 200
        return field(html, "form_token"), bits_of(html)

    async def post(
        self,
        values: dict[str, str],
        *,
        files: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
        address: str = "198.51.100.7",
        path: str = "/contact",
    ) -> tuple[int, str, Any]:
        data = FormData()
        for key, value in values.items():
            data.add_field(key, value)
        for name, content, kind in files:
            data.add_field("files", content, filename=name, content_type=kind)
        response = await self.client.post(
            path, data=data, headers={"X-Forwarded-For": address}, allow_redirects=False
        )
        return response.status, await response.text(), response.headers

    async def send(
        self,
        *,
        name: str = "Ana Lima",
        email: str = "ana@example.org",
        phone: str = "",
        text: str = "I lost access to my account and my email.",
        work: bool = True,
        address: str = "198.51.100.7",
        files: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
        **more: str,
    ) -> tuple[int, str, Any]:
        token, bits = await self.page(address)
        values = {"form_token": token, "name": name, "email": email, "phone": phone, "text": text}
        values["work"] = stamp(token, bits) if work else ""
        values.update(more)
        return await self.post(values, files=files, address=address)


def received_path(location: str) -> str:
    parts = urlsplit(location)
    assert parts.path.startswith("/contact/received/")
    assert parse_qs(parts.query)["k"]
    return location
