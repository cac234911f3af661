"""OAuth2 grants of mailboxes: the flows, encryption at rest, refresh before expiry, one
refresher among instances, and a refused refresh turning into "auth failed" and one alert.

Against a local fake provider (tests/support/oauth_provider.py) with real HTTP; store tests
run on SQLite and PostgreSQL. Expected figures are the fake's own counters and values worked
out here (RFC 7636's S256 by hand, the XOAUTH2 string as Google documents it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, select, text

from connectors import oauth
from connectors.oauth import (
    OAuthAccount,
    OAuthError,
    OAuthSettings,
    TokenSource,
    Unreachable,
    expiry,
    parse_answer,
    redirect_result,
)
from inbox import tokens
from inbox.models import OAuthToken, Outbox
from inbox.secrets import Secret
from parity import doctor, mailboxes
from parity.settings import Settings, SettingsError, parse
from parity.status import health
from tests.support.oauth_provider import CLIENT_ID, REVOKED, Provider
from tests.support.outbox_helpers import drainer_for
from tests.support.sink import Sink

KEY = "k" * 16 + "-test-secret-key-0123456789abcdef"
ENV = {tokens.KEY_ENV: KEY}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def provider() -> Iterator[Provider]:
    fake = Provider().start()
    yield fake
    fake.close()


def account_for(provider: Provider, name: str = "support", **changes: Any) -> OAuthAccount:
    values: dict[str, Any] = {
        "name": name,
        "provider": "generic",
        "client_id": CLIENT_ID,
        "token_url": f"{provider.base_url}/token",
        "device_url": f"{provider.base_url}/device",
        "auth_url": f"{provider.base_url}/authorize",
        "scopes": ["mail"],
    }
    values.update(changes)
    return OAuthAccount(**values)


def oauth_settings(*accounts: OAuthAccount, **changes: Any) -> OAuthSettings:
    return OAuthSettings(accounts=list(accounts), **changes)


def authorize_by_device(engine: Engine, account: OAuthAccount) -> list[str]:
    """Run the real device flow against the fake and store the grant, as the CLI does."""
    shown: list[str] = []
    client = oauth.Client.of(account, ENV)
    granted = oauth.device_flow(client, shown.append, sleep=lambda _s: None)
    tokens.save_authorized(
        engine,
        tokens.Cipher(ENV),
        account=account.name,
        provider=account.provider,
        refresh_token=granted.refresh_token,
        access_token=granted.access_token,
        expires_at=granted.expires_at,
        scopes=granted.scopes,
    )
    return shown


def stored_row(engine: Engine, name: str = "support") -> Any:
    with engine.connect() as conn:
        return conn.execute(select(OAuthToken).where(OAuthToken.account == name)).one()


# --- pure parts, by tables -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"access_token": "at", "expires_in": 3599}', {"access_token": "at"}),
        (400, b'{"error": "invalid_grant", "error_description": "Bad Request"}', "invalid_grant"),
        # Microsoft's shape: AADSTS codes in the description.
        (
            400,
            b'{"error": "invalid_grant", "error_description": "AADSTS50173: The provided grant '
            b'has expired due to it being revoked", "error_codes": [50173]}',
            "invalid_grant",
        ),
        (400, b'{"error": "authorization_pending"}', "authorization_pending"),
        (503, b"<html>Service Unavailable</html>", Unreachable),
        (500, b'{"unexpected": true}', Unreachable),
        (429, b"{}", Unreachable),
        (403, b"{}", "http_error"),
        (200, b'["not", "an", "object"]', Unreachable),
        (200, b"\xff\xfe", Unreachable),
    ],
)
def test_token_endpoint_answers(status: int, body: bytes, expected: Any) -> None:
    if isinstance(expected, dict):
        assert parse_answer(status, body).items() >= expected.items()
    elif isinstance(expected, str):
        with pytest.raises(OAuthError) as raised:
            parse_answer(status, body)
        assert raised.value.code == expected
    else:
        with pytest.raises(expected):
            parse_answer(status, body)


@pytest.mark.parametrize(
    ("answer", "seconds"),
    [
        ({"expires_in": 3599}, 3599),
        ({"expires_in": "3600"}, 3600),
        ({}, 3600),  # not said: an hour, what both providers give
        ({"expires_in": "soon"}, 3600),
        ({"expires_in": -5}, 0),
        ({"expires_in": 10**9}, 86400),  # never trusted beyond a day
    ],
)
def test_expiry(answer: dict[str, Any], seconds: int) -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert expiry(answer, now) == now + timedelta(seconds=seconds)


STATE = "s" * 43


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        (f"code=abc&state={STATE}", "abc", "authorized"),
        (f"code=abc&state={STATE}x", None, "state does not match: ignored"),
        ("code=abc", None, "state does not match: ignored"),
        (
            f"error=access_denied&error_description=The+user+denied&state={STATE}",
            None,
            "access_denied: The user denied",
        ),
        (f"state={STATE}", None, "no code in the redirect"),
    ],
)
def test_redirect_result(query: str, code: str | None, message: str) -> None:
    assert redirect_result(query, STATE) == (code, message)


def test_pkce_challenge_is_s256_of_the_verifier() -> None:
    verifier, challenge = oauth.pkce_pair()
    assert 43 <= len(verifier) <= 128 and re.fullmatch(r"[A-Za-z0-9_-]+", verifier)
    by_hand = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert challenge == by_hand.decode().rstrip("=")


def test_xoauth2_string_is_googles_format() -> None:
    # https://developers.google.com/gmail/imap/xoauth2-protocol, written out by hand.
    expected = (
        "user=someuser@example.com\x01"
        "auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
    )
    token = Secret("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    assert oauth.xoauth2("someuser@example.com", token) == expected


def test_presets_fill_in_the_tenant_and_scopes() -> None:
    ms = OAuthAccount(name="m", provider="microsoft", client_id="c", tenant="contoso.example")
    auth, token, device = ms.endpoints
    assert auth == "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/authorize"
    assert token == "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
    assert device.endswith("/contoso.example/oauth2/v2.0/devicecode")
    assert "offline_access" in ms.scope_list and ms.default_flow == "device"
    google = OAuthAccount(name="g", provider="google", client_id="c")
    assert google.scope_list == ["https://mail.google.com/"] and google.default_flow == "code"
    assert ("access_type", "offline") in google.auth_params


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"provider": "generic"}, "token_url"),
        ({"provider": "generic", "token_url": "https://id.example/token"}, "scopes"),
        ({"provider": "google", "token_url": "http://id.example/token"}, "https://"),
        ({"provider": "yahoo"}, "provider is one of"),
        ({"provider": "google", "flow": "implicit"}, "flow"),
    ],
)
def test_account_settings_refused(changes: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        OAuthAccount(name="a", client_id="c", **changes)


def test_settings_refuse_a_mailbox_naming_an_unknown_grant() -> None:
    imap = {
        "accounts": [{"name": "support", "host": "imap.example", "username": "u", "auth": "oauth2"}]
    }
    with pytest.raises(
        SettingsError, match=re.escape("no [[oauth.accounts]] entry named 'support'")
    ):
        parse({"connectors": {"imap": imap}})
    ok = parse(
        {
            "connectors": {"imap": imap},
            "oauth": {"accounts": [{"name": "support", "provider": "google", "client_id": "c"}]},
        }
    )
    assert ok.connectors.imap.accounts[0].grant == "support"
    with pytest.raises(SettingsError, match="needs oauth_account"):
        parse({"outbox": {"email": {"transport": "graph"}}})


# --- encryption at rest ----------------------------------------------------------------------


def test_grants_are_stored_encrypted(engine: Engine, provider: Provider) -> None:
    account = account_for(provider)
    shown = authorize_by_device(engine, account)
    assert any("WDJB-MJHT" in line and f"{provider.base_url}/activate" in line for line in shown)
    (grant,) = provider.grants.values()
    row = stored_row(engine)
    # Neither token appears in any column; the dump of the whole table does not hold them.
    with engine.connect() as conn:
        dumped = repr(list(conn.execute(text("SELECT * FROM oauth_tokens"))))
    assert grant.refresh_token not in dumped and provider.issued[-1] not in dumped
    assert row.status == "ok"
    # Another key reads nothing; the old key in PARITY_SECRET_KEY_OLD still does.
    other = {tokens.KEY_ENV: "another-key-of-enough-length-0123456789"}
    with pytest.raises(tokens.Undecryptable):
        tokens.load(engine, tokens.Cipher(other), "support")
    rotated = {**other, tokens.OLD_KEYS_ENV: KEY}
    loaded = tokens.load(engine, tokens.Cipher(rotated), "support")
    assert loaded is not None and loaded.refresh_token.reveal() == grant.refresh_token


@pytest.mark.parametrize(
    ("environ", "problem"),
    [({}, "is not set"), ({tokens.KEY_ENV: "short"}, "shorter than 32"), (ENV, None)],
)
def test_key_problem(environ: dict[str, str], problem: str | None) -> None:
    found = tokens.key_problem(environ)
    assert (found is None) if problem is None else (found is not None and problem in found)


# --- refresh before expiry, across restarts and instances ------------------------------------


def test_refreshes_before_expiry_and_survives_a_restart(engine: Engine, provider: Provider) -> None:
    provider.lifetime = 600
    account = account_for(provider)
    authorize_by_device(engine, account)
    first = provider.issued[-1]
    offset = timedelta(0)

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    settings = oauth_settings(account, refresh_margin_s=300)
    source = TokenSource(engine, account, settings, environ=ENV, clock=clock)
    assert source.token().reveal() == first and provider.refreshes == 0
    offset = timedelta(seconds=290)  # 310 s left: outside the margin, still used
    assert source.token().reveal() == first and provider.refreshes == 0
    offset = timedelta(seconds=310)  # 290 s left: inside the margin, refreshed
    second = source.token().reveal()
    assert provider.refreshes == 1 and second == provider.issued[-1] != first
    assert provider.active(second) == provider.user
    # A restart: a new process reads the stored token and does not refresh again.
    restarted = TokenSource(engine, account, settings, environ=ENV, clock=clock)
    assert restarted.token().reveal() == second and provider.refreshes == 1
    assert stored_row(engine).refreshes == 1


def test_a_refused_token_is_never_handed_out_again(engine: Engine, provider: Provider) -> None:
    account = account_for(provider)
    authorize_by_device(engine, account)
    source = TokenSource(engine, account, oauth_settings(account), environ=ENV)
    first = source.token()
    # The server refused it before its expiry (revoked early, clocks apart): a new one.
    second = source.token(refused=first)
    assert second != first and provider.refreshes == 1


def test_an_invalidated_token_is_not_read_back_from_the_store(
    engine: Engine, provider: Provider
) -> None:
    account = account_for(provider)
    authorize_by_device(engine, account)
    source = TokenSource(engine, account, oauth_settings(account), environ=ENV)
    first = source.token()
    source.invalidate(first)  # a sender's server refused it (SMTP 535, HTTP 401)
    second = source.token()
    assert second != first and provider.refreshes == 1
    assert source.token() == second and provider.refreshes == 1


@pytest.mark.parametrize("rotate", [False, True])
def test_one_refresher_among_instances(engine: Engine, provider: Provider, rotate: bool) -> None:
    provider.rotate = rotate  # Microsoft rotates: a second refresh with the old token fails
    account = account_for(provider)
    authorize_by_device(engine, account)
    provider.expire_access_tokens()
    later = timedelta(seconds=4000)  # past the stored token's expiry for every instance
    settings = oauth_settings(account)
    sources = [
        TokenSource(
            engine,
            account,
            settings,
            environ=ENV,
            owner=f"instance-{i}",
            clock=lambda: datetime.now(UTC) + later,
        )
        for i in range(6)
    ]
    got: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(sources))

    def ask(source: TokenSource) -> None:
        start.wait()
        try:
            got.append(source.token().reveal())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert provider.refreshes == 1 and provider.refused == 0
    assert set(got) == {provider.issued[-1]}
    assert stored_row(engine).refresh_owner is None


# --- a refused refresh: auth failed, doctor, /healthz, one alert ------------------------------


def test_revoked_grant_is_auth_failed_with_one_alert(engine: Engine, provider: Provider) -> None:
    account = account_for(provider)
    authorize_by_device(engine, account)
    provider.revoke(user=provider.user)
    provider.expire_access_tokens()
    settings = oauth_settings(account, alert_to="ops@example.net")
    later = datetime.now(UTC) + timedelta(hours=2)
    sources = [
        TokenSource(engine, account, settings, environ=ENV, owner=f"i{i}", clock=lambda: later)
        for i in range(2)
    ]
    for source in sources * 2:  # two instances, each asking twice
        with pytest.raises(oauth.AuthFailed, match=re.escape(REVOKED)):
            source.token()
    assert provider.refused == 1  # the failure is stored: nobody hammers the provider
    row = stored_row(engine)
    assert row.status == "auth failed" and REVOKED in row.reason
    with engine.connect() as conn:
        alerts = list(conn.execute(select(Outbox).where(Outbox.kind == "alert")))
    assert len(alerts) == 1
    assert alerts[0].recipient == "ops@example.net" and REVOKED in alerts[0].body
    assert "parity mailbox authorize support" in alerts[0].body
    # A new authorization clears it.
    authorize_by_device(engine, account)
    assert stored_row(engine).status == "ok" and sources[0].token()


def test_the_alert_reaches_the_operators(engine: Engine, provider: Provider) -> None:
    account = account_for(provider)
    authorize_by_device(engine, account)
    provider.revoke(user=provider.user)
    settings = oauth_settings(account, alert_to="ops@example.net")
    source = TokenSource(engine, account, settings, environ=ENV)
    with pytest.raises(oauth.AuthFailed):
        source.token(refused=source.token())
    sink = Sink().start()
    try:
        report = drainer_for(engine, sink).drain_once()
    finally:
        sink.stop()
    assert report.sent == 1
    (delivery,) = sink.delivered
    assert delivery.rcpt_tos == ["ops@example.net"]
    message = delivery.parsed()
    assert "sign-in failed for support" in str(message["Subject"])
    assert REVOKED in message.get_content()


def _settings_with(engine_url: str, account: OAuthAccount, **oauth_changes: Any) -> Settings:
    return parse(
        {
            "database": {"url": engine_url},
            # No connector runs in these tests: /healthz is degraded by the grants alone.
            "connectors": {"smtp": {"enabled": False}, "web": {"enabled": False}},
            "oauth": {"accounts": [account.model_dump()], **oauth_changes},
        }
    )


def test_doctor_and_healthz_show_auth_failed(
    engine: Engine, db_url: str, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tokens.KEY_ENV, KEY)
    account = account_for(provider)
    settings = _settings_with(db_url, account, alert_to="ops@example.net")
    findings = doctor.check_oauth(settings)
    assert [(f.area, f.problem) for f in findings] == [
        ("oauth support", "not authorized: no grant is stored")
    ]
    body, code = health(settings, engine)
    assert code == 503 and body["status"] == "degraded"
    authorize_by_device(engine, account)
    assert doctor.check_oauth(settings) == []
    body, code = health(settings, engine)
    assert code == 200 and body["oauth"][0]["status"] == "ok"
    provider.revoke(user=provider.user)
    source = TokenSource(engine, account, settings.oauth, environ=ENV)
    with pytest.raises(oauth.AuthFailed):
        source.token(refused=source.token())
    (finding,) = doctor.check_oauth(settings)
    assert finding.fatal and "auth failed since" in finding.problem
    assert REVOKED in finding.problem and "parity mailbox authorize support" in finding.fix
    body, code = health(settings, engine)
    assert code == 503 and body["status"] == "degraded"
    assert body["oauth"][0]["status"] == "auth failed" and REVOKED in body["oauth"][0]["reason"]
    rows = mailboxes.status_rows(settings, engine)
    assert rows[0]["status"] == "auth failed"


def test_doctor_without_a_key_or_an_alert_address(
    db_url: str, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(tokens.KEY_ENV, raising=False)
    settings = _settings_with(db_url, account_for(provider))
    findings = {f.problem.split(":")[0]: f for f in doctor.check_oauth(settings)}
    assert findings[f"{tokens.KEY_ENV} is not set"].fatal
    assert not findings["[oauth] alert_to is empty"].fatal


# --- `parity mailbox authorize`, end to end --------------------------------------------------


def _settings_file(tmp_path: Path, db_url: str, provider: Provider, flow: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f'[database]\nurl = "{db_url}"\n\n'
        "[[oauth.accounts]]\n"
        'name = "support"\nprovider = "generic"\n'
        f'client_id = "{CLIENT_ID}"\n'
        f'token_url = "{provider.base_url}/token"\n'
        f'device_url = "{provider.base_url}/device"\n'
        f'auth_url = "{provider.base_url}/authorize"\n'
        'scopes = ["mail"]\n'
        f'flow = "{flow}"\n'
    )
    return path


def _parity(settings: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **ENV, "PARITY_SETTINGS": str(settings)}
    return subprocess.Popen(
        [sys.executable, "-m", "parity", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_authorize_with_the_device_code(
    engine: Engine, db_url: str, provider: Provider, tmp_path: Path
) -> None:
    process = _parity(
        _settings_file(tmp_path, db_url, provider, "device"), "mailbox", "authorize", "support"
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"Open {provider.base_url}/activate and enter the code WDJB-MJHT" in out
    (grant,) = provider.grants.values()
    loaded = tokens.load(engine, tokens.Cipher(ENV), "support")
    assert loaded is not None and loaded.refresh_token.reveal() == grant.refresh_token


def test_authorize_in_a_browser_with_pkce_and_state(
    engine: Engine, db_url: str, provider: Provider, tmp_path: Path
) -> None:
    process = _parity(
        _settings_file(tmp_path, db_url, provider, "code"), "mailbox", "authorize", "support"
    )
    assert process.stdout is not None
    url = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not url:
        line = process.stdout.readline()
        if line.startswith(provider.base_url):
            url = line.strip()
    assert url, "no authorization URL printed"
    assert "code_challenge_method=S256" in url and "state=" in url
    # A forged redirect (no or wrong state) is ignored; the listener keeps waiting.
    redirect = re.search(r"redirect_uri=([^&]+)", url)
    assert redirect is not None
    listener = urllib.parse.unquote(redirect.group(1))
    with pytest.raises(urllib.error.HTTPError) as forged:
        urllib.request.urlopen(f"{listener}?code=stolen&state=guess", timeout=10)
    assert forged.value.code == 400
    # The user's browser: the provider redirects to the listener with the code and state.
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert b"authorized" in answer.read()
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    (grant,) = provider.grants.values()
    loaded = tokens.load(engine, tokens.Cipher(ENV), "support")
    assert loaded is not None and loaded.refresh_token.reveal() == grant.refresh_token


def test_authorize_an_unknown_account_or_without_a_key(
    db_url: str, provider: Provider, tmp_path: Path
) -> None:
    settings = _settings_file(tmp_path, db_url, provider, "device")
    process = _parity(settings, "mailbox", "authorize", "sales")
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "no [[oauth.accounts]] entry named 'sales'" in err
    env = {k: v for k, v in os.environ.items() if k != tokens.KEY_ENV}
    env["PARITY_SETTINGS"] = str(settings)
    done = subprocess.run(
        [sys.executable, "-m", "parity", "mailbox", "authorize", "support"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 78 and f"{tokens.KEY_ENV} is not set" in done.stderr
