"""The agent pages: server-rendered HTML (Jinja2, autoescaped), static CSS/JS, the sandboxed
mail frame and the queue's server-sent events.

Pages render what the JSON API returns; most actions on a page go through the same JSON API
from static JavaScript with the session's CSRF token, so there is one set of rules. The
merge, undo and identity actions are plain POST forms (inbox/web/forms.py) over the same
store functions. No page runs inline script: the Content-Security-Policy says so and a
browser enforces it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup
from sqlalchemy import Engine, select

from inbox import accounts, casework, identities, merges, search, snooze, teams
from inbox.accounts import Principal, has_role
from inbox.channels import (
    CHANNEL_FACTS,
    CHANNEL_NAMES,
    MESSAGE_ID_CHANNELS,
    PUBLIC_CHANNEL_NAMES,
    SENDER_CHECKED_CHANNELS,
    stylesheet,
)
from inbox.compose import attachment_refusal, files_in_public
from inbox.db import read
from inbox.delivery import WayOut, by_channel, not_received
from inbox.display import strip_bidi
from inbox.downloads import INLINE_IMAGES
from inbox.labels import BadTag, normalize_tag
from inbox.models import Case, Message, utcnow
from inbox.web import flash
from inbox.web.app import (
    FORBIDDEN_PAGE,
    LOGIN_PATH,
    PRINCIPAL,
    blocking,
    context,
    principal,
    still_signed_in,
)
from inbox.web.banner import NOTICES
from inbox.web.mailview import fold, with_images
from inbox.web.routes import Route
from inbox.web.trust import auth_line, safe_next

# Script and style only from our own /static/; the mail frame is the only frame.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
# The mail frame runs nothing and loads nothing but inline styles (mail is styled inline)
# and, once the agent asks, remote images. `sandbox` makes it an opaque origin even if
# opened on its own.
FRAME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data: cid:{images}; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox allow-popups "
    "allow-popups-to-escape-sandbox"
)
PUBLIC_CHANNELS = PUBLIC_CHANNEL_NAMES
SSE_POLL_SECONDS = 1.0
# The stylesheet made from the channel registry, served beside the files of static/.
CHANNELS_CSS = "channels.css"
SSE_KEEPALIVE_SECONDS = 15.0


def shown(value: Any) -> Any:
    """Every `{{ ... }}` of every page passes here: text loses its bidirectional controls,
    so no name, subject or file name a sender chose can reorder what is around it. Markup
    (a message body marked by the `body` filter) is left alone."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return strip_bidi(value)
    return value


def body(value: Any) -> Markup:
    """A message's text, escaped, with its direction controls kept: the template shows it in
    its own `dir="auto"` block, which isolates it (right-to-left writing needs its marks)."""
    return Markup.escape("" if value is None else str(value))


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("inbox.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    finalize=shown,
)
_ENV.filters["body"] = body


def channel_label(name: str) -> str:
    """How pages name a channel (the registry's label; an unknown name as it is)."""
    facts = CHANNEL_FACTS.get(name)
    return facts.label if facts is not None else name


_ENV.filters["channel_label"] = channel_label
_STATIC = resources.files("inbox.web") / "static"
# Set when the app shuts down: open event streams end at once instead of holding the
# server's graceful shutdown for its whole timeout.
CLOSING = web.AppKey("parity.pages.closing", asyncio.Event)


def install(app: web.Application) -> None:
    """Add the pages' routes and their shutdown hook to the app (the forms' routes, which
    post to the same pages, come right after them, from inbox/web/factory.py)."""
    from inbox.web.routes import add_routes

    app[CLOSING] = asyncio.Event()
    app[FORBIDDEN_PAGE] = forbidden_page

    async def close_streams(app: web.Application) -> None:
        app[CLOSING].set()

    app.on_shutdown.append(close_streams)
    add_routes(app, routes())


def duration(seconds: float) -> str:
    """'3d 4h', '2h 5m', '4m' for a span in seconds (the sign is the caller's business)."""
    seconds = abs(int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


def time_left(due_at: str | None, now: datetime) -> tuple[str, bool]:
    """How long until due, and whether it is overdue."""
    if not due_at:
        return "", False
    due = datetime.fromisoformat(due_at)
    if due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    left = (due - now).total_seconds()
    return (duration(left) if left >= 0 else f"{duration(left)} over"), left < 0


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def queue_rows(cases: list[dict[str, Any]], now: datetime, show_held: bool) -> list[dict[str, Any]]:
    """The queue's rows: held-by-others cases are hidden unless asked for, since nobody else
    can act on them."""
    rows = []
    now = _aware(now)
    for case in cases:
        lease = case.get("lease")
        if lease and not lease["mine"] and not show_held:
            continue
        first = datetime.fromisoformat(case["first_inbound_at"])
        if first.tzinfo is None:
            first = first.replace(tzinfo=UTC)
        left, overdue = time_left(case["due_at"], now)
        contact = case["contact"]
        handle = contact["identities"][0]["handle"] if contact["identities"] else ""
        rows.append(
            {
                "reference": case["reference"],
                "contact": contact["name"] or handle,
                "handle": handle,
                "subject": case["subject"],
                "channels": case["channels"],
                "age": duration((now - first).total_seconds()),
                "left": left,
                "overdue": overdue,
                "status": case["status"],
                "followups": case["followups"],
                "holder": lease["holder"] if lease else None,
                "mine": bool(lease and lease["mine"]),
                "assignee": case["assignee"],
                # Issue 16: marks the agent must see before trusting who wrote.
                "claims_reference": case.get("claims_reference"),
                "unverified_from": case.get("unverified_from"),
                "channel": case.get("channel", ""),
                # Near-duplicates from other people (issue 11): shown, never merged on their own.
                "similar": [
                    (s["reference"], f"{s['score']:.2f}") for s in case.get("suggestions") or []
                ],
                # Issue 22: tags and fields on the row; a snoozed case says until when.
                "tags": case.get("tags") or [],
                "team": case.get("team"),
                "fields": case.get("fields") or {},
                "snoozed_until": snoozed_label(case.get("snooze")),
                "matches": match_line(case.get("matches") or []),
            }
        )
    return rows


def snoozed_label(snooze: dict[str, Any] | None) -> str | None:
    """None when not snoozed; "" when snoozed until the customer answers; else the time."""
    if snooze is None:
        return None
    return str(snooze.get("until") or "")


def match_line(matches: list[dict[str, Any]]) -> str:
    """What made a search result match, in a line: the text excerpt, else the handle or
    reference (search results only; queue rows have no matches)."""
    for match in matches:
        if match.get("kind") == "message":
            return str(match.get("snippet", ""))
    for match in matches:
        if match.get("kind") == "handle":
            return f"{match.get('channel')}: {match.get('handle')}"
        if match.get("kind") in ("reference", "claims_reference", "message_ref"):
            return str(match.get("reference") or match.get("ref") or "")
    return ""


def sender_check(entry: dict[str, Any]) -> dict[str, str] | None:
    """The sender-authentication line of one timeline entry: inbound email only (SMS, voice
    and the social channels are authenticated by their connectors, not per message)."""
    if entry["kind"] != "message" or entry["direction"] != "inbound":
        return None
    line = auth_line(entry.get("auth"))
    if line is None and entry["channel"] in SENDER_CHECKED_CHANNELS:
        # Filed before sender authentication existed, or never checked: not a pass.
        return {"text": "Sender not checked", "state": "none"}
    return line


def reply_facts(channel: str) -> dict[str, Any]:
    """What the reply form needs to know of a channel: whether it takes files (or why not),
    copies, its formatting, its length limit and SMS part length."""
    facts = CHANNEL_FACTS[channel]
    return {
        "files_refused": attachment_refusal(channel),
        "copies": channel in MESSAGE_ID_CHANNELS,
        "formatting": facts.formatting,
        "limit": facts.max_text,
        "public_limit": facts.max_public_text,
        "segment": facts.segment_text,
    }


def _not_received(
    ways: tuple[WayOut, ...], delivery: dict[str, Any] | None, entry: dict[str, Any]
) -> str | None:
    """ "The customer has NOT received this", and why, under an outbound message or row."""
    if not delivery:
        return None
    way = by_channel(ways).get(entry.get("channel", ""))
    return not_received(delivery.get("state"), way, delivery.get("provider_id"))


def render(request: web.Request, name: str, *, status: int = 200, **values: Any) -> web.Response:
    found = request.get(PRINCIPAL)
    text = _ENV.get_template(name).render(
        me=found.name if found is not None else None,
        csrf=found.csrf_token if found is not None else "",
        # The navigation's Manager link, for managers and admins only.
        is_manager=found is not None and has_role(found.role, "manager"),
        delivery_notices=request.get(NOTICES, []),
        # The bell's poll while its live stream is down (static/notify.js).
        notify_poll_seconds=context(request).settings.notify_fallback_poll_seconds,
        **values,
    )
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={"Content-Security-Policy": PAGE_CSP},
    )


def forbidden_page(request: web.Request, problem: str) -> web.StreamResponse:
    """The inbox's 403 page: a role too low for a page."""
    return render(
        request, "problem.html", status=403, title="Not for your role", problem=problem, flash=None
    )


# --- handlers ------------------------------------------------------------------------------


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/queue")


async def login_page(request: web.Request) -> web.StreamResponse:
    # Only our own paths: a login link must not send the agent elsewhere afterwards.
    return render(request, "login.html", next=safe_next(request.rel_url.query.get("next")))


# The queue page's default view: cases that need us. A case waiting on the customer (a
# reply went out) leaves it, and is back as "open" when they answer (issue 22).
DEFAULT_VIEW = casework.CLAIMABLE_STATUSES


def _filters(request: web.Request) -> tuple[casework.QueueFilter, dict[str, str], bool]:
    query = request.rel_url.query
    status = query.get("status", "")
    # The snoozed list shows every open status: a case snoozed while waiting on the
    # customer is snoozed too.
    default = casework.OPEN_STATUSES if query.get("snoozed") == "1" else DEFAULT_VIEW
    statuses = tuple(s for s in status.split(",") if s) or default
    chosen = {
        "status": status,
        "channel": query.get("channel", ""),
        "assignee": query.get("assignee", ""),
        "held": query.get("held", ""),
        "tag": query.get("tag", ""),
        "team": query.get("team", ""),
        "snoozed": query.get("snoozed", ""),
    }
    try:
        tag = normalize_tag(chosen["tag"]) if chosen["tag"].strip() else None
    except BadTag as exc:
        raise casework.Invalid(str(exc)) from None
    return (
        casework.QueueFilter(
            statuses=statuses,
            channel=chosen["channel"] or None,
            assignee=chosen["assignee"] or None,
            tag=tag,
            team=chosen["team"] or None,
            snoozed=chosen["snoozed"] == "1",
        ),
        chosen,
        chosen["held"] == "1",
    )


async def _rows(request: web.Request) -> tuple[list[dict[str, Any]], dict[str, str]]:
    filters, chosen, show_held = _filters(request)
    page = await blocking(
        casework.queue_page,
        context(request).engine,
        principal(request),
        filters,
        limit=context(request).settings.queue_page_max,
    )
    return queue_rows(page["cases"], utcnow(), show_held), chosen


async def _after_done(request: web.Request) -> str:
    ctx = context(request)
    found = await blocking(
        casework.after_done, ctx.engine, principal(request), ctx.settings.after_done
    )
    return str(found["after_done"])


async def queue_page(request: web.Request) -> web.StreamResponse:
    rows, chosen = await _rows(request)
    return render(
        request,
        "queue.html",
        rows=rows,
        chosen=chosen,
        statuses=casework.STATUSES,
        channels=CHANNEL_NAMES,
        teams=[t["name"] for t in await blocking(teams.list_teams, context(request).engine)],
        selectable=True,
        after_done=await _after_done(request),
    )


async def queue_fragment(request: web.Request) -> web.StreamResponse:
    rows, _ = await _rows(request)
    return render(request, "queue_rows.html", rows=rows, selectable=True)


async def search_page(request: web.Request) -> web.StreamResponse:
    """The search box's page: results as case rows, in the ranking of /api/search (the
    same function), with the same filters. Held cases are shown: a search is for finding."""
    ctx = context(request)
    params = request.rel_url.query
    q = params.get("q", "").strip()[:500]
    chosen = {
        k: params.get(k, "")
        for k in ("status", "channel", "tag", "assignee", "team", "since", "until")
    }
    problem = None
    rows: list[dict[str, Any]] = []
    try:
        filters = search.filter_from_query(params)
        if q or filters.any():
            found = await blocking(
                search.search,
                ctx.engine,
                principal(request),
                q,
                limit=ctx.settings.search_page_max,
                filters=filters,
            )
            rows = queue_rows(found["results"], utcnow(), show_held=True)
    except casework.Invalid as exc:
        problem = str(exc)
    response = render(
        request,
        "search.html",
        rows=rows,
        chosen=chosen,
        search_query=q,
        asked=bool(q or any(chosen.values())),
        problem=problem,
        statuses=casework.STATUSES,
        channels=CHANNEL_NAMES,
        selectable=False,
        empty_text="No case matches." if (q or any(chosen.values())) else "Type what to look for.",
    )
    if problem:
        response.set_status(400)
    return response


def _html_message_ids(engine: Engine, ids: list[int]) -> tuple[set[int], set[int]]:
    """Messages with a stored sanitized view, and legacy ones with HTML but no view."""
    if not ids:
        return set(), set()
    with read(engine) as conn:
        rows = conn.execute(
            select(Message.id, Message.html_view.is_not(None)).where(
                Message.id.in_(ids), Message.html.is_not(None)
            )
        ).all()
    return {r[0] for r in rows if r[1]}, {r[0] for r in rows if not r[1]}


async def case_page(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    who = principal(request)
    notice = flash.take(request)
    try:
        view = await blocking(
            casework.case_view,
            ctx.engine,
            who,
            request.match_info["reference"],
            ctx.settings.timing(),
        )
    except casework.NotFound as exc:
        response = render(
            request, "problem.html", title="No such case", problem=str(exc), flash=notice
        )
        response.set_status(404)
        flash.clear(request, response)
        return response
    history = await blocking(merges.merges_of, ctx.engine, view["reference"])
    message_ids = [e["id"] for e in view["timeline"] if e["kind"] == "message"]
    with_html, legacy_html = await blocking(_html_message_ids, ctx.engine, message_ids)
    public_on = {
        e["channel"]
        for e in view["timeline"]
        if e["kind"] == "message" and e["direction"] == "inbound" and e["visibility"] == "public"
    }
    for entry in view["timeline"]:
        entry["segments"] = fold(entry.get("text") or "")
        entry["html"] = entry["kind"] == "message" and entry["id"] in with_html
        entry["sender_check"] = sender_check(entry)
        # Filed before views were stored: its text is shown, its HTML is not parsed here.
        entry["html_legacy"] = entry["kind"] == "message" and entry["id"] in legacy_html
        entry["not_received"] = _not_received(ctx.ways_out, entry.get("delivery"), entry)
    for row in view["outbox"]:
        row["not_received"] = _not_received(ctx.ways_out, row, row)
    targets = [
        {
            **t,
            "public": t["channel"] in PUBLIC_CHANNELS and t["channel"] in public_on,
            "default": view["default_reply"] == t,
            # What a platform's reply window will do (a template, or a refusal), said first.
            "note": view.get("reply_notes", {}).get(f"{t['channel']}|{t['handle']}"),
            # What the form offers on this channel (registry facts, inbox.compose).
            **reply_facts(t["channel"]),
        }
        for t in view["reply_targets"]
    ]
    for t in targets:
        if t["public"] and not t["files_refused"]:
            # A public reply is text only, on every channel (the server refuses it too).
            t["files_refused"] = files_in_public(t["channel"])
    viewers = [v["user"] for v in view.get("viewers", []) if v["user"] != who.name]
    # Another agent's lease: the reply box is shut (the server refuses anyway, issue 16).
    lease = view.get("lease")
    held_by_other = bool(lease and not lease["mine"])
    # The live merge that absorbed this case, if it was: the page says where it went.
    absorbed_by = next(
        (m for m in history if m["source"] == view["reference"] and m["undone_at"] is None),
        None,
    )
    people, team_list = await blocking(_pickers, ctx.engine, who, view.get("assignee"))
    response = render(
        request,
        "case.html",
        case=view,
        people=people,
        teams=team_list,
        targets=targets,
        viewers=viewers,
        title=f"{view['reference']} · {view['subject']}",
        flash=notice,
        merges=history,
        absorbed_by=absorbed_by,
        identity_kinds=identities.KINDS,
        may_force=has_role(who.role, "manager"),
        held_by_other=held_by_other,
        after_done=await _after_done(request),
        known_addresses=view.get("known_addresses", []),
        preview_types=tuple(INLINE_IMAGES),
    )
    flash.clear(request, response)
    return response


def _pickers(engine: Engine, who: Principal, assignee: str | None) -> tuple[list[str], list[str]]:
    """The names the case page's assignment pickers offer: active users (an agent may
    assign only themselves, so they are offered themselves and whoever has the case now)
    and every team."""
    users = [u["name"] for u in accounts.list_users(engine) if not u["disabled"]]
    if not has_role(who.role, "manager"):
        users = [u for u in users if u in (who.name, assignee)]
    if assignee and assignee not in users:
        users.append(assignee)
    return users, [t["name"] for t in teams.list_teams(engine)]


def _message_view(engine: Engine, message_id: int) -> str | None:
    with read(engine) as conn:
        found = conn.execute(
            select(Message.html_view).where(Message.id == message_id)
        ).one_or_none()
    if found is None:
        raise casework.NotFound(f"no message {message_id}")
    view: str | None = found.html_view
    return view


async def mail_frame(request: web.Request) -> web.StreamResponse:
    """The stored sanitized HTML of one mail, for a sandboxed iframe of the case page.

    The view was made when the message was filed (depth-capped, nh3-cleaned, remote images
    parked); serving it is a lookup and one linear string pass, never a parse of the mail's
    raw HTML, so opening a hostile mail costs the server nothing.
    """
    try:
        message_id = int(request.match_info["message_id"])
    except ValueError as exc:
        raise web.HTTPNotFound() from exc
    show_images = request.rel_url.query.get("images") == "1"
    stored = await blocking(_message_view, context(request).engine, message_id)
    if stored is None:
        raise web.HTTPNotFound(text="no stored view of this mail; its text is on the case page")
    clean, _blocked = with_images(stored, show_images)
    document = (
        '<!doctype html><html><head><meta charset="utf-8"><title>mail</title></head>'
        f"<body>{clean}</body></html>"
    )
    return web.Response(
        text=document,
        content_type="text/html",
        headers={
            "Content-Security-Policy": FRAME_CSP.format(
                images=" https: http:" if show_images else ""
            ),
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == CHANNELS_CSS:
        # The badge colours are the registry's: made here, not kept in app.css.
        return web.Response(
            text=stylesheet(),
            content_type="text/css",
            headers={"Cache-Control": "no-cache", "Content-Security-Policy": "default-src 'none'"},
        )
    entry = _STATIC / name
    if "/" in name or name.startswith(".") or not entry.is_file():
        raise web.HTTPNotFound()
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.Response(
        body=entry.read_bytes(),
        content_type=kind,
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": "default-src 'none'"},
    )


def queue_signature(engine: Engine) -> str:
    """A digest of what the queue shows: it changes when a case is added, claimed, released,
    assigned, snoozed or woken, or changes status."""
    digest = hashlib.sha256()
    with read(engine) as conn:
        for row in conn.execute(
            select(
                Case.id,
                Case.status,
                Case.claimed_by,
                Case.lease_until,
                Case.assignee_id,
                Case.followups,
                # A snooze set, ended by its time or by the customer's answer (issue 22).
                Case.snooze_after_message_id,
                snooze.awake(utcnow()),
            )
            .where(Case.status.in_(casework.OPEN_STATUSES))
            .order_by(Case.id)
        ):
            digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


async def change_stream(
    request: web.Request,
    probe: Callable[[], Hashable],
    event: str,
    payload: Callable[[], str],
    *,
    first: bool = False,
) -> web.StreamResponse:
    """Server-sent events: `event` with `payload()` whenever `probe()` changed (asked once a
    second, so a change written by any process of any instance reaches the page within a
    second or so); with `first`, once at the start too. Every SSE_KEEPALIVE_SECONDS the
    stream's credentials are checked again, as a request would check them: a logged-out,
    expired or disabled session ends the stream."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    last = await blocking(probe)
    await response.write(b"retry: 2000\n\n")

    async def send() -> None:
        data = await blocking(payload)
        await response.write(f"event: {event}\ndata: {data}\n\n".encode())

    if first:
        await send()
    idle = 0.0
    closing = request.app.get(CLOSING) or asyncio.Event()  # an app built without install()
    try:
        while not closing.is_set():
            try:
                await asyncio.wait_for(closing.wait(), timeout=SSE_POLL_SECONDS)
                break
            except TimeoutError:
                pass
            current = await blocking(probe)
            if current != last:
                last = current
                await send()
                idle = 0.0
            else:
                idle += SSE_POLL_SECONDS
                if idle >= SSE_KEEPALIVE_SECONDS:
                    if not await still_signed_in(request):
                        break
                    await response.write(b": keep-alive\n\n")
                    idle = 0.0
    except ConnectionResetError:
        pass  # the agent closed the page
    return response


async def queue_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `queue` whenever the queue changed (one indexed scan of the open
    cases a second, cheap next to an agent reloading the page)."""
    engine = context(request).engine
    return await change_stream(
        request,
        lambda: queue_signature(engine),
        "queue",
        lambda: json.dumps({"at": utcnow().isoformat()}),
    )


def routes() -> list[Route]:
    return [
        Route("GET", "/", root, "The queue", "pages", kind="html", in_openapi=False),
        Route(
            "GET",
            LOGIN_PATH,
            login_page,
            "Log in",
            "pages",
            auth="login",
            kind="html",
            in_openapi=False,
        ),
        Route("GET", "/queue", queue_page, "The queue", "pages", kind="html", in_openapi=False),
        Route(
            "GET",
            "/queue/rows",
            queue_fragment,
            "The queue's rows (for live updates)",
            "pages",
            kind="html",
            in_openapi=False,
        ),
        Route(
            "GET", "/cases/{reference}", case_page, "A case", "pages", kind="html", in_openapi=False
        ),
        Route(
            "GET", "/search", search_page, "Search cases", "pages", kind="html", in_openapi=False
        ),
        Route(
            "GET",
            "/messages/{message_id}/frame",
            mail_frame,
            "A mail's sanitized HTML",
            "pages",
            kind="html",
            in_openapi=False,
        ),
        Route(
            "GET",
            "/static/{name}",
            static_file,
            "Page CSS and JavaScript",
            "pages",
            auth="public",
            kind="file",
            in_openapi=False,
        ),
        Route(
            "GET",
            "/events/queue",
            queue_events,
            "Queue changes as server-sent events",
            "pages",
            kind="text",
            in_openapi=False,
        ),
    ]
