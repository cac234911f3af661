"""IMAP with refreshing OAuth2 against a real Dovecot whose oauth2 passdb asks the fake
provider's introspection endpoint about every token (as Google's and Microsoft's servers
check theirs): tokens that expire mid-run are refreshed without losing or doubling a
message, and a revoked grant stops the mailbox with "auth failed" and one alert.

Runs on SQLite and PostgreSQL. Expected figures: the messages this test appended and the
fake provider's own counters.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from connectors import oauth
from connectors.imap.intake import ImapConnector
from connectors.oauth import OAuthAccount, OAuthSettings, TokenSource
from inbox import tokens
from inbox.models import Intake, Outbox
from tests.channels.imap.test_imap import (
    account,
    count,
    drained,
    drive,
    expected_ids,
    imap_settings,
    stored_message_ids,
)
from tests.support.dovecot import Certificates, Dovecot, Mailbox, make_certificates, make_mail
from tests.support.oauth_provider import CLIENT_ID, REVOKED, Provider

KEY = "imap-oauth-test-key-0123456789abcdef0123"
ENV = {tokens.KEY_ENV: KEY}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("oauth-certs"))


@pytest.fixture
def provider() -> Iterator[Provider]:
    fake = Provider().start()
    yield fake
    fake.close()


@pytest.fixture
def server(certs: Certificates, provider: Provider) -> Iterator[Dovecot]:
    """A Dovecot of this test's own (restarted by some), validating at `provider`."""
    dovecot = Dovecot(certs, provider)
    dovecot.start()
    yield dovecot
    dovecot.remove()


def grant_settings(provider: Provider, **changes: object) -> OAuthSettings:
    entry = OAuthAccount(
        name="support",
        provider="generic",
        client_id=CLIENT_ID,
        token_url=f"{provider.base_url}/token",
        device_url=f"{provider.base_url}/device",
        scopes=["mail"],
    )
    return OAuthSettings(accounts=[entry], **changes)  # type: ignore[arg-type]


def authorize(engine: Engine, settings: OAuthSettings) -> None:
    """The device flow against the fake, stored as `parity mailbox authorize` stores it."""
    entry = settings.accounts[0]
    granted = oauth.device_flow(oauth.Client.of(entry, ENV), lambda _l: None, sleep=lambda _s: None)
    tokens.save_authorized(
        engine,
        tokens.Cipher(ENV),
        account=entry.name,
        provider=entry.provider,
        refresh_token=granted.refresh_token,
        access_token=granted.access_token,
        expires_at=granted.expires_at,
        scopes=granted.scopes,
    )


def connector_for(engine: Engine, server: Dovecot, settings: OAuthSettings) -> ImapConnector:
    mailbox_account = account(
        server.add_user(), "support", env="", auth="oauth2", address="help@support.example.com"
    )
    source = TokenSource(engine, settings.accounts[0], settings, environ=ENV)
    return ImapConnector(
        imap_settings(mailbox_account, batch_size=5, poll_seconds=1),
        engine,
        token_sources={"support": source},
    )


async def test_tokens_expiring_mid_run_are_refreshed_without_loss_or_doubles(
    engine: Engine, server: Dovecot, provider: Provider
) -> None:
    provider.lifetime = 3  # seconds: the first token dies while the connector runs
    settings = grant_settings(provider, refresh_margin_s=1)
    connector = connector_for(engine, server, settings)
    user = connector.settings.accounts[0].username
    provider.user = user
    authorize(engine, settings)
    first_expiry = time.time() + 3
    waves = [
        [make_mail(i, domain=f"wave{w}.example") for i in range(w * 100, w * 100 + n)]
        for w, n in ((1, 30), (2, 20), (3, 20))
    ]
    client_box = _mailbox(server, user)
    client_box.append("INBOX", waves[0])
    state = {"phase": 0}

    async def during() -> None:
        if state["phase"] == 0 and count(engine, Intake) > 0 and time.time() > first_expiry:
            # The token the connector signed in with has expired: a restart makes it sign
            # in again, mid-run, with whatever the source gives it now.
            provider.lifetime = 3600
            await asyncio.to_thread(server.restart, 0.5)
            await asyncio.to_thread(client_box.append, "INBOX", waves[1])
            state["phase"] = 1
        elif state["phase"] == 1 and count(engine, Intake) == len(waves[0]) + len(waves[1]):
            # Revoked early at the server (its clock ahead, a forced sign-out): the token we
            # hold still looks valid to us, and is refused at login. Without refreshing
            # at once the account would wait auth_retry_seconds (300 s) and this would fail.
            provider.expire_access_tokens()
            await asyncio.to_thread(server.restart, 0.5)
            await asyncio.to_thread(client_box.append, "INBOX", waves[2])
            state["phase"] = 2

    total = sum(len(w) for w in waves)
    await drive(
        connector,
        lambda: state["phase"] == 2 and count(engine, Intake) >= total and drained(connector)(),
        within=120,
        during=during,
    )
    stored = Counter(stored_message_ids(engine))
    assert stored == Counter(expected_ids([m for w in waves for m in w]))  # none lost, none twice
    assert client_box.uids("INBOX") == []
    assert provider.refreshes >= 2  # once after the expiry, once after the early refusal
    assert provider.refused == 0
    details = connector.health.details["accounts"]["support"]
    assert details["status"] == "ok" and details["auth_failures"] == 0


async def test_a_revoked_grant_is_auth_failed_and_alerts_once(
    engine: Engine, server: Dovecot, provider: Provider
) -> None:
    settings = grant_settings(provider, alert_to="ops@example.net")
    connector = connector_for(engine, server, settings)
    user = connector.settings.accounts[0].username
    provider.user = user
    authorize(engine, settings)
    box = _mailbox(server, user)
    box.append("INBOX", [make_mail(1, domain="revoked.example")])
    provider.revoke(user=user)  # consent revoked: the access token dies with the grant

    def failed() -> bool:
        return bool(connector.health.details["accounts"]["support"]["status"] == "auth failed")

    await drive(connector, failed, within=60)
    details = connector.health.details["accounts"]["support"]
    assert REVOKED in details["last_auth_error"]
    assert len(box.uids("INBOX")) == 1 and count(engine, Intake) == 0  # nothing taken, nothing lost
    with engine.connect() as conn:
        alerts = list(conn.execute(select(Outbox).where(Outbox.kind == "alert")))
    assert len(alerts) == 1 and alerts[0].recipient == "ops@example.net"
    assert re.search(r"parity mailbox authorize support", alerts[0].body)
    assert tokens.statuses(engine)["support"]["status"] == "auth failed"


def _mailbox(server: Dovecot, user: str) -> Mailbox:
    return Mailbox(server, user, server.passwords[user])
