"""A real SMTP server (aiosmtpd) that plays the relay in tests: it answers from a script.

It runs on its own event loop in a thread, on an ephemeral port. Each DATA takes the next
scripted reply ("451 ...", "550 ...", "250 ..."; 250 when the script is used up); a "stall"
reply keeps the connection waiting forever after the whole message was received, which is
how a test catches a sender mid-send. STARTTLS and AUTH can be required.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Delivery:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    def parsed(self) -> EmailMessage:
        message = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class Sink:
    replies: list[str] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    credentials: tuple[str, str] | None = None
    host: str = "127.0.0.1"
    port: int = 0
    delivered: list[Delivery] = field(default_factory=list)
    # Every DATA the sink received, whatever it answered.
    received: list[Delivery] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    # AUTH XOAUTH2: (user, bearer token) -> accepted; the fake OAuth2 provider's check.
    bearer: Callable[[str, str], bool] | None = None
    stalled: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None

    # --- aiosmtpd handler ------------------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        delivery = Delivery(str(envelope.mail_from), list(envelope.rcpt_tos), bytes(content))
        self.received.append(delivery)
        reply = self.replies.pop(0) if self.replies else "250 2.0.0 Ok: queued"
        if reply == "stall":
            self.stalled.set()
            await asyncio.sleep(3600)
        if reply.startswith("250"):
            self.delivered.append(delivery)
        return reply

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and self.credentials is not None:
            login, password = data.login.decode(), data.password.decode()
            if (login, password) == self.credentials:
                self.logins.append(login)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 as Gmail and Exchange Online answer it: on a refused token a 334
        with a JSON error, the client's empty line, then 535."""
        if len(args) > 1:
            blob: Any = args[1].encode()
        else:
            blob = await server.challenge_auth("", encode_to_b64=False)
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        try:
            fields = dict(
                part.split("=", 1) for part in base64.b64decode(blob).decode().split("\x01") if part
            )
        except ValueError:
            return AuthResult(success=False, handled=False)
        user, auth = fields.get("user", ""), fields.get("auth", "")
        token = auth.removeprefix("Bearer ")
        if self.bearer is not None and auth.startswith("Bearer ") and self.bearer(user, token):
            self.logins.append(user)
            return AuthResult(success=True)
        error = json.dumps({"status": "401", "schemes": "Bearer", "scope": "mail"})
        await server.challenge_auth(error)
        return AuthResult(success=False, handled=False)

    def _factory(self) -> SMTP:
        kwargs: dict[str, Any] = {"hostname": "sink.test", "decode_data": False}
        if self.tls is not None:
            kwargs.update(tls_context=self.tls, require_starttls=True)
        if self.credentials is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        elif self.bearer is not None:
            kwargs.update(auth_required=True, auth_require_tls=False)
        else:
            kwargs.update(auth_require_tls=False)
        return SMTP(self, **kwargs)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sink:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(loop.create_server(self._factory, self.host, 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=serve, name="smtp-sink", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the SMTP sink did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            loop, self._loop = self._loop, None

            def cancel_all() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.stop()

            loop.call_soon_threadsafe(cancel_all)
        if self._thread is not None:
            self._thread.join(10)


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink().start()
    yield server
    server.stop()
