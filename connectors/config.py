"""Settings shared by the connectors: the [outbox] section (the retry policy of every sender
and the email relay) and the web inbox's listener. Each connector's own section is a model
in its package (connectors/<name>/settings.py); connectors/registry.py assembles them into
ConnectorsSettings.

Kept apart from the connector modules so settings validate even where a connector's library
is not installed: that connector is then reported as disabled, and the rest run. This module
imports no connector package, so every connector may import it without a circle.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.utils import parseaddr
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from inbox.channels import CONNECTOR_CHANNELS
from inbox.config import Strict

# Every connector that brings in a channel (the registry's), then the web inbox.
CONNECTOR_NAMES = (*CONNECTOR_CHANNELS, "web")


class WebSettings(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The URL agents reach the inbox at, for links in notifications.
    public_url: str = "http://127.0.0.1:8080"


# --- the outbox: retry policy of every sending connector, and the email relay --------------


class EmailRelaySettings(Strict):
    """The SMTP relay acknowledgements and replies leave through ([outbox.email])."""

    enabled: bool = True
    # Empty means no relay: email rows stay queued (visible in `parity outbox list`).
    host: str = ""
    port: int = Field(default=587, ge=1, le=65535)
    # starttls (submission, port 587) | implicit (TLS from the start, port 465) | none
    security: str = "starttls"
    # AUTH is used when a username is set; the password comes from this variable.
    username: str = ""
    password_env: str = "PARITY_RELAY_PASSWORD"
    # A PEM file of CAs to trust instead of the system's (a relay with a private CA).
    ca_file: str = ""
    # Our From: replies to it must reach Parity, so use a support address.
    from_address: str = "Support <help@support.example.com>"
    # MAIL FROM, where bounces go; the From address when empty.
    envelope_from: str = ""
    # The name we give in EHLO; the machine's name when empty.
    helo_name: str = ""
    # Seconds for connecting and for each SMTP step (or each API request).
    timeout_s: float = Field(default=60.0, gt=0)
    # Sign in with an OAuth2 grant instead of a password: the [[oauth.accounts]] name
    # (`parity mailbox authorize NAME`). With transport "smtp" that is AUTH XOAUTH2 as
    # `username` (default: the From address); the API transports need it.
    oauth_account: str = ""
    # smtp (the relay at host:port) | gmail_api (Gmail API users.messages.send) | graph
    # (Microsoft Graph sendMail): the provider's API where SMTP AUTH is switched off.
    transport: str = "smtp"
    # The API's base URL; empty: the provider's (https://gmail.googleapis.com,
    # https://graph.microsoft.com). For a national cloud or a proxy.
    api_url: str = ""

    @field_validator("transport")
    @classmethod
    def _transport(cls, value: str) -> str:
        if value not in ("smtp", "gmail_api", "graph"):
            raise ValueError('transport is "smtp", "gmail_api" or "graph"')
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and not (
            (parts.scheme == "https" and parts.hostname)
            or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
        ):
            raise ValueError("api_url must be an https:// URL (http:// only to this machine)")
        return value.rstrip("/")

    # For trials: write outgoing mail to this Maildir instead of sending it (no relay is
    # used). Every page then says that customers receive nothing.
    capture_dir: str = ""

    @field_validator("security")
    @classmethod
    def _security(cls, value: str) -> str:
        if value not in ("starttls", "implicit", "none"):
            raise ValueError('security is "starttls", "implicit" or "none"')
        return value

    @field_validator("from_address")
    @classmethod
    def _from(cls, value: str) -> str:
        name, addr = parseaddr(value)
        if "@" not in addr or any(ch in value for ch in "\r\n"):
            raise ValueError(f"not an address: {value!r}")
        Address(display_name=name, addr_spec=addr)  # raises for what a header can't carry
        return value

    @model_validator(mode="after")
    def _no_plaintext_password(self) -> EmailRelaySettings:
        # A password sent without TLS can be read on the wire; only this machine is exempt.
        signs_in = self.username or self.oauth_account
        if signs_in and self.security == "none" and self.host not in _LOOPBACK:
            raise ValueError("AUTH without TLS is only allowed to a relay on this machine")
        if self.transport != "smtp" and not self.oauth_account:
            raise ValueError(f'transport "{self.transport}" needs oauth_account')
        return self

    @property
    def api_base(self) -> str:
        return self.api_url or _API_URLS.get(self.transport, "")


# The providers' API hosts, per transport.
_API_URLS = {"gmail_api": "https://gmail.googleapis.com", "graph": "https://graph.microsoft.com"}


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class OutboxSettings(Strict):
    # How often a sender looks for due rows when nothing woke it.
    poll_seconds: float = Field(default=5.0, gt=0)
    batch_size: int = Field(default=20, ge=1, le=500)
    # Attempts before a retriable failure is given up as failed: visible, never retried
    # forever (`parity outbox retry ID` sends it again).
    max_attempts: int = Field(default=8, ge=1)
    # Delay before retry n: min(max, base * 2^(n-1)), half of it fixed and half random.
    backoff_base_s: float = Field(default=30.0, ge=0)
    backoff_max_s: float = Field(default=3600.0, ge=0)
    # A row still "sending" this long after it was claimed was left by a process that died;
    # longer than any one send can take (the relay timeout bounds each SMTP step).
    lease_seconds: int = Field(default=600, ge=1)
    # An acknowledgement not sent this long after it was queued is dropped as failed: an
    # expected response time from yesterday would mislead.
    ack_expire_hours: int = Field(default=24, ge=1)
    email: EmailRelaySettings = EmailRelaySettings()
