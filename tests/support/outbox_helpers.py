"""Shared pieces of the outbox tests: a drainer pointed at a test relay, and store look-ups."""

from __future__ import annotations

import subprocess
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from connectors.config import EmailRelaySettings, OutboxSettings
from connectors.mail.relay import SmtpRelaySender
from connectors.outbox import OutboxDrainer
from inbox.models import AuditLog, Case, Outbox, OutboxAttempt
from tests.support.sink import Sink


def relay_for(sink: Sink, **kw: Any) -> EmailRelaySettings:
    values: dict[str, Any] = {
        "host": sink.host,
        "port": sink.port,
        "security": "none",
        "timeout_s": 10.0,
        "from_address": "Example Support <help@support.example.com>",
    }
    values.update(kw)
    return EmailRelaySettings(**values)


def drainer_for(
    engine: Engine,
    sink: Sink,
    *,
    relay: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    **kw: Any,
) -> OutboxDrainer:
    values: dict[str, Any] = {"backoff_base_s": 0.0, "email": relay_for(sink, **(relay or {}))}
    values.update(kw)
    settings = OutboxSettings(**values)
    return OutboxDrainer(
        engine, SmtpRelaySender(settings.email, environ), settings, worker="test-drainer"
    )


def mail(
    subject: str = "Locked out of my account",
    *,
    sender: str = "Ann Example <ann@example.org>",
    message_id: str | None = None,
    extra: str = "",
    body: str = "I cannot log in since my phone was stolen.",
) -> bytes:
    message_id = message_id or make_msgid(domain="example.org")
    return (
        f"From: {sender}\r\n"
        "To: help@support.example.com\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        f"{extra}"
        "\r\n"
        f"{body}\r\n"
    ).encode()


def case_row(engine: Engine, case_id: int | None) -> Any:
    assert case_id is not None
    with engine.connect() as conn:
        return conn.execute(select(Case).where(Case.id == case_id)).one()


def outbox_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Outbox).order_by(Outbox.id)))


def attempts_of(engine: Engine, outbox_id: int) -> list[tuple[str, Any]]:
    with engine.connect() as conn:
        return [
            (a.outcome, a.error)
            for a in conn.execute(
                select(OutboxAttempt)
                .where(OutboxAttempt.outbox_id == outbox_id)
                .order_by(OutboxAttempt.id)
            )
        ]


def audit_actions(engine: Engine, case_id: int | None) -> list[tuple[str, dict[str, Any] | None]]:
    assert case_id is not None
    with engine.connect() as conn:
        return [
            (a.action, a.after)
            for a in conn.execute(
                select(AuditLog).where(AuditLog.case_id == case_id).order_by(AuditLog.id)
            )
        ]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made with the openssl command, for a STARTTLS relay."""
    cert, key = directory / "relay.pem", directory / "relay.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
