"""Accounts and the gate in front of the API, on SQLite and PostgreSQL: every route the
OpenAPI document lists refuses anonymous requests (but /healthz and /metrics), sessions need
the CSRF token for changes, logins are rate-limited, bearer tokens work and can be revoked,
and `parity users add/token` make working credentials."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import Engine, select, update

from inbox import accounts
from inbox.models import AuditLog, LoginAttempt, User, WebSession
from inbox.web import create_app
from inbox.web.config import InboxSettings
from inbox.web.routes import ROUTES, Route
from parity import cli
from parity.daemon import Daemon
from parity.settings import parse
from tests.support.inbox_helpers import DOMAIN, PASSWORD, Api, email_case, make_user

pytest_plugins = ["tests.support.inbox_fixtures"]

EXEMPT = {("GET", "/healthz"), ("GET", "/metrics")}
# The login route answers anonymous callers by definition; without credentials it is a 401.
LOGIN = ("POST", "/api/login")
SAMPLE = {
    "reference": "C-000001",
    "attachment_id": "1",
    "message_id": "1",
    "token_id": "1",
    "merge_id": "1",
    "name": "ann",
    "canned_id": "1",
    "team": "billing",
    "upload_id": "1",
}


async def test_every_listed_route_refuses_anonymous_requests(api, engine):
    make_user(engine, "ann")
    email_case(engine, "secret.customer@example.org", "Confidential subject line")
    document = await api.call("ann", "GET", "/api/openapi.json")
    client = await api.client()
    listed = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            listed.append((method.upper(), path))
            url = re.sub(r"{(\w+)}", lambda m: SAMPLE[m.group(1)], path)
            kwargs: dict[str, Any] = {"json": {}} if "requestBody" in operation else {}
            response = await client.request(method.upper(), url, **kwargs)
            text = await response.text()
            if (method.upper(), path) in EXEMPT:
                assert response.status == 200, (method, path, text)
                assert operation["security"] == []
                # No customer data on the open routes.
                assert "secret.customer" not in text and "Confidential" not in text
            else:
                assert response.status == 401, (method, path, response.status, text)
                expected: list[Any] = (
                    []
                    if (method.upper(), path) == LOGIN
                    else [{"bearer": []}, {"session": [], "csrf": []}]
                )
                assert operation["security"] == expected, (method, path)
    # The document names every route the app serves, and nothing else, except the pages the
    # route table keeps out of it (HTML, static files, event streams: not an API).
    table = api.server.app[ROUTES]
    unlisted = {key for key, route in table.items() if not route.in_openapi}
    assert all(table[key].kind != "json" for key in unlisted)
    served = {
        (r.method, r.resource.canonical)
        for r in api.server.app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    assert served == set(listed) | unlisted
    assert len(listed) == len(set(listed)) >= 25
    # A garbage cookie or token is no better than none; a bad token never falls back.
    client.session.cookie_jar.update_cookies({"parity_session": "forged"})
    assert (await client.get("/api/queue")).status == 401
    client.session.cookie_jar.clear()
    await api.session("ann")
    session_client = api.clients[-1]
    bad = await session_client.get("/api/queue", headers={"Authorization": "Bearer nope"})
    assert bad.status == 401
    assert (await session_client.get("/api/queue")).status == 200


async def test_metrics_count_without_naming_anyone(api, engine):
    email_case(engine, "someone@example.org", "Private matter")
    client = await api.client()
    response = await client.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert 'parity_cases{status="new"} 1' in text
    assert "someone" not in text and "Private" not in text


async def test_changes_with_a_session_need_the_csrf_token(api, engine):
    make_user(engine, "ann")
    case = email_case(engine, "a@example.org", "Locked out")
    client, csrf = await api.session("ann")
    note = {"text": "checked"}

    missing = await client.post(f"/api/cases/{case}/notes", json=note)
    assert missing.status == 403 and "CSRF" in (await missing.json())["error"]
    wrong = await client.post(
        f"/api/cases/{case}/notes", json=note, headers={"X-CSRF-Token": "guess"}
    )
    assert wrong.status == 403
    form = await client.post(f"/api/cases/{case}/notes", data={"text": "from a form"})
    assert form.status == 403
    for method, path in (
        ("POST", "/api/queue/claim-next"),
        ("DELETE", f"/api/cases/{case}/claim"),
        ("POST", "/api/logout"),
    ):
        refused = await client.request(method, path)
        assert refused.status == 403, (method, path)
    # Reads need no token.
    assert (await client.get(f"/api/cases/{case}")).status == 200
    ok = await client.post(f"/api/cases/{case}/notes", json=note, headers=csrf)
    assert ok.status == 201
    # A form post may carry the token as a field (for the pages to come).
    form_ok = await client.post(
        f"/api/cases/{case}/notes", data={"text": "x", "csrf_token": csrf["X-CSRF-Token"]}
    )
    assert form_ok.status == 415  # past the CSRF check; the API itself wants JSON
    # A bearer token is not sent by browsers on their own: no CSRF token needed.
    bearer = await client.post(f"/api/cases/{case}/notes", json=note, headers=api.token("ann"))
    assert bearer.status == 201
    with engine.connect() as conn:
        notes = (
            conn.execute(select(AuditLog.action).where(AuditLog.action == "case.note"))
            .scalars()
            .all()
        )
    assert len(notes) == 2


async def test_login_session_cookie_and_logout(api, engine):
    make_user(engine, "ann")
    client = await api.client()
    wrong = await client.post("/api/login", json={"name": "ann", "password": "not it at all"})
    assert wrong.status == 401
    form = await client.post("/api/login", data={"name": "ann", "password": PASSWORD})
    assert form.status == 401  # JSON only: no login CSRF from a cross-site form
    response = await client.post("/api/login", json={"name": "ANN", "password": PASSWORD})
    assert response.status == 200
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("parity_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on 127.0.0.1 by default
    body = await response.json()
    assert body["user"]["name"] == "ann" and body["user"]["via"] == "session"
    secret = cookie.split(";")[0].split("=", 1)[1]
    with engine.connect() as conn:
        stored = conn.execute(select(WebSession.id, WebSession.csrf_token)).one()
    assert stored.id == accounts.digest(secret) != secret  # only the hash is kept
    me = await (await client.get("/api/me")).json()
    assert me["csrf_token"] == body["csrf_token"] == stored.csrf_token
    out = await client.post("/api/logout", headers={"X-CSRF-Token": body["csrf_token"]})
    assert out.status == 200
    assert (await client.get("/api/me")).status == 401
    # A copied cookie is dead too.
    client.session.cookie_jar.update_cookies({"parity_session": secret})
    assert (await client.get("/api/me")).status == 401
    with engine.connect() as conn:
        actions = conn.execute(select(AuditLog.action).order_by(AuditLog.id)).scalars().all()
    assert actions == ["user.login", "user.logout"]

    secure = await api_with(api, engine, InboxSettings(cookie_secure=True, cookie_samesite="Lax"))
    response = await secure.post("/api/login", json={"name": "ann", "password": PASSWORD})
    assert "Secure" in response.headers["Set-Cookie"]
    assert "SameSite=Lax" in response.headers["Set-Cookie"]


async def api_with(api: Any, engine: Engine, settings: InboxSettings) -> Any:
    from aiohttp.test_utils import TestClient

    from inbox.web import create_app

    server = TestServer(create_app(engine, settings))
    client = TestClient(server)
    await client.start_server()
    api.clients.append(client)
    return client


async def test_sessions_expire_when_idle(api, engine):
    make_user(engine, "ann")
    client, _ = await api.session("ann")
    assert (await client.get("/api/me")).status == 200
    with engine.begin() as conn:
        conn.execute(update(WebSession).values(last_seen_at=datetime.now(UTC) - timedelta(hours=9)))
    assert (await client.get("/api/me")).status == 401


async def test_logins_are_rate_limited_per_account_and_address_and_per_address(make_api, engine):
    # Issue 16 changed what is counted: failures per (account, address), not per account, so
    # the right password from another address is no longer refused (it was, before).
    settings = InboxSettings(
        login_max_failures_per_account=3,
        login_max_failures_per_ip=5,
        login_delay_seconds=600,
        trust_forwarded_for=True,
    )
    api = await make_api(settings)
    make_user(engine, "ann")
    make_user(engine, "bob")
    client = await api.client()

    async def login(name: str, password: str, ip: str) -> Any:
        return await client.post(
            "/api/login",
            json={"name": name, "password": password},
            headers={"X-Forwarded-For": f"198.51.100.77, {ip}"},
        )

    for _ in range(3):
        assert (await login("ann", "wrong password", "203.0.113.1")).status == 401
    blocked = await login("ann", PASSWORD, "203.0.113.1")
    assert blocked.status == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= 600
    # Per (account, address): Ann's right password from another address is hers to use.
    assert (await login("ann", PASSWORD, "203.0.113.2")).status == 200
    # Per address: two more failures from .1 on another account fill its quota of five.
    assert (await login("bob", "wrong password", "203.0.113.1")).status == 401
    assert (await login("bob", "wrong password", "203.0.113.1")).status == 401
    assert (await login("bob", PASSWORD, "203.0.113.1")).status == 429
    with engine.connect() as conn:
        counted = conn.execute(select(LoginAttempt.name, LoginAttempt.ip)).all()
    # Refused attempts are not even recorded: a flood costs one read each. Ann's success
    # from .2 left the failures from .1 where they were.
    assert sorted(counted) == sorted([("ann", "203.0.113.1")] * 3 + [("bob", "203.0.113.1")] * 2)
    assert (await login("bob", PASSWORD, "203.0.113.3")).status == 200
    # Once the window has passed, Ann may try again from .1 too.
    with engine.begin() as conn:
        conn.execute(update(LoginAttempt).values(at=datetime.now(UTC) - timedelta(minutes=16)))
    assert (await login("ann", PASSWORD, "203.0.113.1")).status == 200


async def test_bearer_tokens_and_revocation(api, engine):
    make_user(engine, "ann")
    make_user(engine, "root", "admin")
    client, csrf = await api.session("ann")
    made = await client.post("/api/tokens", json={"label": "laptop script"}, headers=csrf)
    assert made.status == 201
    token = (await made.json())["token"]
    assert token.startswith("parity_")
    with engine.connect() as conn:
        stored = conn.execute(
            select(AuditLog.after).where(AuditLog.action == "token.created")
        ).scalar_one()
    assert stored["label"] == "laptop script" and token not in str(stored)
    bare = await api.client()
    auth = {"Authorization": f"Bearer {token}"}
    me = await (await bare.get("/api/me", headers=auth)).json()
    assert me["user"] == {"id": me["user"]["id"], "name": "ann", "role": "agent", "via": "token"}
    assert "csrf_token" not in me
    listed = await (await bare.get("/api/tokens", headers=auth)).json()
    assert [t["label"] for t in listed["tokens"]] == ["laptop script"]
    token_id = listed["tokens"][0]["id"]
    revoked = await bare.delete(f"/api/tokens/{token_id}", headers=auth)
    assert revoked.status == 200
    assert (await bare.get("/api/me", headers=auth)).status == 401
    # Disabling a user ends their tokens and sessions at once.
    other = accounts.create_token(engine, "ann", label="second")
    await api.call("root", "PATCH", "/api/users/ann", json={"disabled": True})
    assert (await bare.get("/api/me", headers={"Authorization": f"Bearer {other}"})).status == 401
    assert (await client.get("/api/me")).status == 401


async def test_users_are_managed_by_admins(api, engine):
    make_user(engine, "root", "admin")
    make_user(engine, "maria", "manager")
    await api.call(
        "maria",
        "POST",
        "/api/users",
        403,
        json={"name": "zed", "role": "agent", "password": PASSWORD},
    )
    await api.call(
        "root",
        "POST",
        "/api/users",
        400,
        json={"name": "zed", "role": "agent", "password": "short"},
    )
    await api.call(
        "root",
        "POST",
        "/api/users",
        400,
        json={"name": "zed", "role": "overlord", "password": PASSWORD},
    )
    made = await api.call(
        "root",
        "POST",
        "/api/users",
        201,
        json={"name": "zed", "role": "agent", "password": "a new long secret"},
    )
    assert made["user"]["role"] == "agent"
    await api.call(
        "root",
        "POST",
        "/api/users",
        400,
        json={"name": "zed", "role": "agent", "password": PASSWORD},
    )
    await api.call("maria", "PATCH", "/api/users/zed", 403, json={"role": "admin"})
    changed = await api.call("root", "PATCH", "/api/users/zed", json={"role": "manager"})
    assert changed["user"]["role"] == "manager"
    await api.call("root", "PATCH", "/api/users/nobody", 404, json={"role": "agent"})
    users = await api.call("maria", "GET", "/api/users")
    assert [u["name"] for u in users["users"]] == ["maria", "root", "zed"]
    client = await api.client()
    login = await client.post("/api/login", json={"name": "zed", "password": "a new long secret"})
    assert login.status == 200 and (await login.json())["user"]["role"] == "manager"
    with engine.connect() as conn:
        encoded = conn.execute(select(User.password_hash).where(User.name == "zed")).scalar_one()
    assert encoded.startswith("$argon2id$") and "a new long secret" not in encoded


def test_cli_adds_users_and_prints_tokens(db_url, engine, tmp_path, monkeypatch, capsys):
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[database]\nurl = "{db_url}"\nurl_env = "PARITY_TEST_NO_SUCH_VAR"\n')
    monkeypatch.setenv("PARITY_PASSWORD", "a long enough password")
    base = ["--settings", str(settings), "users"]
    assert cli.main([*base, "add", "Zoe", "--role", "manager"]) == 0
    assert "added zoe (manager)" in capsys.readouterr().out
    assert cli.main([*base, "add", "zoe", "--role", "agent"]) == 1
    assert "already" in capsys.readouterr().err
    assert cli.main([*base, "token", "zoe"]) == 0
    token = capsys.readouterr().out.strip()
    found = accounts.principal_for_token(engine, token)
    assert found is not None and (found.name, found.role) == ("zoe", "manager")
    assert cli.main([*base, "token", "nobody"]) == 1
    assert cli.main([*base, "list", "--json"]) == 0
    assert '"zoe"' in capsys.readouterr().out
    monkeypatch.setenv("PARITY_PASSWORD", "short")
    assert cli.main([*base, "add", "yan", "--role", "agent"]) == 1
    result = accounts.login(engine, "zoe", "a long enough password", ip="127.0.0.1")
    assert result.principal is not None and result.principal.role == "manager"


async def test_the_daemon_serves_the_inbox_on_its_web_listener(db_url, engine):
    settings = parse({"database": {"url": db_url, "url_env": "PARITY_TEST_NO_SUCH_VAR"}})
    assert (settings.connectors.web.host, settings.connectors.web.port) == ("127.0.0.1", 8080)
    daemon = Daemon(settings)
    from aiohttp.test_utils import TestClient

    client = TestClient(TestServer(daemon.web_app()))
    await client.start_server()
    try:
        health = await client.get("/healthz")
        # Public, and honest: no `parity run` serves SMTP here, so the service is degraded.
        assert health.status == 503 and (await health.json())["status"] == "degraded"
        assert (await client.get("/api/queue")).status == 401
        assert (await client.get("/metrics")).status == 200
    finally:
        await client.close()
        daemon.engine.dispose()


async def test_pages_and_webhooks_join_the_same_route_table(engine):
    from aiohttp import web
    from aiohttp.test_utils import TestClient

    from inbox.web import create_app
    from inbox.web.routes import Route, add_routes

    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<h1>queue</h1>", content_type="text/html")

    async def hook(request: web.Request) -> web.StreamResponse:
        return web.Response(text="checked by its own signature")

    async def stray(request: web.Request) -> web.StreamResponse:
        return web.Response(text="customer data")

    app = create_app(engine)
    add_routes(
        app,
        [
            # /queue itself is the real queue page now (inbox/web/pages.py).
            Route("GET", "/a-page", page, "A page", "pages", kind="html", in_openapi=False),
            Route("POST", "/webhooks/test", hook, "A signed webhook", "webhooks", auth="signature"),
        ],
    )
    app.router.add_get("/stray", stray)  # not in the table: fails closed
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        to_login = await client.get("/a-page", allow_redirects=False)
        assert to_login.status == 303 and to_login.headers["Location"] == "/login?next=/a-page"
        assert (await client.post("/webhooks/test")).status == 200
        assert (await client.get("/stray")).status == 401
        make_user(engine, "ann")
        token = accounts.create_token(engine, "ann")
        auth = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/a-page", headers=auth)).status == 200
        document = await (await client.get("/api/openapi.json", headers=auth)).json()
        assert "/a-page" not in document["paths"] and "/queue" not in document["paths"]
        assert document["paths"]["/webhooks/test"]["post"]["security"] == []
        ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
        assert len(ids) == len(set(ids))
    finally:
        await client.close()


async def test_an_unknown_user_is_404_and_a_bugs_key_error_is_500(engine, caplog):
    """Only our own "no such thing" errors are 404s. A KeyError is a LookupError too; from a
    bug in a handler it must be a logged 500, or the bug hides behind "not found"."""
    make_user(engine, "root", "admin")

    async def buggy(request: web.Request) -> web.StreamResponse:
        settings: dict[str, str] = {}
        return web.json_response({"value": settings["missing"]})

    app = create_app(
        engine,
        InboxSettings(),
        message_id_domain=DOMAIN,
        routes=[Route("GET", "/api/buggy", buggy, "A handler with a bug", "test")],
    )
    server = TestServer(app)
    await server.start_server()
    api = Api(engine, server)
    try:
        await api.call("root", "PATCH", "/api/users/nobody", 404, json={"disabled": True})
        with caplog.at_level(logging.ERROR):
            answer = await api.call("root", "GET", "/api/buggy", 500)
        assert "missing" not in str(answer)  # no internals in the answer
        assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)
    finally:
        for client in api.clients:
            await client.close()
        await server.close()
