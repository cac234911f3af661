"""The notifications page (issue 22): my notifications, mark read, and my notification
settings. Everything it changes goes through the JSON API (/api/notifications,
/api/me/notifications); the bell in every page's navigation is static/notify.js, fed by
my own live stream (/events/notifications)."""

from __future__ import annotations

import json

from aiohttp import web

from inbox import notifications
from inbox.web.app import blocking, context, principal
from inbox.web.pages import change_stream, render
from inbox.web.routes import Route

KIND_LABELS = {
    "assigned": "A case is assigned to me",
    "answered": "A customer answered on my case",
    "breach": "A case of mine is about to breach its due time",
}


async def notifications_page(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    who = principal(request)
    listing = await blocking(
        notifications.listing,
        ctx.engine,
        who.id,
        limit=notifications.LIST_MAX,
    )
    prefs = await blocking(notifications.get_prefs, ctx.engine, who.id)
    return render(
        request,
        "notifications.html",
        listing=listing,
        prefs=prefs,
        kinds=[(k, KIND_LABELS[k]) for k in notifications.KINDS],
        breach_minutes=ctx.settings.notify_breach_minutes,
        digest_after=ctx.settings.digest_after_minutes,
        digest_period=ctx.settings.digest_period_minutes,
    )


# What the stream sends: the bell's count and the newest few, as GET /api/notifications
# gives them (the page shows a browser notification for each new unread one).
STREAM_LIMIT = 20


async def notification_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events for the signed-in agent alone: `notifications`, with my listing,
    at the start and whenever one is added for me or I read some. The agent is the
    request's own principal; there is no parameter naming anyone else."""
    engine = context(request).engine
    me = principal(request).id
    return await change_stream(
        request,
        lambda: notifications.signature(engine, me),
        "notifications",
        lambda: json.dumps(notifications.listing(engine, me, limit=STREAM_LIMIT)),
        first=True,
    )


def routes() -> list[Route]:
    return [
        Route(
            "GET",
            "/notifications",
            notifications_page,
            "My notifications and their settings",
            "pages",
            kind="html",
            in_openapi=False,
        ),
        Route(
            "GET",
            "/events/notifications",
            notification_events,
            "My notifications as server-sent events",
            "pages",
            kind="text",
            in_openapi=False,
        ),
    ]
