"""An aiohttp app served on a port of its own, on an event loop of its own in a thread.

For the callers that block: the Twilio, Meta and Telegram fakes answer the connectors' real
HTTP clients from blocking senders, and the browser tests drive Chromium while the inbox
app (and the contact form) serve it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from aiohttp import web


@contextmanager
def served_in_thread(
    make_app: Callable[[], web.Application], *, shutdown_timeout: float = 60.0
) -> Iterator[str]:
    """The app `make_app` builds, on a free local port until the block ends; yields its base
    URL (no slash). `shutdown_timeout`: how long the end waits for open connections (a
    browser's keep-alive ones would hold it for the default minute)."""
    loop = asyncio.new_event_loop()
    runner: web.AppRunner | None = None
    base_url = ""

    async def start() -> None:
        nonlocal base_url, runner
        # Built on the loop that serves it.
        runner = web.AppRunner(make_app(), shutdown_timeout=shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base_url = f"http://127.0.0.1:{port}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield base_url
    finally:
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class Fake(Protocol):
    """A provider's fake: its app, and the base URL it is served at (set when served)."""

    base_url: str

    def app(self) -> web.Application: ...


F = TypeVar("F", bound=Fake)


@contextmanager
def serving(fake: F) -> Iterator[F]:
    """`fake` served until the block ends (`served_in_thread`), its base_url set."""
    with served_in_thread(fake.app) as base_url:
        fake.base_url = base_url
        yield fake
