"""Helpers for the agent inbox tests: users, cases, and an API client per agent.

Users are inserted with one Argon2 hash computed per test session (a real hash of
PASSWORD), so the suite does not pay 0.1 s of Argon2 per user; logins still verify it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, insert, select, update

from inbox import accounts
from inbox.models import Case, Contact, Identity, Message, User
from tests.support.helpers import ingest_and_normalize

PASSWORD = "correct horse battery staple"
DOMAIN = "parity.test"


@cache
def password_hash() -> str:
    return accounts.hash_password(PASSWORD)


def make_user(engine: Engine, name: str, role: str = "agent") -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(User)
                .values(
                    name=name,
                    role=role,
                    password_hash=password_hash(),
                    disabled=False,
                    created_at=datetime.now(UTC),
                )
                .returning(User.id)
            ).scalar_one()
        )


def mail(
    sender: str,
    subject: str,
    body: str,
    *,
    msgid: str,
    name: str = "",
    extra: str = "",
    date: str = "Fri, 20 Nov 2026 10:00:00 +0000",
) -> bytes:
    who = f"{name} <{sender}>" if name else sender
    return (
        f"From: {who}\r\nTo: help@support.example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{msgid}>\r\nDate: {date}\r\n{extra}\r\n{body}\r\n"
    ).encode()


def email_case(
    engine: Engine,
    sender: str,
    subject: str,
    body: str = "Please help.",
    *,
    msgid: str | None = None,
    at: datetime | None = None,
    extra: str = "",
) -> str:
    """Feed one mail through the real intake and normalizer; the reference of its case."""
    outcome = ingest_and_normalize(
        engine,
        mail(
            sender,
            subject,
            body,
            msgid=msgid
            or hashlib.sha256(f"{sender}{subject}{body}".encode()).hexdigest()[:16]
            + "@mail.example",
            extra=extra,
        ),
        received_at=at,
    )
    with engine.connect() as conn:
        return str(
            conn.execute(select(Case.reference).where(Case.id == outcome.case_id)).scalar_one()
        )


def case_row(engine: Engine, reference: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Case).where(Case.reference == reference)).one()


def link_identity(engine: Engine, reference: str, kind: str, handle: str) -> int:
    """Give the case's contact another identity, as an agent linking two handles would."""
    case = case_row(engine, reference)
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(Identity)
                .values(
                    kind=kind,
                    handle=handle,
                    display_name="",
                    contact_id=case.contact_id,
                    verified=True,
                    facts={},
                    created_at=datetime.now(UTC),
                )
                .returning(Identity.id)
            ).scalar_one()
        )


def add_inbound(
    engine: Engine,
    reference: str,
    identity_id: int,
    channel: str,
    text: str,
    at: datetime,
    *,
    visibility: str = "private",
) -> int:
    """An inbound message on a channel with no parser in this build yet (sms, twitter...)."""
    case = case_row(engine, reference)
    with engine.begin() as conn:
        handle = conn.execute(
            select(Identity.handle).where(Identity.id == identity_id)
        ).scalar_one()
        return int(
            conn.execute(
                insert(Message)
                .values(
                    case_id=case.id,
                    identity_id=identity_id,
                    channel=channel,
                    direction="inbound",
                    visibility=visibility,
                    dedup_key=f"{channel}:{handle}:{at.isoformat()}",
                    external_id=f"{channel}-{at.timestamp():.0f}",
                    from_handle=handle,
                    from_name="",
                    subject="",
                    text=text,
                    received_at=at,
                    thread={},
                    meta={},
                )
                .returning(Message.id)
            ).scalar_one()
        )


def bulk_cases(engine: Engine, count: int, *, start: datetime | None = None) -> list[int]:
    """`count` open cases with distinct due times, inserted directly (for queue mechanics)."""
    base = start or datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        contact = conn.execute(
            insert(Contact).values(name="bulk", created_at=base).returning(Contact.id)
        ).scalar_one()
        ids = []
        for i in range(count):
            case_id = conn.execute(
                insert(Case)
                .values(
                    token="abcdefghijkl",
                    contact_id=contact,
                    status="new",
                    channel="email",
                    subject=f"bulk {i}",
                    due_at=base + timedelta(minutes=count - i),
                    first_inbound_at=base,
                    last_activity_at=base,
                    created_at=base,
                    followups=0,
                )
                .returning(Case.id)
            ).scalar_one()
            conn.execute(
                update(Case).where(Case.id == case_id).values(reference=f"C-{case_id:06d}")
            )
            ids.append(case_id)
        return ids


@dataclass
class Api:
    engine: Engine
    server: TestServer
    clients: list[TestClient[Any, Any]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    async def client(self) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(self.server)
        await client.start_server()
        self.clients.append(client)
        return client

    def token(self, name: str) -> dict[str, str]:
        if name not in self.tokens:
            self.tokens[name] = accounts.create_token(self.engine, name, label="test")
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    async def session(self, name: str) -> tuple[TestClient[Any, Any], dict[str, str]]:
        """A client logged in as `name` by password, and the CSRF header it must send."""
        client = await self.client()
        response = await client.post("/api/login", json={"name": name, "password": PASSWORD})
        assert response.status == 200, await response.text()
        data = await response.json()
        return client, {"X-CSRF-Token": data["csrf_token"]}

    async def call(
        self, name: str, method: str, path: str, expect: int = 200, **kwargs: Any
    ) -> Any:
        """Call the API as `name` with a bearer token; check the status; the JSON body."""
        client = self.clients[0] if self.clients else await self.client()
        headers = {**self.token(name), **kwargs.pop("headers", {})}
        response = await client.request(method, path, headers=headers, **kwargs)
        text = await response.text()
        assert response.status == expect, f"{method} {path}: {response.status} {text}"
        return (
            await response.json() if text and response.content_type == "application/json" else text
        )
