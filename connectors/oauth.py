"""OAuth2 for mailboxes: Google, Microsoft and any provider with a token endpoint.

Both big mail providers have switched password logins off for IMAP and SMTP; a mailbox is
reached with an access token that lasts about an hour, renewed with a refresh token that
lasts until consent is revoked. This module holds the protocol side, shared by IMAP intake,
the outgoing relay and `parity mailbox authorize`:

- the [oauth] settings: accounts with a provider preset (endpoints and scopes) or a generic
  provider's URLs;
- the token endpoint's grants (RFC 6749 refresh and authorization code with PKCE, RFC 7636;
  RFC 8628 device code), over the standard library's HTTP client with a timeout, a size cap
  on answers and no redirects followed;
- `TokenSource`: a valid access token on demand, refreshed before expiry by one instance at
  a time (the lease in inbox/tokens.py), and on a refused refresh the account's status set
  to "auth failed" with the provider's reason and one alert queued to the operators.

Why no provider library (measured in docs/operations/mailboxes.md): msal and google-auth
each cover one provider, pull in requests, PyJWT or pyasn1/rsa, and neither runs the other's
or a generic provider's flows, so a third code path would remain; the grants are four form
POSTs. Everything here is blocking: callers run it on worker threads (IMAP sessions and the
outbox senders already do).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from pydantic import Field, field_validator, model_validator
from sqlalchemy import Engine

from inbox import tokens
from inbox.channels import MAIL_CHANNEL
from inbox.config import Strict
from inbox.db import write
from inbox.models import utcnow
from inbox.outbox import enqueue
from inbox.secrets import Secret, from_env, mask

log = logging.getLogger(__name__)

# Answers of a token endpoint are a few hundred bytes; anything far larger is not one.
MAX_ANSWER_BYTES = 64 * 1024
HTTP_TIMEOUT_S = 30.0
# How long one instance may hold the refresh lease: longer than one refresh can take.
LEASE_S = HTTP_TIMEOUT_S + 15.0
# How often an instance waiting for another's refresh looks at the store again.
WAIT_TICK_S = 0.2
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


# --- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A provider's endpoints ({tenant} filled in for Microsoft) and default scopes."""

    auth_url: str
    token_url: str
    device_url: str
    scopes: tuple[str, ...]
    # Extra parameters of the authorization request (Google: ask for a refresh token).
    auth_params: tuple[tuple[str, str], ...] = ()
    # The flow `parity mailbox authorize` uses unless told otherwise.
    default_flow: str = "code"


# The token URLs below are URLs, not passwords (ruff's S106 goes by the word "token").
PRESETS: dict[str, Preset] = {
    # Google's device flow does not allow the mail scope (it is not on its list of scopes
    # for limited-input devices), so the default is the loopback authorization-code flow.
    "google": Preset(
        auth_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url="https://oauth2.googleapis.com/token",  # noqa: S106 - a URL
        device_url="https://oauth2.googleapis.com/device/code",
        scopes=("https://mail.google.com/",),
        auth_params=(("access_type", "offline"), ("prompt", "consent")),
        default_flow="code",
    ),
    "microsoft": Preset(
        auth_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        token_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",  # noqa: S106
        device_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode",
        scopes=(
            "offline_access",
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "https://outlook.office.com/SMTP.Send",
        ),
        default_flow="device",
    ),
}
PROVIDERS = (*PRESETS, "generic")
FLOWS = ("device", "code")


def _check_url(value: str, what: str) -> str:
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    # Plain HTTP only to this machine (a test provider, a local proxy): tokens are secrets.
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return value
    raise ValueError(f"{what} must be an https:// URL (http:// only to this machine)")


class OAuthAccount(Strict):
    # The name `parity mailbox authorize NAME` takes, and the mailbox settings refer to.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    provider: str = "generic"
    client_id: str = Field(min_length=1)
    # Google's "desktop app" clients have a secret (not confidential, but required);
    # Microsoft's public clients have none. The variable that holds it, when there is one.
    client_secret_env: str = ""
    # Microsoft: the directory (tenant) id or domain; "organizations" for any work account.
    tenant: str = "organizations"
    # Empty: the provider preset's. Required for a generic provider.
    auth_url: str = ""
    token_url: str = ""
    device_url: str = ""
    scopes: list[str] = Field(default_factory=list)
    # "device" or "code"; empty: the preset's default (code for Google, device for Microsoft).
    flow: str = ""
    # The port of the local redirect listener of the code flow (0: any free port). Google
    # accepts any loopback port; an app registered with a fixed redirect URI needs it fixed.
    redirect_port: int = Field(default=0, ge=0, le=65535)

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        if value not in PROVIDERS:
            raise ValueError(f"provider is one of {', '.join(PROVIDERS)}")
        return value

    @field_validator("flow")
    @classmethod
    def _flow(cls, value: str) -> str:
        if value and value not in FLOWS:
            raise ValueError('flow is "device" or "code"')
        return value

    @field_validator("auth_url", "token_url", "device_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        return _check_url(value, "an OAuth endpoint")

    @model_validator(mode="after")
    def _generic_needs_urls(self) -> OAuthAccount:
        if self.provider == "generic":
            if not self.token_url:
                raise ValueError("a generic provider needs token_url")
            if not self.scopes:
                raise ValueError("a generic provider needs scopes")
            if not (self.auth_url or self.device_url):
                raise ValueError("a generic provider needs auth_url or device_url")
        return self

    def _preset(self, attr: str) -> str:
        preset = PRESETS.get(self.provider)
        return str(getattr(preset, attr)).format(tenant=self.tenant) if preset else ""

    @property
    def endpoints(self) -> tuple[str, str, str]:
        """(auth, token, device) URLs: the account's own, else its provider's."""
        return (
            self.auth_url or self._preset("auth_url"),
            self.token_url or self._preset("token_url"),
            self.device_url or self._preset("device_url"),
        )

    @property
    def scope_list(self) -> list[str]:
        preset = PRESETS.get(self.provider)
        return list(self.scopes) or (list(preset.scopes) if preset else [])

    @property
    def default_flow(self) -> str:
        if self.flow:
            return self.flow
        preset = PRESETS.get(self.provider)
        if preset:
            return preset.default_flow
        return "device" if self.device_url and not self.auth_url else "code"

    @property
    def auth_params(self) -> list[tuple[str, str]]:
        preset = PRESETS.get(self.provider)
        return list(preset.auth_params) if preset else []


class OAuthSettings(Strict):
    # Refresh this long before the access token expires: a login started with a token
    # about to expire could be refused mid-way, and clocks differ.
    refresh_margin_s: int = Field(default=300, ge=0, le=3000)
    # Where the "auth failed" alert goes (through the outbox and the relay). Empty: no
    # alert is sent, and `parity doctor` warns.
    alert_to: str = ""
    accounts: list[OAuthAccount] = Field(default_factory=list)

    @field_validator("accounts")
    @classmethod
    def _unique(cls, value: list[OAuthAccount]) -> list[OAuthAccount]:
        names = [a.name for a in value]
        if len(names) != len(set(names)):
            raise ValueError("account names must be unique")
        return value

    @field_validator("alert_to")
    @classmethod
    def _alert_to(cls, value: str) -> str:
        if value and ("@" not in value or any(c in value for c in "\r\n\t <>,")):
            raise ValueError(f"not an address: {value!r}")
        return value

    def account(self, name: str) -> OAuthAccount | None:
        return next((a for a in self.accounts if a.name == name), None)


# --- the token endpoint ----------------------------------------------------------------------


class OAuthError(Exception):
    """The provider answered with an OAuth error (RFC 6749 5.2): its code and description."""

    def __init__(self, code: str, description: str = "", status: int = 0) -> None:
        self.code = code
        self.description = description
        self.status = status
        super().__init__(f"{code}: {description}" if description else code)


class Unreachable(Exception):
    """The provider could not be asked (network, timeout, 5xx, an answer that is not JSON)."""


class AuthFailed(Exception):
    """The grant is dead (refresh refused, consent revoked): only a new authorization helps."""


# Errors that mean the grant itself is gone (RFC 6749 5.2); anything else may pass.
_DEAD_GRANT = frozenset({"invalid_grant", "unauthorized_client", "invalid_client"})


def is_dead_grant(error: OAuthError) -> bool:
    return error.code in _DEAD_GRANT


def provider_reason(error: OAuthError) -> str:
    """The provider's reason, one line and short: status pages show it, alerts quote it."""
    text = (
        " ".join(f"{error.code}: {error.description}".split()) if error.description else error.code
    )
    return mask(text)[:300]


def parse_answer(status: int, body: bytes) -> dict[str, Any]:
    """A token endpoint's answer as a dict; raises OAuthError or Unreachable.

    Pure: every shape seen from providers (and hostile ones) is in the tests' table.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Unreachable(f"HTTP {status}: the answer is not JSON") from exc
    if not isinstance(data, dict):
        raise Unreachable(f"HTTP {status}: the answer is not a JSON object")
    error = data.get("error")
    if error:
        description = data.get("error_description") or ""
        raise OAuthError(str(error)[:100], str(description)[:500], status)
    if status >= 500 or status == 429:
        raise Unreachable(f"HTTP {status}")
    if status >= 400:
        raise OAuthError("http_error", f"HTTP {status}", status)
    return data


def expiry(answer: Mapping[str, Any], now: datetime) -> datetime:
    """When an access token from `answer` expires; an hour when the provider does not say,
    and never more than a day: a wrong figure must not keep a dead token in use."""
    raw = answer.get("expires_in", 3600)
    try:
        seconds = int(raw)
    except (TypeError, ValueError):
        seconds = 3600
    return now + timedelta(seconds=min(max(seconds, 0), 86400))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a token endpoint that redirects is misconfigured: never follow it


_opener = urllib.request.build_opener(_NoRedirect)


def post_form(url: str, form: Mapping[str, str], timeout: float = HTTP_TIMEOUT_S) -> dict[str, Any]:
    """POST `form` to a token or device endpoint; the answer's JSON object."""
    request = urllib.request.Request(  # noqa: S310 - the URL was checked to be http(s)
        url,
        data=urlencode(form).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        },
        method="POST",
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            return parse_answer(
                response.status, response.read(MAX_ANSWER_BYTES + 1)[:MAX_ANSWER_BYTES]
            )
    except urllib.error.HTTPError as exc:
        body = exc.read(MAX_ANSWER_BYTES + 1)[:MAX_ANSWER_BYTES]
        return parse_answer(exc.code, body)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(mask(f"{urlsplit(url).hostname}: {reason}")) from exc


@dataclass(frozen=True)
class Client:
    """An account's client credentials and endpoints, ready for the grants."""

    account: OAuthAccount
    secret: Secret | None

    @classmethod
    def of(cls, account: OAuthAccount, environ: Mapping[str, str] | None = None) -> Client:
        secret = (
            from_env(account.client_secret_env, dict(environ) if environ is not None else None)
            if account.client_secret_env
            else None
        )
        return cls(account, secret)

    def form(self, **values: str) -> dict[str, str]:
        form = {"client_id": self.account.client_id, **values}
        if self.secret is not None:
            form["client_secret"] = self.secret.reveal()
        return form

    def refresh(self, refresh_token: Secret) -> dict[str, Any]:
        _auth, token_url, _device = self.account.endpoints
        answer = post_form(
            token_url,
            self.form(grant_type="refresh_token", refresh_token=refresh_token.reveal()),
        )
        return _with_access_token(answer)


def _with_access_token(answer: dict[str, Any]) -> dict[str, Any]:
    token = answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise Unreachable("the token endpoint answered without an access_token")
    Secret(token)  # remembered, so the logs mask it
    if isinstance(answer.get("refresh_token"), str):
        Secret(answer["refresh_token"])
    return answer


# --- authorization: the device-code and authorization-code flows -----------------------------


@dataclass(frozen=True)
class Authorized:
    refresh_token: str
    access_token: str
    expires_at: datetime
    scopes: str


def _authorized(answer: dict[str, Any], scopes: list[str]) -> Authorized:
    answer = _with_access_token(answer)
    refresh = answer.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise OAuthError(
            "no_refresh_token",
            "the provider gave no refresh token (Google: access_type=offline and prompt="
            "consent; Microsoft: the offline_access scope)",
        )
    return Authorized(
        refresh_token=refresh,
        access_token=str(answer["access_token"]),
        expires_at=expiry(answer, utcnow()),
        scopes=str(answer.get("scope") or " ".join(scopes)),
    )


def device_flow(
    client: Client,
    show: Callable[[str], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    max_wait_s: float = 900.0,
) -> Authorized:
    """RFC 8628: show the URL and code, then poll the token endpoint until the user answers."""
    account = client.account
    _auth, token_url, device_url = account.endpoints
    if not device_url:
        raise OAuthError("no_device_endpoint", f"provider {account.provider} has no device URL")
    scopes = account.scope_list
    start = post_form(device_url, client.form(scope=" ".join(scopes)))
    device_code = str(start.get("device_code") or "")
    user_code = str(start.get("user_code") or "")
    # Google says verification_url, the RFC verification_uri.
    url = str(start.get("verification_uri") or start.get("verification_url") or "")
    if not device_code or not user_code or not url:
        raise Unreachable("the device endpoint's answer lacks device_code, user_code or URL")
    show(f"Open {url} and enter the code {user_code}")
    interval = _bounded(start.get("interval"), 5, 1, 60)
    deadline = time.monotonic() + min(_bounded(start.get("expires_in"), 900, 1, 3600), max_wait_s)
    while time.monotonic() < deadline:
        sleep(interval)
        try:
            answer = post_form(
                token_url,
                client.form(
                    grant_type="urn:ietf:params:oauth:grant-type:device_code",
                    device_code=device_code,
                ),
            )
        except OAuthError as exc:
            if exc.code == "authorization_pending":
                continue
            if exc.code == "slow_down":
                interval += 5  # RFC 8628 3.5
                continue
            raise
        return _authorized(answer, scopes)
    raise OAuthError("expired_token", "nobody entered the code in time")


def _bounded(value: Any, default: int, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return min(max(number, low), high)


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge), RFC 7636."""
    verifier = secrets.token_urlsafe(64)[:96]
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(account: OAuthAccount, redirect_uri: str, state: str, challenge: str) -> str:
    auth_url, _token, _device = account.endpoints
    params = [
        ("response_type", "code"),
        ("client_id", account.client_id),
        ("redirect_uri", redirect_uri),
        ("scope", " ".join(account.scope_list)),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        *account.auth_params,
    ]
    return f"{auth_url}{'&' if '?' in auth_url else '?'}{urlencode(params)}"


def redirect_result(query: str, state: str) -> tuple[str | None, str]:
    """(code, message) from the redirect's query string; code None when refused or forged.

    Pure. A state that does not match is a request someone else made (CSRF): refused.
    """
    params = parse_qs(query, max_num_fields=20)
    got_state = (params.get("state") or [""])[0]
    if not secrets.compare_digest(got_state.encode(), state.encode()):
        return None, "state does not match: ignored"
    if params.get("error"):
        description = (params.get("error_description") or [""])[0]
        return None, f"{params['error'][0][:100]}: {description[:300]}".rstrip(": ")
    code = (params.get("code") or [""])[0]
    if not code:
        return None, "no code in the redirect"
    return code, "authorized"


def code_flow(
    client: Client,
    show: Callable[[str], None],
    *,
    port: int | None = None,
    max_wait_s: float = 900.0,
) -> Authorized:
    """Authorization code with PKCE and a one-shot redirect listener on 127.0.0.1."""
    account = client.account
    _auth, token_url, _device = account.endpoints
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    found: dict[str, str] = {}
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urlsplit(self.path).query
            code, message = redirect_result(query, state)
            if code is not None:
                found["code"] = code
            elif "state" not in message:
                found["error"] = message
            body = (
                "Parity: authorized. You can close this window."
                if code
                else f"Parity: not authorized ({message})."
            ).encode()
            self.send_response(200 if code else 400)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if code is not None or "error" in found:
                done.set()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", account.redirect_port if port is None else port), Handler)
    server.timeout = 0.5
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/"
    url = authorization_url(account, redirect_uri, state, challenge)
    show(f"Open this URL in a browser and sign in as the mailbox:\n{url}")
    show(f"Waiting for the redirect to {redirect_uri} ...")
    deadline = time.monotonic() + max_wait_s
    try:
        while not done.is_set() and time.monotonic() < deadline:
            server.handle_request()
    finally:
        server.server_close()
    if "error" in found:
        raise OAuthError("access_denied", found["error"])
    if "code" not in found:
        raise OAuthError("expired_token", "no redirect arrived in time")
    answer = post_form(
        token_url,
        client.form(
            grant_type="authorization_code",
            code=found["code"],
            redirect_uri=redirect_uri,
            code_verifier=verifier,
        ),
    )
    return _authorized(answer, account.scope_list)


# --- tokens on demand ------------------------------------------------------------------------


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def alert_text(account: str, reason: str) -> tuple[str, str]:
    """(subject, body) of the alert an operator gets when a grant died."""
    subject = f"Parity: mailbox sign-in failed for {account}; intake from it has stopped"
    body = (
        f"The provider refused to renew the sign-in of OAuth account {account!r}:\n\n"
        f"    {reason}\n\n"
        "Until someone signs in again, Parity cannot read or send through this mailbox, and "
        "the upstream mailbox fills up. Usual causes: consent revoked, the password changed, "
        "the app registration's secret expired, or an administrator blocked the app.\n\n"
        f"Fix: parity mailbox authorize {account}\n"
    )
    return subject, body


class TokenSource:
    """A valid access token for one account, refreshed before expiry.

    Thread-safe (every folder poller and the sender of one account share one). The refresh
    itself is done by one instance at a time across the store; this object remembers the
    token it last read, so most calls touch neither the store nor the provider.
    """

    def __init__(
        self,
        engine: Engine,
        account: OAuthAccount,
        settings: OAuthSettings,
        *,
        environ: Mapping[str, str] | None = None,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.account = account
        self.settings = settings
        self.environ = environ
        self.client = Client.of(account, environ)
        self.owner = owner or instance_name()
        self.clock = clock
        self.margin = timedelta(seconds=settings.refresh_margin_s)
        self._lock = threading.Lock()
        self._cached: tokens.Grant | None = None
        # The last token a server refused (invalidate): never handed out again.
        self._refused: Secret | None = None
        self.refreshes = 0

    @property
    def name(self) -> str:
        return self.account.name

    def cipher(self) -> tokens.Cipher:
        return tokens.Cipher(self.environ)

    def invalidate(self, token: Secret | None = None) -> None:
        """Forget the cached token: a server refused `token` before its expiry. The next
        call refreshes rather than hand out the same token again from the store."""
        with self._lock:
            if token is None or (self._cached and self._cached.access_token == token):
                self._cached = None
            if token is not None:
                self._refused = token

    def token(self, *, refused: Secret | None = None) -> Secret:
        """A valid access token. `refused`: one the server just refused, never returned again.

        Raises AuthFailed (the grant is dead or was never made), Unreachable (the provider
        cannot be asked now), tokens.KeyMissing.
        """
        with self._lock:
            refused = refused or self._refused
            now = self.clock()
            cached = self._cached
            if cached and cached.fresh(now, self.margin) and cached.access_token != refused:
                assert cached.access_token is not None
                return cached.access_token
            cipher = self.cipher()
            deadline = time.monotonic() + LEASE_S * 2
            while True:
                grant = tokens.load(self.engine, cipher, self.name)
                if grant is None:
                    raise AuthFailed(f"not authorized: run `parity mailbox authorize {self.name}`")
                if grant.status == tokens.AUTH_FAILED:
                    raise AuthFailed(grant.reason or "auth failed")
                if grant.fresh(self.clock(), self.margin) and grant.access_token != refused:
                    self._cached = grant
                    assert grant.access_token is not None
                    return grant.access_token
                if tokens.take_lease(self.engine, self.name, self.owner, LEASE_S):
                    return self._refresh(cipher, refused)
                # Another instance refreshes right now: wait for what it stores.
                if time.monotonic() > deadline:
                    raise Unreachable("another instance holds the refresh lease and stored nothing")
                time.sleep(WAIT_TICK_S)

    def _refresh(self, cipher: tokens.Cipher, refused: Secret | None) -> Secret:
        """With the lease held: read again (another may just have finished), then refresh."""
        try:
            grant = tokens.load(self.engine, cipher, self.name)
            if grant is None or grant.status == tokens.AUTH_FAILED:
                raise AuthFailed(grant.reason if grant and grant.reason else "not authorized")
            if grant.fresh(self.clock(), self.margin) and grant.access_token != refused:
                self._cached = grant
                assert grant.access_token is not None
                return grant.access_token
            try:
                answer = self.client.refresh(grant.refresh_token)
            except OAuthError as exc:
                if not is_dead_grant(exc):
                    raise Unreachable(f"refresh refused for now: {provider_reason(exc)}") from exc
                reason = provider_reason(exc)
                self._fail(reason)
                raise AuthFailed(reason) from exc
            now = self.clock()
            expires = expiry(answer, now)
            access = str(answer["access_token"])
            rotated = answer.get("refresh_token")
            stored = tokens.save_refreshed(
                self.engine,
                cipher,
                account=self.name,
                owner=self.owner,
                access_token=access,
                expires_at=expires,
                refresh_token=rotated if isinstance(rotated, str) else None,
            )
            if not stored:
                log.warning(
                    "oauth %s: the refresh lease ran out before the token was stored", self.name
                )
            self.refreshes += 1
            log.info(
                "oauth %s: access token refreshed, valid until %s", self.name, expires.isoformat()
            )
            self._cached = tokens.Grant(
                account=self.name,
                provider=grant.provider,
                refresh_token=Secret(rotated) if isinstance(rotated, str) else grant.refresh_token,
                access_token=Secret(access),
                expires_at=expires,
                status=tokens.OK,
                reason=None,
                refresh_owner=None,
                refresh_until=None,
            )
            return Secret(access)
        finally:
            tokens.release_lease(self.engine, self.name, self.owner)

    def _fail(self, reason: str) -> None:
        """Status "auth failed" with the reason, and (the first time) one alert queued."""
        log.error("oauth %s: auth failed: %s", self.name, reason)
        alert_to = self.settings.alert_to
        with write(self.engine) as conn:
            changed = tokens.mark_failed(conn, self.name, reason)
            if changed and alert_to:
                subject, body = alert_text(self.name, reason)
                enqueue(
                    conn,
                    case_id=None,
                    kind="alert",
                    channel=MAIL_CHANNEL,
                    recipient=alert_to,
                    subject=subject,
                    body=body,
                    created_by="oauth",
                )
        if changed and not alert_to:
            log.warning("oauth %s: no [oauth] alert_to is set: nobody was told", self.name)


def sources(
    engine: Engine, settings: OAuthSettings, environ: Mapping[str, str] | None = None
) -> dict[str, TokenSource]:
    """One token source per configured account, shared by everything in this process."""
    owner = instance_name()
    return {
        a.name: TokenSource(engine, a, settings, environ=environ, owner=owner)
        for a in settings.accounts
    }


def xoauth2(user: str, token: Secret) -> str:
    """The SASL XOAUTH2 initial response (before base64), as Google and Microsoft define it."""
    return f"user={user}\x01auth=Bearer {token.reveal()}\x01\x01"
