"""The delivery banner on every page (inbox.delivery): which channels have no working way
out, or only a trial Maildir. Computed once per few seconds, not per page: the outbox's
queued channels are one grouped query, and the ways out change only with the settings.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from sqlalchemy import Engine, select

from inbox.db import read
from inbox.delivery import Notice, notices
from inbox.models import Outbox
from inbox.web.app import CONTEXT, PRINCIPAL, blocking
from inbox.web.routes import route_of

NOTICES = web.RequestKey("parity.delivery_notices", list[Notice])
# Seconds a computed banner is reused: a row queued on a dead channel shows within this.
CACHE_SECONDS = 5.0


@dataclass
class BannerCache:
    at: float = -1e9
    notices: list[Notice] = field(default_factory=list)


BANNER_CACHE = web.AppKey("parity.banner_cache", BannerCache)


def queued_channels(engine: Engine) -> set[str]:
    with read(engine) as conn:
        return set(
            conn.execute(
                select(Outbox.channel).where(Outbox.state == "queued").distinct()
            ).scalars()
        )


async def current(app: web.Application) -> list[Notice]:
    ctx = app[CONTEXT]
    if not ctx.ways_out:
        return []
    cache = app[BANNER_CACHE]
    now = time.monotonic()
    if now - cache.at > CACHE_SECONDS:
        cache.notices = notices(ctx.ways_out, await blocking(queued_channels, ctx.engine))
        cache.at = now
    return cache.notices


@web.middleware
async def banner_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    route = route_of(request)
    if route is not None and route.kind == "html" and request.get(PRINCIPAL) is not None:
        request[NOTICES] = await current(request.app)
    return await handler(request)
