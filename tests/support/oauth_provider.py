"""A local OAuth2 provider for the mailbox tests: what Google and Microsoft do, in small.

- /device: RFC 8628 device authorization; the user "enters the code" after `approve_after`
  polls (authorization_pending until then, slow_down when polled too fast is not modelled);
- /authorize: the browser step of the authorization-code flow; it checks the client, the
  loopback redirect URI and the PKCE challenge, and redirects back with a code and the state;
- /token: authorization_code (the PKCE verifier is checked), device_code and refresh_token
  grants; access tokens expire after `lifetime` seconds; refresh tokens may rotate (as
  Microsoft's do: the old one then dies); a revoked grant answers invalid_grant;
- /introspect: RFC 7662, what Dovecot's oauth2 passdb asks about each token at login
  (`url` is its address, so this provider can replace tests/support/dovecot.TokenEndpoint).

Runs on a thread of its own (ThreadingHTTPServer); counters let tests see what happened.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

CLIENT_ID = "parity-test-client"
REVOKED = "Token has been expired or revoked."


@dataclass
class Grant:
    user: str
    refresh_token: str
    scope: str
    revoked: bool = False


@dataclass
class Provider:
    lifetime: float = 3600.0
    rotate: bool = False
    approve_after: int = 1
    client_secret: str | None = None
    # Who signs in at /authorize and /device: the mailbox user the grant is for.
    user: str = "user1"
    grants: dict[str, Grant] = field(default_factory=dict)  # by refresh token
    access: dict[str, tuple[str, float, Grant]] = field(default_factory=dict)
    codes: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # code: (challenge,..)
    devices: dict[str, int] = field(default_factory=dict)
    refreshes: int = 0
    refused: int = 0
    introspections: int = 0
    issued: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the test's side ------------------------------------------------------------------

    def grant_for(self, user: str, scope: str = "mail") -> Grant:
        """A grant made outside any flow (as if authorized earlier)."""
        with self.lock:
            return self._new_grant(user, scope)

    def revoke(self, refresh_token: str | None = None, *, user: str | None = None) -> None:
        """Revoke consent: the refresh token and every access token of the grant die."""
        with self.lock:
            for grant in self.grants.values():
                if grant.refresh_token == refresh_token or grant.user == user:
                    grant.revoked = True

    def expire_access_tokens(self) -> None:
        with self.lock:
            for token, (user, _until, grant) in list(self.access.items()):
                self.access[token] = (user, 0.0, grant)

    def active(self, token: str) -> str | None:
        with self.lock:
            found = self.access.get(token)
            if found is None:
                return None
            user, until, grant = found
            return user if until > time.time() and not grant.revoked else None

    # --- the provider's side --------------------------------------------------------------

    def _new_grant(self, user: str, scope: str) -> Grant:
        grant = Grant(user, "rt-" + secrets.token_urlsafe(24), scope)
        self.grants[grant.refresh_token] = grant
        return grant

    def _access_token(self, grant: Grant) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(24)
        self.access[token] = (grant.user, time.time() + self.lifetime, grant)
        self.issued.append(token)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(self.lifetime),
            "scope": grant.scope,
        }

    def _client_ok(self, form: dict[str, str]) -> bool:
        if form.get("client_id") != CLIENT_ID:
            return False
        return self.client_secret is None or form.get("client_secret") == self.client_secret

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if not self._client_ok(form):
                return 401, {"error": "invalid_client", "error_description": "unknown client"}
            kind = form.get("grant_type")
            if kind == "refresh_token":
                grant = self.grants.get(form.get("refresh_token", ""))
                if grant is None or grant.revoked:
                    self.refused += 1
                    return 400, {"error": "invalid_grant", "error_description": REVOKED}
                self.refreshes += 1
                answer = self._access_token(grant)
                if self.rotate:
                    del self.grants[grant.refresh_token]
                    grant.refresh_token = "rt-" + secrets.token_urlsafe(24)
                    self.grants[grant.refresh_token] = grant
                    answer["refresh_token"] = grant.refresh_token
                return 200, answer
            if kind == "urn:ietf:params:oauth:grant-type:device_code":
                code = form.get("device_code", "")
                if code not in self.devices:
                    return 400, {"error": "invalid_grant", "error_description": "unknown code"}
                self.devices[code] += 1
                if self.devices[code] <= self.approve_after:
                    return 400, {"error": "authorization_pending"}
                del self.devices[code]
                grant = self._new_grant(self.user, form.get("scope", "mail"))
                return 200, {**self._access_token(grant), "refresh_token": grant.refresh_token}
            if kind == "authorization_code":
                found = self.codes.pop(form.get("code", ""), None)
                if found is None:
                    return 400, {"error": "invalid_grant", "error_description": "bad code"}
                challenge, redirect_uri, scope = found
                verifier = form.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if computed != challenge:
                    return 400, {"error": "invalid_grant", "error_description": "PKCE failed"}
                if form.get("redirect_uri") != redirect_uri:
                    return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
                grant = self._new_grant(self.user, scope)
                return 200, {**self._access_token(grant), "refresh_token": grant.refresh_token}
            return 400, {"error": "unsupported_grant_type"}

    def device(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if not self._client_ok(form):
                return 401, {"error": "invalid_client"}
            code = secrets.token_urlsafe(16)
            self.devices[code] = 0
            return 200, {
                "device_code": code,
                "user_code": "WDJB-MJHT",
                "verification_uri": f"{self.base_url}/activate",
                "expires_in": 60,
                "interval": 1,
            }

    def authorize(self, query: dict[str, str]) -> tuple[int, str]:
        """(status, Location or error) of the browser's authorization request."""
        redirect = query.get("redirect_uri", "")
        host = urlsplit(redirect).hostname
        if query.get("client_id") != CLIENT_ID or host not in ("127.0.0.1", "localhost"):
            return 400, "bad client or redirect_uri"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return 400, "PKCE required"
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = (query["code_challenge"], redirect, query.get("scope", ""))
        params = urlencode({"code": code, "state": query.get("state", "")})
        return 302, f"{redirect}?{params}"

    # --- HTTP -----------------------------------------------------------------------------

    base_url: str = ""
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The introspection URL (what the Dovecot fixture calls `tokens.url`)."""
        return f"{self.base_url}/introspect"

    @property
    def tokens(self) -> dict[str, str]:
        """Static tokens for the older XOAUTH2 test (tests/support/dovecot.TokenEndpoint)."""
        return self._static

    _static: dict[str, str] = field(default_factory=dict)

    def start(self) -> Provider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _form(self) -> dict[str, str]:
                length = int(self.headers.get("Content-Length") or 0)
                parsed = parse_qs(self.rfile.read(length).decode())
                return {k: v[0] for k, v in parsed.items()}

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                form = self._form()
                if path == "/token":
                    self._json(*provider.token(form))
                elif path == "/device":
                    self._json(*provider.device(form))
                elif path == "/introspect":
                    token = form.get("token", "")
                    with provider.lock:
                        provider.introspections += 1
                    user = provider.active(token) or provider._static.get(token)
                    self._json(
                        200, {"active": True, "username": user} if user else {"active": False}
                    )
                else:
                    self._json(404, {"error": "not_found"})

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/authorize":
                    self._json(404, {"error": "not_found"})
                    return
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                status, where = provider.authorize(query)
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", where)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
