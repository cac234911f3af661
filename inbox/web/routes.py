"""The one route table: every route is registered from a `Route`, and the authentication
middleware and the OpenAPI document both read the same table, so they cannot drift.

A route that reaches the router any other way has no entry here, and the middleware then
treats it as needing a login: forgetting the table fails closed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# user: a session or a bearer token; login: anyone (the login route itself);
# public: anyone, and it must expose no customer data (/healthz, /metrics);
# signature: anyone, and the handler checks the request's signature (webhooks).
Auth = Literal["user", "login", "public", "signature"]


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    type: Literal["string", "integer", "boolean"] = "string"
    required: bool = False
    many: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: Auth = "user"
    # The least role that may call it (agent < manager < admin).
    role: Literal["agent", "manager", "admin"] = "agent"
    body: type[BaseModel] | None = None
    query: tuple[Param, ...] = ()
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})
    # "json" for the API; pages (Agent inbox II) say "html": an anonymous visitor is sent to
    # the login page instead of getting 401.
    kind: Literal["json", "html", "file", "text"] = "json"
    in_openapi: bool = True
    # For a page's POST route: where an anonymous visitor goes after logging in (a path
    # template filled from the route's parameters), since a login ends with a GET.
    login_next: str | None = None

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)(?::[^}]*)?}", self.path)


ROUTES = web.AppKey("parity.routes", dict[tuple[str, str], Route])


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    """Register routes on the app and in its table (pages and webhooks come in this way)."""
    table = app.setdefault(ROUTES, {})
    for route in routes:
        key = (route.method, route.path)
        if key in table:
            raise ValueError(f"{route.method} {route.path} is registered twice")
        app.router.add_route(route.method, route.path, route.handler)
        table[key] = route


def route_of(request: web.Request) -> Route | None:
    """The table entry of the route this request matched, if it matched one of ours."""
    info = request.match_info
    if info.http_exception is not None:
        return None
    resource = info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return request.app[ROUTES].get((method, resource.canonical))
