"""The aiohttp application's parts: context, middlewares (errors, authentication, CSRF), headers.

The handlers' modules (api, pages, forms, flash, manager) import these helpers from here, and
inbox/web/factory.py, which builds the app, imports those modules: this module imports none
of them, so the web package has no import cycle.

Handlers stay thin: they parse the request, call a blocking store function in a worker
thread (the store is synchronous SQLAlchemy) and shape the response. Authentication and
CSRF happen once, here, for every route in the route table.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine

from inbox import accounts
from inbox.accounts import AccountError, Principal, UnknownAccount, has_role
from inbox.casework import Conflict, Invalid, NotFound
from inbox.db import StorageUnavailable
from inbox.delivery import WayOut
from inbox.display import strip_bidi
from inbox.web.config import InboxSettings
from inbox.web.routes import Route, route_of

log = logging.getLogger(__name__)

SESSION_COOKIE = "parity_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH = "/login"

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
HealthCheck = Callable[[], Awaitable[tuple[dict[str, Any], int]]]
MetricsSource = Callable[[], Awaitable[list[str]]]


@dataclass
class InboxContext:
    engine: Engine
    settings: InboxSettings
    message_id_domain: str
    health: HealthCheck | None = None
    # More /metrics lines from the composition root (connector health, for example).
    metrics_sources: list[MetricsSource] = field(default_factory=list)
    # How each channel's messages leave (inbox.delivery), from the composition root: the
    # banner on every page says which have no way out. Empty: nothing is said.
    ways_out: tuple[WayOut, ...] = ()
    # Argon2 takes 64 MiB and ~0.1 s per check: a few at a time, whatever arrives.
    password_checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))


CONTEXT = web.AppKey("parity.inbox", InboxContext)
PRINCIPAL = web.RequestKey("parity.principal", Principal)
# The pages' 403 page (inbox/web/pages.py sets it): the middleware cannot import the pages.
ForbiddenPage = Callable[[web.Request, str], web.StreamResponse]
FORBIDDEN_PAGE: web.AppKey[ForbiddenPage] = web.AppKey("parity.forbidden_page")


def context(request: web.Request) -> InboxContext:
    return request.app[CONTEXT]


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    if not isinstance(found, Principal):  # the middleware guarantees it on "user" routes
        raise web.HTTPUnauthorized()
    return found


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking store call in a worker thread, off the event loop."""
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


def reply_json(data: Any, status: int = 200, **kwargs: Any) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps, **kwargs)


def error(status: int, message: str, **extra: Any) -> web.Response:
    # Pages show these sentences as they are; one may quote a name a sender chose.
    return reply_json({"error": strip_bidi(message), **extra}, status=status)


async def body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model`; 400 with the reasons when it is not."""
    if request.content_type != "application/json":
        raise _HttpError(415, "send the body as application/json")
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()
        ]
        raise _HttpError(400, "the request body is not valid", details=details) from exc


class _HttpError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def client_ip(request: web.Request) -> str:
    if context(request).settings.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()[:64]
    return (request.remote or "")[:64]


# --- middlewares ---------------------------------------------------------------------------


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Domain errors become JSON answers with the right status; nothing leaks a traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except _HttpError as exc:
        return error(exc.status, str(exc), **exc.extra)
    except (NotFound, UnknownAccount) as exc:
        # Only our own "no such thing" errors: a KeyError or IndexError from a bug is a
        # LookupError too, and must surface as a 500 with its traceback logged, not a 404.
        return error(404, str(exc))
    except Conflict as exc:
        return error(409, str(exc), holder=exc.holder)
    except (Invalid, AccountError) as exc:
        return error(400, str(exc))
    except PermissionError as exc:
        return error(403, str(exc))
    except StorageUnavailable:
        log.warning("store unavailable for %s %s", request.method, request.path)
        return error(503, "the store is busy; try again", retry_after=5)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error")


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    route = route_of(request)
    if route is None and request.match_info.http_exception is not None:
        return await handler(request)  # 404 / 405 from the router
    if route is not None and route.auth in ("public", "signature", "login"):
        return await handler(request)
    found = await _authenticate(request)
    if found is None:
        return _anonymous(request, route)
    if found.via == "session" and request.method not in SAFE_METHODS:
        # Double submit: the token the session was given must come back in a header (or,
        # from an HTML form, a field). A cross-site page can send the cookie, not the token.
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            form = await request.post()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
        if not sent or not found.csrf_token or not hmac.compare_digest(sent, found.csrf_token):
            if route is not None and route.kind == "html":
                # A page form: a sentence for the agent (a stale tab after a new login), not JSON.
                return web.Response(
                    status=403,
                    text="This form's security token is missing or out of date: go back, "
                    "reload the page and try again.",
                )
            return error(403, f"CSRF token missing or wrong: send the {CSRF_HEADER} header")
    needed = route.role if route is not None else "agent"
    if not has_role(found.role, needed):
        page = request.app.get(FORBIDDEN_PAGE)
        if route is not None and route.kind == "html" and page is not None:
            # A person at a page gets the inbox's own page, in its navigation, not JSON.
            request[PRINCIPAL] = found
            return page(request, f"This page is for the {needed} role and up.")
        return error(403, f"this needs the {needed} role")
    request[PRINCIPAL] = found
    return await handler(request)


def _anonymous(request: web.Request, route: Route | None) -> web.StreamResponse:
    if route is not None and route.kind == "html":
        target = request.rel_url.path
        if route.login_next is not None and request.method not in SAFE_METHODS:
            target = route.login_next.format_map(request.match_info)
        # Quoted: path parameters arrive decoded and must not break the Location header.
        raise web.HTTPSeeOther(f"{LOGIN_PATH}?next={quote(target, safe='/')}")
    return reply_json(
        {"error": "log in first (a session cookie or Authorization: Bearer <token>)"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="parity"'},
    )


async def _authenticate(request: web.Request) -> Principal | None:
    ctx = context(request)
    header = request.headers.get("Authorization")
    if header is not None:
        # A bad token never falls back to the cookie: the caller meant the token.
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return await blocking(accounts.principal_for_token, ctx.engine, token.strip())
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    return await blocking(
        accounts.principal_for_session, ctx.engine, secret, ctx.settings.session_policy()
    )


async def still_signed_in(request: web.Request) -> bool:
    """Whether a long request (an event stream) would still be let in, as the same person:
    the session not logged out, expired or idle, the token not revoked, the user enabled."""
    found = await _authenticate(request)
    return found is not None and found.id == principal(request).id


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    # Pages set their own policy; everything else is data and runs nothing.
    headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    # Responses carry customer data: no cache keeps them.
    headers.setdefault("Cache-Control", "no-store")


def set_session_cookie(request: web.Request, response: web.StreamResponse, secret: str) -> None:
    settings = context(request).settings
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=settings.session_max_hours * 3600,
        path="/",
        httponly=True,
        secure=settings.cookie_secure,
        samesite=settings.cookie_samesite,
    )


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    settings = context(request).settings
    response.del_cookie(
        SESSION_COOKIE,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite=settings.cookie_samesite,
    )
