"""The JSON API under /api/: handlers and their route table.

Every handler is thin: parse, call the store in a thread, answer. The route table at the end
is the single list the router, the authentication middleware and /api/openapi.json use.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError
from sqlalchemy import Engine

from inbox import accounts, bulk, casework, identities, merges, notifications, search, suggestions
from inbox.channels import IDENTITY_KIND_NAMES, REPLY_CHANNEL_NAMES
from inbox.config import Strict
from inbox.downloads import download_headers, sniff_image
from inbox.labels import BadTag, normalize_field, normalize_tags
from inbox.metrics import StoreCollector
from inbox.snooze import BadSnooze
from inbox.web import openapi
from inbox.web.app import (
    blocking,
    body,
    clear_session_cookie,
    client_ip,
    context,
    error,
    principal,
    reply_json,
    set_session_cookie,
)
from inbox.web.routes import Param, Route

# --- request bodies (their JSON Schemas go into the OpenAPI document) ----------------------


def one_of(values: tuple[str, ...]) -> Callable[[object], str]:
    """A check that a value is one of `values`, failing with the very error a `Literal` of
    them gives (the API's error text stays the same while the values come from the
    channel registry)."""
    quoted = [repr(v) for v in values]
    expected = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]

    def check(value: object) -> str:
        if isinstance(value, str) and value in values:
            return value
        raise PydanticCustomError(
            "literal_error", "Input should be {expected}", {"expected": expected}
        )

    return check


def enum_schema(values: tuple[str, ...]) -> dict[str, Any]:
    """The JSON Schema a `Literal` of these values has."""
    return {"enum": list(values), "type": "string"}


# A channel an agent may reply on, and an identity kind: both from inbox.channels.
ReplyChannel = Annotated[
    str,
    PlainValidator(one_of(REPLY_CHANNEL_NAMES)),
    WithJsonSchema(enum_schema(REPLY_CHANNEL_NAMES)),
]
IdentityKindName = Annotated[
    str,
    PlainValidator(one_of(IDENTITY_KIND_NAMES)),
    WithJsonSchema(enum_schema(IDENTITY_KIND_NAMES)),
]


class LoginBody(Strict):
    name: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class ClaimBody(Strict):
    # A manager may take over a case another agent holds.
    force: bool = False


class ReplyBody(Strict):
    text: str = Field(min_length=1, max_length=casework.MAX_TEXT)
    channel: ReplyChannel | None = None
    handle: str | None = Field(default=None, max_length=512)
    status: Literal["open", "pending_customer", "resolved"] = "pending_customer"
    force: bool = False
    # Copies of a mail reply: addresses the case knows or typed ones (shown as new).
    cc: list[str] = Field(default_factory=list, max_length=20)
    bcc: list[str] = Field(default_factory=list, max_length=20)
    # Ids from POST /api/cases/{reference}/uploads, sent as attachments where the channel
    # carries files; refused with the reason where it does not.
    attachments: list[int] = Field(default_factory=list, max_length=100)
    # The text is Markdown: sent as HTML with the text as its alternative where the channel
    # is rich (mail); elsewhere it is sent as typed.
    markdown: bool = True


class NoteBody(Strict):
    text: str = Field(min_length=1, max_length=casework.MAX_TEXT)


class StatusBody(Strict):
    status: Literal["open", "pending_customer", "resolved"]
    force: bool = False


class AssignBody(Strict):
    # A user name, or null for nobody.
    assignee: str | None


class NewUserBody(Strict):
    name: str = Field(max_length=64)
    role: Literal["agent", "manager", "admin"]
    password: str = Field(min_length=accounts.MIN_PASSWORD_LENGTH, max_length=1024)


class UserChangeBody(Strict):
    role: Literal["agent", "manager", "admin"] | None = None
    disabled: bool | None = None
    password: str | None = Field(
        default=None, min_length=accounts.MIN_PASSWORD_LENGTH, max_length=1024
    )


class TokenBody(Strict):
    label: str = Field(default="", max_length=128)


class MergeBody(Strict):
    # The reference of the case that survives; this case's messages move into it.
    into: str = Field(max_length=32)
    force: bool = False


class UndoBody(Strict):
    force: bool = False


class LinkBody(Strict):
    channel: IdentityKindName
    handle: str = Field(min_length=1, max_length=320)
    # One of the two: the contact to link to, or a case whose contact it is.
    to_contact: int | None = None
    to_case: str | None = Field(default=None, max_length=32)


class UnlinkBody(Strict):
    channel: IdentityKindName
    handle: str = Field(min_length=1, max_length=320)


Tag = Annotated[str, Field(min_length=1, max_length=64)]


class TagsBody(Strict):
    add: list[Tag] = Field(default_factory=list, max_length=20)
    remove: list[Tag] = Field(default_factory=list, max_length=20)


class FieldBody(Strict):
    name: str = Field(min_length=1, max_length=64)
    # null (or empty) clears the field.
    value: str | None = Field(max_length=512)


class SnoozeBody(Strict):
    # With a zone (2026-12-08T09:00:00Z). null: until the customer answers. A timed snooze
    # ends early too when the customer answers.
    until: datetime | None = None
    force: bool = False


class BulkBody(Strict):
    action: Literal["assign", "tag", "untag", "resolve", "snooze", "accept_suggestion"]
    references: list[Annotated[str, Field(max_length=32)]] = Field(
        min_length=1, max_length=bulk.MAX_CASES
    )
    # assign: a user name or null; tag/untag: the tags; snooze: the time (null: until the
    # customer answers).
    assignee: str | None = Field(default=None, max_length=64)
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    until: datetime | None = None
    force: bool = False


class SettingsBody(Strict):
    # null: follow the global [inbox] after_done.
    after_done: Literal["stay", "next"] | None


NotifyKind = Literal["assigned", "answered", "breach"]


class ReadBody(Strict):
    # These notification ids (others' are ignored), or all of mine when `all` is true.
    ids: list[int] = Field(default_factory=list, max_length=500)
    all: bool = False


class NotifySettingsBody(Strict):
    # Each field left out stays as it is.
    kinds: list[NotifyKind] | None = Field(default=None, max_length=3)
    browser: bool | None = None
    digest: bool | None = None
    # Where my digest goes; null or "" clears it (and a digest needs one).
    address: str | None = Field(default=None, max_length=notifications.MAX_ADDRESS)


def _bad_input(exc: ValueError) -> web.StreamResponse:
    return error(400, str(exc))


# --- accounts ------------------------------------------------------------------------------


async def login(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    # JSON only: a cross-site HTML form cannot send it, so nobody can be logged in to an
    # account of someone else's choosing (login CSRF).
    if request.content_type != "application/json":
        return error(401, "log in with a JSON body: name and password")
    try:
        credentials = LoginBody.model_validate_json(await request.read() or b"{}")
    except ValueError:
        return error(401, "log in with a JSON body: name and password")
    async with ctx.password_checks:
        result = await blocking(
            accounts.login,
            ctx.engine,
            credentials.name,
            credentials.password,
            ip=client_ip(request),
            user_agent=request.headers.get("User-Agent", ""),
            limits=ctx.settings.login_limits(),
            policy=ctx.settings.session_policy(),
        )
    if result.retry_after is not None:
        return reply_json(
            {
                "error": "too many failed logins; wait and try again",
                "retry_after": result.retry_after,
            },
            status=429,
            headers={"Retry-After": str(result.retry_after)},
        )
    if result.principal is None or result.session_secret is None:
        return error(401, "wrong name or password")
    response = reply_json(
        {"user": result.principal.public(), "csrf_token": result.principal.csrf_token}
    )
    set_session_cookie(request, response, result.session_secret)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    await blocking(accounts.logout, context(request).engine, who)
    response = reply_json({"ok": True})
    if who.via == "session":
        clear_session_cookie(request, response)
    return response


async def me(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    data: dict[str, Any] = {"user": who.public()}
    if who.via == "session":
        data["csrf_token"] = who.csrf_token
    return reply_json(data)


async def users_list(request: web.Request) -> web.StreamResponse:
    return reply_json({"users": await blocking(accounts.list_users, context(request).engine)})


async def users_create(request: web.Request) -> web.StreamResponse:
    data = await body(request, NewUserBody)
    user = await blocking(
        accounts.add_user,
        context(request).engine,
        data.name,
        data.role,
        data.password,
        actor=principal(request).actor,
    )
    return reply_json({"user": user}, status=201)


async def users_update(request: web.Request) -> web.StreamResponse:
    data = await body(request, UserChangeBody)
    user = await blocking(
        accounts.update_user,
        context(request).engine,
        request.match_info["name"],
        actor=principal(request).actor,
        role=data.role,
        disabled=data.disabled,
        password=data.password,
    )
    return reply_json({"user": user})


async def tokens_list(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    return reply_json(
        {"tokens": await blocking(accounts.list_tokens, context(request).engine, who.id)}
    )


async def tokens_create(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    data = await body(request, TokenBody)
    token = await blocking(
        accounts.create_token, context(request).engine, who.name, label=data.label, actor=who.actor
    )
    # Shown once: only its hash is stored.
    return reply_json({"token": token, "label": data.label}, status=201)


async def tokens_revoke(request: web.Request) -> web.StreamResponse:
    token_id = _int(request.match_info["token_id"], "token id")
    await blocking(accounts.revoke_token, context(request).engine, token_id, principal(request))
    return reply_json({"ok": True})


# --- the queue and cases -------------------------------------------------------------------


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise casework.NotFound(f"no {what} {value!r}") from None


async def queue(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    query = request.rel_url.query
    statuses = tuple(s for value in query.getall("status", []) for s in value.split(",") if s)
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        return error(400, "limit is a whole number")
    if not 1 <= limit <= ctx.settings.queue_page_max:
        return error(400, f"limit is between 1 and {ctx.settings.queue_page_max}")
    tag = query.get("tag", "").strip()
    try:
        normalized = normalize_tags([tag]) if tag else []
    except BadTag as exc:
        return _bad_input(exc)
    filters = casework.QueueFilter(
        statuses=statuses or casework.OPEN_STATUSES,
        channel=query.get("channel") or None,
        assignee=query.get("assignee") or None,
        tag=normalized[0] if normalized else None,
        team=query.get("team") or None,
        snoozed=query.get("snoozed") in ("1", "true"),
    )
    page = await blocking(
        casework.queue_page,
        ctx.engine,
        principal(request),
        filters,
        limit=limit,
        cursor=query.get("cursor") or None,
    )
    return reply_json(page)


async def claim_next(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    case = await blocking(
        casework.claim_next, ctx.engine, principal(request), ctx.settings.timing()
    )
    if case is None:
        return reply_json({"case": None, "message": "no unclaimed open case"})
    return reply_json({"case": case})


async def case_get(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    view = await blocking(
        casework.case_view,
        ctx.engine,
        principal(request),
        request.match_info["reference"],
        ctx.settings.timing(),
    )
    return reply_json(view)


async def case_claim(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    data = await body(request, ClaimBody) if request.can_read_body else ClaimBody()
    lease = await blocking(
        casework.claim,
        ctx.engine,
        principal(request),
        request.match_info["reference"],
        ctx.settings.timing(),
        force=data.force,
    )
    return reply_json(lease)


async def case_release(request: web.Request) -> web.StreamResponse:
    force = request.rel_url.query.get("force") in ("1", "true")
    lease = await blocking(
        casework.release,
        context(request).engine,
        principal(request),
        request.match_info["reference"],
        force=force,
    )
    return reply_json(lease)


async def case_reply(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    data = await body(request, ReplyBody)
    result = await blocking(
        casework.reply,
        ctx.engine,
        principal(request),
        request.match_info["reference"],
        casework.ReplyRequest(
            text=data.text,
            channel=data.channel,
            handle=data.handle,
            status=data.status,
            force=data.force,
            cc=tuple(data.cc),
            bcc=tuple(data.bcc),
            uploads=tuple(data.attachments),
            markdown=data.markdown,
        ),
        message_id_domain=ctx.message_id_domain,
        timing=ctx.settings.timing(),
        limits=ctx.settings.file_limits(),
    )
    return reply_json(result, status=201)


async def case_note(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    data = await body(request, NoteBody)
    note = await blocking(
        casework.add_note,
        ctx.engine,
        principal(request),
        request.match_info["reference"],
        data.text,
        ctx.settings.timing(),
    )
    return reply_json({"note": note}, status=201)


async def case_status(request: web.Request) -> web.StreamResponse:
    data = await body(request, StatusBody)
    result = await blocking(
        casework.set_status,
        context(request).engine,
        principal(request),
        request.match_info["reference"],
        data.status,
        force=data.force,
    )
    return reply_json(result)


async def case_assign(request: web.Request) -> web.StreamResponse:
    data = await body(request, AssignBody)
    result = await blocking(
        casework.assign,
        context(request).engine,
        principal(request),
        request.match_info["reference"],
        data.assignee,
    )
    return reply_json(result)


async def presence_get(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    result = await blocking(
        casework.presence,
        ctx.engine,
        principal(request),
        request.match_info["reference"],
        ctx.settings.timing(),
    )
    return reply_json(result)


async def presence_beat(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    result = await blocking(
        casework.heartbeat,
        ctx.engine,
        principal(request),
        request.match_info["reference"],
        ctx.settings.timing(),
    )
    return reply_json(result)


async def presence_leave(request: web.Request) -> web.StreamResponse:
    await blocking(
        casework.leave, context(request).engine, principal(request), request.match_info["reference"]
    )
    return reply_json({"ok": True})


# --- one person, one case (issue 11) -------------------------------------------------------


async def case_merge(request: web.Request) -> web.StreamResponse:
    data = await body(request, MergeBody)
    record = await blocking(
        merges.merge,
        context(request).engine,
        principal(request),
        request.match_info["reference"],
        data.into,
        force=data.force,
    )
    return reply_json({"merge": record}, status=201)


async def merge_undo(request: web.Request) -> web.StreamResponse:
    merge_id = _int(request.match_info["merge_id"], "merge")
    # The body is optional: `{"force": true}` lets a manager undo on a case another holds.
    data = await body(request, UndoBody) if request.can_read_body else UndoBody()
    record = await blocking(
        merges.undo, context(request).engine, principal(request), merge_id, force=data.force
    )
    return reply_json({"merge": record})


async def case_merges(request: web.Request) -> web.StreamResponse:
    rows = await blocking(
        merges.merges_of, context(request).engine, request.match_info["reference"]
    )
    return reply_json({"merges": rows})


async def case_suggestions(request: web.Request) -> web.StreamResponse:
    reference = casework.normalize_reference(request.match_info["reference"])
    rows = await blocking(suggestions.for_reference, context(request).engine, reference)
    return reply_json({"suggestions": rows})


async def identity_link(request: web.Request) -> web.StreamResponse:
    data = await body(request, LinkBody)
    result = await blocking(
        identities.link,
        context(request).engine,
        principal(request),
        data.channel,
        data.handle,
        contact_id=data.to_contact,
        case_reference=data.to_case,
    )
    return reply_json(result)


async def identity_unlink(request: web.Request) -> web.StreamResponse:
    data = await body(request, UnlinkBody)
    result = await blocking(
        identities.unlink, context(request).engine, principal(request), data.channel, data.handle
    )
    return reply_json(result)


async def search_cases(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query.get("q", "").strip()
    filters = search.filter_from_query(request.rel_url.query)
    if not query and not filters.any():
        return error(400, "q is the text to search for (or give at least one filter)")
    try:
        limit = min(100, max(1, int(request.rel_url.query.get("limit", "20"))))
    except ValueError:
        return error(400, "limit is a whole number")
    result = await blocking(
        search.search,
        context(request).engine,
        principal(request),
        query[:500],
        limit=limit,
        filters=filters,
    )
    return reply_json(result)


# --- tags, fields, snooze, bulk, my settings (issue 22) -------------------------------------


async def case_tags(request: web.Request) -> web.StreamResponse:
    data = await body(request, TagsBody)
    try:
        add, remove = normalize_tags(data.add), normalize_tags(data.remove)
    except BadTag as exc:
        return _bad_input(exc)
    try:
        result = await blocking(
            casework.change_tags,
            context(request).engine,
            principal(request),
            request.match_info["reference"],
            add=add,
            remove=remove,
        )
    except BadTag as exc:
        return _bad_input(exc)
    return reply_json(result)


async def case_field(request: web.Request) -> web.StreamResponse:
    data = await body(request, FieldBody)
    try:
        name, value = normalize_field(data.name, data.value)
    except BadTag as exc:
        return _bad_input(exc)
    try:
        result = await blocking(
            casework.set_field,
            context(request).engine,
            principal(request),
            request.match_info["reference"],
            name,
            value,
        )
    except BadTag as exc:
        return _bad_input(exc)
    return reply_json(result)


async def case_snooze(request: web.Request) -> web.StreamResponse:
    data = await body(request, SnoozeBody)
    try:
        result = await blocking(
            casework.snooze_case,
            context(request).engine,
            principal(request),
            request.match_info["reference"],
            data.until,
            force=data.force,
        )
    except BadSnooze as exc:
        return _bad_input(exc)
    return reply_json(result)


async def case_wake(request: web.Request) -> web.StreamResponse:
    result = await blocking(
        casework.wake, context(request).engine, principal(request), request.match_info["reference"]
    )
    return reply_json(result)


async def bulk_action(request: web.Request) -> web.StreamResponse:
    data = await body(request, BulkBody)
    try:
        labels = normalize_tags(data.tags)
    except BadTag as exc:
        return _bad_input(exc)
    if data.action in ("tag", "untag") and not labels:
        return error(400, "tags: give at least one tag")
    result = await blocking(
        bulk.run,
        context(request).engine,
        principal(request),
        bulk.BulkRequest(
            action=data.action,
            references=tuple(data.references),
            assignee=data.assignee,
            tags=tuple(labels),
            until=data.until,
            force=data.force,
        ),
    )
    return reply_json(result)


async def my_settings(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    result = await blocking(
        casework.after_done, ctx.engine, principal(request), ctx.settings.after_done
    )
    return reply_json(result)


async def my_settings_update(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    data = await body(request, SettingsBody)
    result = await blocking(
        casework.set_after_done,
        ctx.engine,
        principal(request),
        data.after_done,
        ctx.settings.after_done,
    )
    return reply_json(result)


async def notifications_list(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    unread = request.query.get("unread", "false").lower() in ("1", "true", "yes")
    limit = _int(request.query.get("limit", "30"), "limit")
    result = await blocking(
        notifications.listing,
        ctx.engine,
        principal(request).id,
        unread_only=unread,
        limit=limit,
    )
    return reply_json(result)


async def notifications_read(request: web.Request) -> web.StreamResponse:
    data = await body(request, ReadBody)
    if not data.all and not data.ids:
        return error(400, "give ids, or all: true")
    result = await blocking(
        notifications.mark_read,
        context(request).engine,
        principal(request).id,
        None if data.all else data.ids,
    )
    return reply_json(result)


async def notify_settings(request: web.Request) -> web.StreamResponse:
    result = await blocking(notifications.get_prefs, context(request).engine, principal(request).id)
    return reply_json(result)


async def notify_settings_update(request: web.Request) -> web.StreamResponse:
    data = await body(request, NotifySettingsBody)
    try:
        result = await blocking(
            notifications.set_prefs,
            context(request).engine,
            principal(request).id,
            kinds=data.kinds,
            browser=data.browser,
            digest=data.digest,
            address=data.address,
            address_given="address" in data.model_fields_set,
        )
    except notifications.BadPrefs as exc:
        return _bad_input(exc)
    return reply_json(result)


async def attachment(request: web.Request) -> web.StreamResponse:
    attachment_id = _int(request.match_info["attachment_id"], "attachment")
    data, declared, filename, reference = await blocking(
        casework.attachment_blob, context(request).engine, principal(request), attachment_id
    )
    inline = request.rel_url.query.get("inline") in ("1", "true")
    if inline:
        # A preview shows only what the bytes prove to be a raster image (issue 22).
        declared = sniff_image(data) or "application/octet-stream"
    headers = download_headers(
        declared, filename or f"{reference}-attachment-{attachment_id}", inline=inline
    )
    return web.Response(body=data, headers=headers)


async def raw_source(request: web.Request) -> web.StreamResponse:
    message_id = _int(request.match_info["message_id"], "message")
    data, _channel, filename = await blocking(
        casework.raw_source, context(request).engine, principal(request), message_id
    )
    # Raw input is the least trusted thing we hold: always opaque bytes, always a download.
    return web.Response(body=data, headers=download_headers("application/octet-stream", filename))


async def audit_log(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    try:
        limit = min(500, max(1, int(query.get("limit", "100"))))
        before = int(query["before"]) if "before" in query else None
    except ValueError:
        return error(400, "limit and before are whole numbers")
    entries = await blocking(
        casework.audit_entries,
        context(request).engine,
        reference=query.get("case") or None,
        limit=limit,
        before_id=before,
    )
    return reply_json({"entries": entries})


async def openapi_document(request: web.Request) -> web.StreamResponse:
    return reply_json(openapi.document(request.app))


# --- health and metrics (no customer data) -------------------------------------------------


async def healthz(request: web.Request) -> web.StreamResponse:
    check = context(request).health
    if check is None:
        return reply_json({"status": "ok"})
    data, status = await check()
    return reply_json(data, status=status)


def _exposition(engine: Engine) -> str:
    # A registry per scrape holding only the store collector: the figures come from the
    # shared database, so every instance answers the same, and nothing lives in memory.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(engine))
    return generate_latest(registry).decode()


async def metrics(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    text = await blocking(_exposition, ctx.engine)
    lines: list[str] = []
    for source in ctx.metrics_sources:
        lines += await source()
    if lines:
        text += "\n".join(lines) + "\n"
    return web.Response(
        text=text,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


# --- the route table -----------------------------------------------------------------------

_CASE = "/api/cases/{reference}"
_PAGE = (
    Param("limit", "page size", "integer"),
    Param("cursor", "next_cursor of the previous page"),
)


def routes() -> list[Route]:
    return [
        Route(
            "GET",
            "/healthz",
            healthz,
            "Service health (no customer data)",
            "service",
            auth="public",
            responses={200: "healthy", 503: "degraded"},
        ),
        Route(
            "GET",
            "/metrics",
            metrics,
            "Prometheus metrics (counts only)",
            "service",
            auth="public",
            kind="text",
        ),
        Route("GET", "/api/openapi.json", openapi_document, "This document", "service"),
        Route(
            "POST",
            "/api/login",
            login,
            "Log in: sets the session cookie, returns the CSRF token",
            "accounts",
            auth="login",
            body=LoginBody,
            responses={
                200: "logged in",
                401: "wrong or missing credentials",
                429: "too many failed logins",
            },
        ),
        Route("POST", "/api/logout", logout, "End this session", "accounts"),
        Route("GET", "/api/me", me, "Who I am (and my CSRF token, with a session)", "accounts"),
        Route("GET", "/api/users", users_list, "Users and their roles", "accounts"),
        Route(
            "POST",
            "/api/users",
            users_create,
            "Add a user",
            "accounts",
            role="admin",
            body=NewUserBody,
            responses={201: "created", 400: "invalid"},
        ),
        Route(
            "PATCH",
            "/api/users/{name}",
            users_update,
            "Change a user's role, password or disabled flag",
            "accounts",
            role="admin",
            body=UserChangeBody,
        ),
        Route("GET", "/api/tokens", tokens_list, "My API tokens", "accounts"),
        Route(
            "POST",
            "/api/tokens",
            tokens_create,
            "A new API token for me (shown once)",
            "accounts",
            body=TokenBody,
            responses={201: "created"},
        ),
        Route("DELETE", "/api/tokens/{token_id}", tokens_revoke, "Revoke a token", "accounts"),
        Route(
            "GET",
            "/api/queue",
            queue,
            "The queue in channel-blind order (due time); filters choose cases, never the order",
            "queue",
            query=(
                Param(
                    "status",
                    "new, open, pending_customer, resolved (repeat or comma "
                    "separate); default the open ones",
                    many=True,
                ),
                Param("channel", "only cases that have seen this channel"),
                Param("assignee", "me, none, or a user name"),
                Param("tag", "only cases with this tag"),
                Param("team", 'only cases of this team, of "mine" (my teams) or "none"'),
                Param(
                    "snoozed",
                    "true: only snoozed cases (default: snoozed cases are out)",
                    "boolean",
                ),
                *_PAGE,
            ),
        ),
        Route(
            "POST",
            "/api/queue/claim-next",
            claim_next,
            "Lease the top unclaimed open case to me (or renew the one I hold)",
            "queue",
        ),
        Route(
            "GET",
            _CASE,
            case_get,
            "A case, with the contact's whole timeline across channels",
            "cases",
            responses={200: "OK", 404: "no such case"},
        ),
        Route(
            "POST",
            f"{_CASE}/claim",
            case_claim,
            "Claim this case or renew my lease",
            "cases",
            body=ClaimBody,
            responses={200: "OK", 409: "another agent holds it"},
        ),
        Route(
            "DELETE",
            f"{_CASE}/claim",
            case_release,
            "Release my lease",
            "cases",
            query=(Param("force", "manager: release another agent's lease", "boolean"),),
        ),
        Route(
            "POST",
            f"{_CASE}/replies",
            case_reply,
            "Reply to the contact (queued in the outbox)",
            "cases",
            body=ReplyBody,
            responses={201: "queued", 400: "not a reply target", 409: "held by another"},
        ),
        Route(
            "POST",
            f"{_CASE}/notes",
            case_note,
            "Add an internal note",
            "cases",
            body=NoteBody,
            responses={201: "added"},
        ),
        Route(
            "POST",
            f"{_CASE}/status",
            case_status,
            "Set the status",
            "cases",
            body=StatusBody,
            responses={200: "OK", 409: "held by another"},
        ),
        Route(
            "POST",
            f"{_CASE}/assign",
            case_assign,
            "Assign (agents: only to themselves)",
            "cases",
            body=AssignBody,
        ),
        Route(
            "GET", f"{_CASE}/presence", presence_get, "Who views and who holds the case", "cases"
        ),
        Route(
            "POST",
            f"{_CASE}/presence",
            presence_beat,
            "I am viewing it (heartbeat; renews my lease)",
            "cases",
        ),
        Route("DELETE", f"{_CASE}/presence", presence_leave, "I stopped viewing it", "cases"),
        Route(
            "POST",
            f"{_CASE}/merge",
            case_merge,
            "Merge this case into another (every message, note and outbox row moves; undoable)",
            "merges",
            body=MergeBody,
            responses={201: "merged", 400: "invalid", 404: "no such case", 409: "held"},
        ),
        Route(
            "GET",
            f"{_CASE}/merges",
            case_merges,
            "Merges this case took part in, newest first",
            "merges",
        ),
        Route(
            "GET",
            f"{_CASE}/suggestions",
            case_suggestions,
            "Open cases of other people whose text is a near-duplicate, with scores",
            "merges",
        ),
        Route(
            "POST",
            "/api/merges/{merge_id}/undo",
            merge_undo,
            'Undo a merge: both cases as they were (optional body: {"force": true})',
            "merges",
            responses={
                200: "undone",
                404: "no such merge",
                409: "undone already, out of order, or held by another agent",
            },
        ),
        Route(
            "POST",
            "/api/identities/link",
            identity_link,
            "Link an identity to another contact (by id or by a case)",
            "contacts",
            body=LinkBody,
            responses={200: "linked", 400: "invalid", 404: "no such identity"},
        ),
        Route(
            "POST",
            "/api/identities/unlink",
            identity_unlink,
            "Give an identity a contact of its own again",
            "contacts",
            body=UnlinkBody,
            responses={200: "unlinked", 400: "only identity", 404: "no such identity"},
        ),
        Route(
            "GET",
            "/api/search",
            search_cases,
            "Search message text, contact handles and references",
            "search",
            query=(
                Param("q", "the text to search for (may be empty when a filter is given)"),
                Param("limit", "at most this many cases", "integer"),
                Param("status", "only cases in these statuses (comma-separated)"),
                Param("channel", "only cases with a message on this channel"),
                Param("tag", "only cases with this tag"),
                Param("assignee", 'only cases assigned to "me", "none" or this user'),
                Param("team", 'only cases of this team, of "mine" (my teams) or "none"'),
                Param("since", "only cases active on or after this day (YYYY-MM-DD, UTC)"),
                Param("until", "only cases opened on or before this day (YYYY-MM-DD, UTC)"),
            ),
        ),
        Route(
            "POST",
            f"{_CASE}/tags",
            case_tags,
            "Add and remove tags (audited)",
            "cases",
            body=TagsBody,
            responses={200: "OK", 400: "not a tag", 404: "no such case"},
        ),
        Route(
            "POST",
            f"{_CASE}/fields",
            case_field,
            "Set or clear a custom field (audited)",
            "cases",
            body=FieldBody,
            responses={200: "OK", 400: "not a field", 404: "no such case"},
        ),
        Route(
            "POST",
            f"{_CASE}/snooze",
            case_snooze,
            "Snooze until a time or until the customer answers (leaves the queue; audited)",
            "cases",
            body=SnoozeBody,
            responses={200: "OK", 400: "not a snooze time", 409: "held by another"},
        ),
        Route(
            "DELETE",
            f"{_CASE}/snooze",
            case_wake,
            "End the snooze now (audited)",
            "cases",
        ),
        Route(
            "POST",
            "/api/bulk",
            bulk_action,
            "One action on many cases, each checked and audited on its own",
            "queue",
            body=BulkBody,
            responses={200: "what happened to each case", 400: "invalid"},
        ),
        Route(
            "GET",
            "/api/me/settings",
            my_settings,
            "My settings (where I go after resolving or replying)",
            "accounts",
        ),
        Route(
            "PUT",
            "/api/me/settings",
            my_settings_update,
            "Change my settings",
            "accounts",
            body=SettingsBody,
        ),
        Route(
            "GET",
            "/api/notifications",
            notifications_list,
            "My notifications, newest first, with the unread count (assigned to me, a "
            "customer answered on my case, my case about to breach)",
            "notifications",
            query=(
                Param("unread", "true: only unread ones", "boolean"),
                Param("limit", "at most this many (up to 100; default 30)", "integer"),
            ),
        ),
        Route(
            "POST",
            "/api/notifications/read",
            notifications_read,
            "Mark my notifications read (these ids, or all)",
            "notifications",
            body=ReadBody,
            responses={200: "marked, and the unread count left", 400: "nothing named"},
        ),
        Route(
            "GET",
            "/api/me/notifications",
            notify_settings,
            "My notification settings (kinds, browser notifications, email digest, address)",
            "notifications",
        ),
        Route(
            "PUT",
            "/api/me/notifications",
            notify_settings_update,
            "Change my notification settings",
            "notifications",
            body=NotifySettingsBody,
            responses={200: "OK", 400: "invalid (a digest needs an address)"},
        ),
        Route(
            "GET",
            "/api/attachments/{attachment_id}",
            attachment,
            "Download an attachment",
            "files",
            kind="file",
            query=(Param("inline", "show raster images inline", "boolean"),),
        ),
        Route(
            "GET",
            "/api/messages/{message_id}/raw",
            raw_source,
            "Download a message's raw source as received",
            "files",
            kind="file",
        ),
        Route(
            "GET",
            "/api/audit",
            audit_log,
            "The audit log, newest first",
            "audit",
            role="manager",
            query=(
                Param("case", "only this case's entries"),
                Param("limit", "page size", "integer"),
                Param("before", "entries older than this id", "integer"),
            ),
        ),
    ]
