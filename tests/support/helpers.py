"""One shared way for tests to feed input through the real intake and normalizer."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from connectors.registry import ConnectorsSettings, ack_route_table, parser_table
from inbox import queries
from inbox.config import StoreSettings
from normalizer.intake import RawInput, Stored, store
from normalizer.worker import Normalizer, Outcome
from tests.support.dns_server import shared_dns, test_mail_auth

TESTS = Path(__file__).resolve().parents[1]
# Fixtures of no one channel (email, which the normalizer's mail pipeline parses for two
# connectors; DNS zones; delivery reports). A channel's own are tests/channels/<name>/fixtures.
FIXTURES = TESTS / "fixtures"


def fixture_bytes(*parts: str) -> bytes:
    """A fixture file: ("twitter", "stored", name) is a channel's own when that channel has
    a directory of fixtures under tests/channels/, else it is under tests/fixtures/."""
    own = TESTS / "channels" / parts[0] / "fixtures"
    base = own.joinpath(*parts[1:]) if own.is_dir() else FIXTURES.joinpath(*parts)
    return base.read_bytes()


def ingest(
    engine: Engine,
    raw: bytes,
    *,
    channel: str = "email",
    connector: str = "test",
    envelope: dict[str, Any] | None = None,
    source_key: str | None = None,
    received_at: datetime | None = None,
    authenticated: bool = True,
) -> Stored:
    """Store `raw` as the connector would.

    Email comes, unless the test says otherwise, as if by SMTP from 127.0.0.1 with MAIL FROM
    at its From address: the fixture DNS (tests/fixtures/dns) lets 127.0.0.1 send for the
    tests' domains, so the sender is authenticated by an aligned SPF pass, as most real
    customers' mail is. Tests about unauthenticated mail pass `authenticated=False` or an
    envelope of their own.
    """
    if channel == "email" and authenticated:
        envelope = {**smtp_envelope(raw), **(envelope or {})}
    kwargs: dict[str, Any] = {}
    if received_at is not None:
        kwargs["received_at"] = received_at
    item = RawInput(
        connector=connector,
        channel=channel,
        source_key=source_key or f"{connector}:" + hashlib.sha256(raw).hexdigest(),
        payload=raw,
        envelope=envelope or {},
        **kwargs,
    )
    return store(engine, [item])[0]


def smtp_envelope(raw: bytes) -> dict[str, Any]:
    """The envelope SMTP intake would store for `raw` sent from 127.0.0.1 by its From."""
    found = getaddresses(BytesHeaderParser(policy=compat32).parsebytes(raw).get_all("from", []))
    mail_from = next((address for _, address in found if "@" in address), "")
    return {"peer": "127.0.0.1:40000", "helo": "client.example", "mail_from": mail_from}


def normalize(
    engine: Engine,
    settings: StoreSettings | None = None,
    *,
    connectors: ConnectorsSettings | None = None,
    acks: Any = None,
) -> list[Outcome]:
    """Normalize every pending intake row as the daemon's worker does: with the registry's
    parsers and ack routes (from `connectors`, the defaults when None), so a new case of
    any channel is acknowledged in the transaction that opens it."""
    return normalizer(engine, settings, connectors=connectors, acks=acks).drain()


def normalizer(
    engine: Engine,
    settings: StoreSettings | None = None,
    *,
    connectors: ConnectorsSettings | None = None,
    acks: Any = None,
) -> Normalizer:
    """The normalizer `normalize` drains with (a dead-letter replay takes one too)."""
    return Normalizer(
        engine,
        settings or StoreSettings(),
        mail_auth=test_mail_auth(),
        acks=acks,
        parsers=parser_table(),
        ack_routes=ack_route_table(connectors or ConnectorsSettings()),
    )


def ingest_and_normalize(engine: Engine, raw: bytes, **kwargs: Any) -> Outcome:
    stored = ingest(engine, raw, **kwargs)
    outcomes = [o for o in normalize(engine) if o.intake_id == stored.intake_id]
    assert outcomes, f"intake {stored.intake_id} was not normalized"
    return outcomes[0]


def case_of(engine: Engine, outcome: Outcome) -> dict[str, Any]:
    assert outcome.message_id is not None, outcome
    reference = queries.case_of_message(engine, outcome.message_id)
    assert reference is not None
    detail = queries.case_detail(engine, reference)
    assert detail is not None
    return detail


def child_settings(db_url: str, *, lease_seconds: int | None = None) -> str:
    """The head of a settings.toml for a `parity run --only <connector>` child process: the
    test's store, and the SMTP server and web inbox off. The test adds its connector's
    section. `lease_seconds` shortens the normalizer's lease, so input a SIGKILLed instance
    had leased comes back within a test's wait (the default is 120 s)."""
    normalizer = f"\n[normalizer]\nlease_seconds = {lease_seconds}\n" if lease_seconds else ""
    return f"""
[database]
url = "{db_url}"
url_env = "PARITY_TEST_UNUSED_DATABASE_URL"
busy_timeout_ms = 60000
{normalizer}
[mail_auth]
nameservers = ["127.0.0.1:{shared_dns().port}"]
timeout_seconds = 1.0

[connectors.smtp]
enabled = false

[connectors.web]
enabled = false
"""


def child_env() -> dict[str, str]:
    """The environment for a `parity` child: none of the caller's PARITY_* settings, but the
    session's audit key (tests run keyed, like production: conftest.py)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PARITY_") or k == "PARITY_AUDIT_KEY"
    }


def doctor(tmp_path: Path, db_url: str, section: str) -> int:
    """`parity doctor`, in this process, on a settings file of the test's store and `section`
    (TOML: the connector under test, pointed at its fake); its exit code."""
    from parity.cli import main

    path = tmp_path / "settings.toml"
    path.write_text(f'[database]\nurl = "{db_url}"\nurl_env = "PARITY_TEST_UNSET_URL"\n' + section)
    return main(["--settings", str(path), "doctor"])
