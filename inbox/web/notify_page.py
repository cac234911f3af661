"""The notifications page (issue 22): my notifications, mark read, and my notification
settings. Everything it changes goes through the JSON API (/api/notifications,
/api/me/notifications); the bell in every page's navigation is static/notify.js."""

from __future__ import annotations

from aiohttp import web

from inbox import notifications
from inbox.web.app import blocking, context, principal
from inbox.web.pages import render
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
        breach_within=ctx.settings.breach_within(),
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
        )
    ]
