"""The OpenAPI 3.1 document, generated from the route table so it names every route."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from inbox.web.routes import ROUTES, Route

_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"session": [], "csrf": []}]


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag],
        "x-parity-auth": route.auth,
        "x-parity-role": route.role,
        "responses": {
            str(code): {"description": text} for code, text in sorted(route.responses.items())
        },
    }
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.path_params
    ]
    for param in route.query:
        schema: dict[str, Any] = {"type": param.type}
        if param.many:
            schema = {"type": "array", "items": schema}
        parameters.append(
            {
                "name": param.name,
                "in": "query",
                "required": param.required,
                "description": param.description,
                "schema": schema,
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.body.model_json_schema()}},
        }
    if route.auth == "user":
        operation["security"] = _SECURED
        operation["responses"].setdefault("401", {"description": "not logged in"})
        operation["responses"].setdefault("403", {"description": "role or CSRF token missing"})
    else:
        operation["security"] = []
    return operation


def document(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in app[ROUTES].values():
        if route.in_openapi:
            paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parity agent inbox",
            "version": "1",
            "description": (
                "Every route needs a session cookie (with the X-CSRF-Token header on "
                "state-changing requests) or an Authorization: Bearer token, except those "
                "whose security is empty."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "parity_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            }
        },
    }
