"""Building the agent inbox app: the one module that imports the handlers' modules.

Kept apart from inbox/web/app.py (the context, middlewares and helpers every handler module
imports), so that no module of inbox/web imports one that imports it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aiohttp import web
from sqlalchemy import Engine

from inbox.delivery import WayOut
from inbox.web import api, canned_page, forms, notify_page, pages, replies_api, teams_api
from inbox.web.app import (
    CONTEXT,
    HealthCheck,
    InboxContext,
    auth_middleware,
    errors_middleware,
    security_headers,
)
from inbox.web.banner import BANNER_CACHE, BannerCache, banner_middleware
from inbox.web.config import InboxSettings
from inbox.web.routes import ROUTES, Route, add_routes


def create_app(
    engine: Engine,
    settings: InboxSettings | None = None,
    *,
    message_id_domain: str = "parity.localhost",
    health: HealthCheck | None = None,
    routes: Iterable[Route] = (),
    ways_out: Sequence[WayOut] = (),
) -> web.Application:
    """The agent inbox app: the JSON API, /healthz and /metrics, ready for pages and webhooks.

    `routes` are more table entries from the composition root (connectors' webhooks), which
    the inbox cannot import.
    """
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware, banner_middleware],
        # Replies and notes are text; attachments are not uploaded through the API.
        client_max_size=2 * 1024 * 1024,
    )
    resolved = settings or InboxSettings()
    app[CONTEXT] = InboxContext(
        engine=engine,
        settings=resolved,
        message_id_domain=resolved.message_id_domain or message_id_domain,
        health=health,
        ways_out=tuple(ways_out),
    )
    app[BANNER_CACHE] = BannerCache()
    app[ROUTES] = {}
    add_routes(app, api.routes())
    add_routes(app, replies_api.routes())
    add_routes(app, teams_api.routes())
    add_routes(app, routes)
    pages.install(app)
    add_routes(app, forms.routes())
    add_routes(app, canned_page.routes())
    add_routes(app, notify_page.routes())
    app.on_response_prepare.append(security_headers)
    return app
