"""Sending with an OAuth2 grant: SMTP AUTH XOAUTH2 against our SMTP sink (which asks the fake
provider whether the bearer token is live), and the providers' APIs (Gmail API
users.messages.send, Microsoft Graph sendMail) against a fake HTTP server that does the same.

Store tests run on SQLite and PostgreSQL. The expected message is the one this test queued.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import Engine

from connectors import oauth
from connectors.config import EmailRelaySettings, OutboxSettings
from connectors.mail.relay import ApiStatus, SmtpRelaySender, api_request, api_result
from connectors.oauth import OAuthAccount, OAuthSettings, TokenSource
from connectors.outbox import OutboxDrainer
from inbox import tokens
from inbox.db import write
from inbox.outbox import enqueue
from tests.support.fake_server import served_in_thread
from tests.support.oauth_provider import CLIENT_ID, Provider
from tests.support.outbox_helpers import outbox_rows
from tests.support.sink import Sink

KEY = "send-oauth-test-key-0123456789abcdef01234"
ENV = {tokens.KEY_ENV: KEY}
USER = "help@support.example.com"


@pytest.fixture
def provider() -> Iterator[Provider]:
    fake = Provider(user=USER).start()
    yield fake
    fake.close()


def grant(engine: Engine, provider: Provider) -> TokenSource:
    """An authorized grant (device flow against the fake) and its token source."""
    entry = OAuthAccount(
        name="support",
        provider="generic",
        client_id=CLIENT_ID,
        token_url=f"{provider.base_url}/token",
        device_url=f"{provider.base_url}/device",
        scopes=["mail"],
    )
    settings = OAuthSettings(accounts=[entry])
    granted = oauth.device_flow(oauth.Client.of(entry, ENV), lambda _l: None, sleep=lambda _s: None)
    tokens.save_authorized(
        engine,
        tokens.Cipher(ENV),
        account="support",
        provider="generic",
        refresh_token=granted.refresh_token,
        access_token=granted.access_token,
        expires_at=granted.expires_at,
        scopes=granted.scopes,
    )
    return TokenSource(engine, entry, settings, environ=ENV)


def queue(engine: Engine, subject: str) -> int:
    with write(engine) as conn:
        return enqueue(
            conn,
            case_id=None,
            kind="alert",
            channel="email",
            recipient="ops@example.net",
            subject=subject,
            body=f"Body of {subject}",
        )


def drainer(engine: Engine, relay: EmailRelaySettings, source: TokenSource) -> OutboxDrainer:
    settings = OutboxSettings(backoff_base_s=0.0, email=relay)
    return OutboxDrainer(
        engine, SmtpRelaySender(relay, token_source=source), settings, worker="test-drainer"
    )


# --- SMTP AUTH XOAUTH2 ----------------------------------------------------------------------


@pytest.fixture
def bearer_sink(provider: Provider) -> Iterator[Sink]:
    sink = Sink(bearer=lambda user, token: provider.active(token) == user).start()
    yield sink
    sink.stop()


def smtp_relay(sink: Sink) -> EmailRelaySettings:
    return EmailRelaySettings(
        host=sink.host,
        port=sink.port,
        security="none",
        timeout_s=10.0,
        from_address=f"Example Support <{USER}>",
        oauth_account="support",
    )


def test_smtp_xoauth2_sends_and_refreshes_a_refused_token(
    engine: Engine, provider: Provider, bearer_sink: Sink
) -> None:
    source = grant(engine, provider)
    drain = drainer(engine, smtp_relay(bearer_sink), source)
    queue(engine, "First")
    assert drain.drain_once().sent == 1
    assert bearer_sink.logins == [USER] and provider.refreshes == 0
    # The server stops accepting the token before its expiry: one attempt is refused (535),
    # the token is dropped, and the retry signs in with a refreshed one.
    provider.expire_access_tokens()
    queue(engine, "Second")
    report = drain.drain_once()  # the retry (backoff 0 here) comes in the same drain
    assert (report.retried, report.sent) == (1, 1)
    assert provider.refreshes == 1 and bearer_sink.logins == [USER, USER]
    subjects = [d.parsed()["Subject"] for d in bearer_sink.delivered]
    assert subjects == ["First", "Second"]  # each once
    rows = outbox_rows(engine)
    assert [r.state for r in rows] == ["sent", "sent"]
    assert rows[1].attempts == 2 and rows[0].attempts == 1


def test_a_dead_grant_holds_mail_without_counting_attempts(
    engine: Engine, provider: Provider, bearer_sink: Sink
) -> None:
    source = grant(engine, provider)
    provider.revoke(user=USER)
    provider.expire_access_tokens()
    source.invalidate()
    with write(engine) as conn:
        conn.exec_driver_sql("UPDATE oauth_tokens SET access_expires_at = NULL")
    queue(engine, "Held")
    drainer(engine, smtp_relay(bearer_sink), source).drain_once()
    (row,) = outbox_rows(engine)
    assert row.state == "queued" and row.attempts == 0  # paused, not failed
    assert "mailbox sign-in failed" in (row.last_error or "")
    assert bearer_sink.received == []


# --- the providers' APIs --------------------------------------------------------------------


class FakeMailApi:
    """Gmail's users.messages.send and Graph's sendMail, checking the bearer at the provider."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.sent: list[bytes] = []
        self.refused = 0
        self.base_url = ""

    def _bearer_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        ok = header.startswith("Bearer ") and self.provider.active(header[7:]) == USER
        self.refused += not ok
        return ok

    async def gmail(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request):
            return web.json_response(
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials.",
                    }
                },
                status=401,
            )
        body: Any = await request.json()
        self.sent.append(base64.urlsafe_b64decode(body["raw"]))
        return web.json_response({"id": f"18c{len(self.sent):05d}", "labelIds": ["SENT"]})

    async def graph(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request):
            return web.json_response(
                {"error": {"code": "InvalidAuthenticationToken", "message": "Token expired"}},
                status=401,
            )
        if request.content_type != "text/plain":
            return web.json_response({"error": {"code": "ErrorMimeContentInvalid"}}, status=400)
        self.sent.append(base64.b64decode(await request.read()))
        return web.Response(status=202)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/gmail/v1/users/me/messages/send", self.gmail)
        app.router.add_post("/v1.0/me/sendMail", self.graph)
        return app


@pytest.mark.parametrize("transport", ["gmail_api", "graph"])
def test_send_through_the_providers_api(engine: Engine, provider: Provider, transport: str) -> None:
    api = FakeMailApi(provider)
    source = grant(engine, provider)
    with served_in_thread(api.app) as base_url:
        relay = EmailRelaySettings(
            transport=transport,
            api_url=base_url,
            oauth_account="support",
            from_address=f"Example Support <{USER}>",
            timeout_s=10.0,
        )
        drain = drainer(engine, relay, source)
        queue(engine, "Through the API")
        assert drain.drain_once().sent == 1
        provider.expire_access_tokens()  # refused once (401), then refreshed
        queue(engine, "After a refresh")
        report = drain.drain_once()
        assert (report.retried, report.sent) == (1, 1)
    assert api.refused == 1 and provider.refreshes == 1
    parsed = [BytesParser(policy=policy.default).parsebytes(raw) for raw in api.sent]
    assert [str(m["Subject"]) for m in parsed] == ["Through the API", "After a refresh"]
    assert all(str(m["To"]) == "ops@example.net" and m["Message-ID"] for m in parsed)
    rows = outbox_rows(engine)
    assert [r.state for r in rows] == ["sent", "sent"]
    if transport == "gmail_api":  # Gmail names the message; Graph answers 202 and nothing
        assert [r.provider_id for r in rows] == ["18c00001", "18c00002"]


@pytest.mark.parametrize(
    ("transport", "status", "body", "expected"),
    [
        ("gmail_api", 200, b'{"id": "18c1", "threadId": "18c1"}', "18c1"),
        ("gmail_api", 200, b"not json", None),
        ("graph", 202, b"", None),
        ("graph", 400, b'{"error": {"code": "ErrorInvalidRecipients", "message": "bad to"}}', 400),
        ("gmail_api", 429, b'{"error": {"message": "Rate Limit Exceeded"}}', 429),
        ("gmail_api", 500, b"<html>", 500),
    ],
)
def test_api_answers(transport: str, status: int, body: bytes, expected: Any) -> None:
    if isinstance(expected, int):
        with pytest.raises(ApiStatus) as raised:
            api_result(transport, status, body)
        assert raised.value.status == expected
    else:
        assert api_result(transport, status, body) == expected


def test_api_requests_carry_the_message_as_each_provider_wants() -> None:
    data = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhi\r\n"
    gmail = EmailRelaySettings(transport="gmail_api", oauth_account="s")
    url, body, kind = api_request(gmail, data)
    assert url == "https://gmail.googleapis.com/gmail/v1/users/me/messages/send"
    assert kind == "application/json" and body == (
        b'{"raw": "' + base64.urlsafe_b64encode(data) + b'"}'
    )
    graph = EmailRelaySettings(transport="graph", oauth_account="s")
    url, body, kind = api_request(graph, data)
    assert url == "https://graph.microsoft.com/v1.0/me/sendMail"
    assert kind == "text/plain" and base64.b64decode(body) == data
