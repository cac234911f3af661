"""The canned replies page (issue 22): the list an agent may use, and a form to add or edit
one. Everything it changes goes through the JSON API (inbox/web/replies_api.py)."""

from __future__ import annotations

from aiohttp import web

from inbox import replykit
from inbox.accounts import has_role
from inbox.channels import CHANNEL_FACTS, REPLY_CHANNEL_NAMES
from inbox.web.app import blocking, context, principal
from inbox.web.pages import render
from inbox.web.routes import Route


async def canned_page(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    rows = await blocking(replykit.list_canned, context(request).engine, who)
    channels = [
        {
            "name": name,
            "label": CHANNEL_FACTS[name].label,
            "limit": min(CHANNEL_FACTS[name].max_text, CHANNEL_FACTS[name].max_public_text),
            "segment": CHANNEL_FACTS[name].segment_text,
        }
        for name in REPLY_CHANNEL_NAMES
    ]
    return render(
        request,
        "canned.html",
        canned=rows,
        manager=has_role(who.role, "manager"),
        reply_channels=channels,
    )


def routes() -> list[Route]:
    return [
        Route(
            "GET",
            "/canned",
            canned_page,
            "Canned replies page",
            "pages",
            kind="html",
            in_openapi=False,
        )
    ]
