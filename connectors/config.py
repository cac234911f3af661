"""Settings of every connector: one [connectors.<name>] section each.

Kept apart from the connector modules so settings validate even where a connector's library
is not installed: that connector is then reported as disabled, and the rest run.
"""

from __future__ import annotations

import re
import string
from datetime import date
from email.headerregistry import Address
from email.utils import parseaddr
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from inbox.channels import CHANNEL_FACTS, CONNECTOR_CHANNELS
from inbox.config import Strict

_SUBREDDIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{1,20}")

# Every connector that brings in a channel (the registry's), then the web inbox.
CONNECTOR_NAMES = (*CONNECTOR_CHANNELS, "web")


class SmtpSettings(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)
    # The name we give in the greeting and EHLO answer.
    hostname: str = "parity.localhost"
    # Mail is accepted only for these domains: anything else is refused, never relayed.
    support_domains: list[str] = Field(default_factory=lambda: ["support.example.com"])
    # The one 5xx besides relay denial; there is no mailbox quota.
    max_message_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    # aiosmtpd's RFC default of 1001 rejects real HTML mail with long lines. 0: a line may be
    # as long as the whole message may be, so the size limit stays the only content 5xx.
    max_line_length: int = Field(default=0, ge=0)
    # STARTTLS is offered when both are set (PEM files).
    tls_cert: str = ""
    tls_key: str = ""

    @field_validator("max_line_length")
    @classmethod
    def _line(cls, value: int) -> int:
        if 0 < value < 1001:
            raise ValueError("0 (no limit of its own) or at least 1001, the RFC 5321 minimum")
        return value

    @field_validator("support_domains")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one support domain is needed, or mail has nowhere to go")
        return [d.strip().lower().lstrip("@") for d in value]


class WebSettings(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The URL agents reach the inbox at, for links in notifications.
    public_url: str = "http://127.0.0.1:8080"


class ImapAccount(Strict):
    # Names the account in status, checkpoints and source keys: keep it once chosen.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    host: str
    port: int = Field(default=993, ge=1, le=65535)
    tls: str = "implicit"
    # A PEM file of CA certificates to trust instead of the system's, for a private CA.
    # Certificates and host names are always verified.
    ca_file: str = ""
    username: str
    # The variable holds the password, or the OAuth2 access token when auth = "xoauth2".
    password_env: str
    auth: str = "password"
    # The support address this mailbox receives for, recorded on receipts (default: username).
    address: str = ""
    # Folder paths use "/" between levels; the server's own separator is used on the wire.
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    after_store: str = "move"
    archive_folder: str = "Parity/Archived"
    # First start: only messages that arrived on or after this date are taken (and later
    # ones always); older ones stay where they are. Unset: everything in the folder.
    backfill_since: date | None = None
    # Wait with IDLE where the server offers it; `poll_seconds` stays the safety net.
    idle: bool = True

    @field_validator("tls")
    @classmethod
    def _tls(cls, value: str) -> str:
        if value not in ("implicit", "starttls", "none"):
            raise ValueError('tls is "implicit", "starttls" or "none"')
        return value

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        if value not in ("password", "xoauth2"):
            raise ValueError('auth is "password" or "xoauth2"')
        return value

    @field_validator("after_store")
    @classmethod
    def _after(cls, value: str) -> str:
        if value not in ("move", "delete"):
            raise ValueError('after_store is "move" or "delete"')
        return value

    @model_validator(mode="after")
    def _archive_elsewhere(self) -> ImapAccount:
        if self.after_store == "move" and self.archive_folder in self.folders:
            raise ValueError("archive_folder must not be one of the folders it drains")
        return self

    @property
    def receipt_address(self) -> str:
        return (self.address or self.username).lower()


class ImapSettings(Strict):
    enabled: bool = False
    poll_seconds: int = Field(default=60, ge=1)
    # Messages fetched and stored per commit (also capped at 32 MiB per batch).
    batch_size: int = Field(default=100, ge=1, le=1000)
    # Stored messages are moved or deleted upstream in groups of this many, and at the end of
    # each round: one MOVE of 1,000 costs the server far less than ten of 100.
    archive_batch: int = Field(default=1000, ge=1, le=5000)
    # After an authentication or certificate failure, wait this long before trying again:
    # hammering a server with a bad password gets the account locked.
    auth_retry_seconds: int = Field(default=300, ge=1)
    # Cap of the exponential backoff (with jitter) between reconnects after network errors.
    max_backoff_seconds: int = Field(default=300, ge=1)
    # Status warns when the upstream mailbox uses this share of its quota.
    quota_warn_percent: int = Field(default=80, ge=1, le=100)
    # A standby instance (another one polls the folder) retries the folder's poller lock
    # this often: the takeover time after the active instance dies (plus
    # database.keepalive_s * 2 when its whole host vanished).
    standby_retry_seconds: int = Field(default=15, ge=1)
    accounts: list[ImapAccount] = Field(default_factory=list)

    @field_validator("accounts")
    @classmethod
    def _unique(cls, value: list[ImapAccount]) -> list[ImapAccount]:
        names = [a.name for a in value]
        if len(names) != len(set(names)):
            raise ValueError("account names must be unique")
        return value


class TwilioSettings(Strict):
    enabled: bool = False
    # The base URL Twilio calls; signatures are computed over it, not over the request URL.
    public_url: str = ""
    api_base_url: str = "https://api.twilio.com"
    account_sid_env: str = "TWILIO_ACCOUNT_SID"
    auth_token_env: str = "TWILIO_AUTH_TOKEN"
    # The number acknowledgements and replies are sent from, in E.164.
    from_number: str = ""


class TwitterSettings(Strict):
    enabled: bool = False
    api_base_url: str = "https://api.twitter.com"
    user_id: str = ""
    mentions_poll_seconds: int = Field(default=60, ge=1)
    dm_poll_seconds: int = Field(default=60, ge=1)
    bearer_token_env: str = "TWITTER_BEARER_TOKEN"
    consumer_key_env: str = "TWITTER_CONSUMER_KEY"
    consumer_secret_env: str = "TWITTER_CONSUMER_SECRET"
    access_token_env: str = "TWITTER_ACCESS_TOKEN"
    access_token_secret_env: str = "TWITTER_ACCESS_TOKEN_SECRET"
    public_replies: bool = True
    # --- issue 9: the Twitter/X connector ---
    # DM events have no since_id: each poll re-reads this far behind the newest event seen,
    # so an event the API lists late is still found; intake drops the repeats.
    dm_overlap_seconds: int = Field(default=300, ge=0)
    # After a 402 "credits depleted" the connector pauses this long before trying again.
    credits_retry_seconds: int = Field(default=3600, ge=1)
    # A standby instance retries the poller lock this often: the takeover time after the
    # active instance dies (plus database.keepalive_s * 2 when its whole host vanished).
    standby_retry_seconds: int = Field(default=15, ge=1)
    # Acknowledgement texts. Placeholders: {reference}, {eta}; the DM text may also use {tag},
    # the reference with the case's secret token. A public reply never carries anything else.
    public_ack_template: str = (
        "Thanks, we have this as case {reference} and expect to reply {eta}. "
        "Please send us a Direct Message to continue in private; "
        "never post account details here."
    )
    dm_ack_template: str = (
        "Thanks for your message. We have opened case {reference} and expect to reply "
        "{eta}. Reply here to add anything. If you email us instead, keep {tag} in the "
        "subject so it reaches the same case."
    )

    @field_validator("public_ack_template")
    @classmethod
    def _public_template(cls, value: str) -> str:
        return _template(
            value, allowed={"reference", "eta"}, limit=CHANNEL_FACTS["twitter"].max_public_text
        )

    @field_validator("dm_ack_template")
    @classmethod
    def _dm_template(cls, value: str) -> str:
        return _template(
            value, allowed={"reference", "eta", "tag"}, limit=CHANNEL_FACTS["twitter"].max_text
        )


def _template(value: str, *, allowed: set[str], limit: int) -> str:
    """A template may use only `allowed` placeholders, so nothing personal can be put in."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from exc
    unknown = fields - allowed
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{sorted(unknown)[0]}}}; allowed: "
            + ", ".join(f"{{{a}}}" for a in sorted(allowed))
        )
    if "reference" not in fields:
        raise ValueError("the template must contain {reference}")
    # Filled in, a reference is ~12 characters and an ETA at most ~70 ("by Wednesday 30
    # September, 13:00 (" and the longest time zone name, normalizer/acks.py describe_eta).
    if len(value) > limit - 90:
        raise ValueError(f"too long: filled in, it must fit in {limit} characters")
    return value


class RedditSettings(Strict):
    enabled: bool = False
    oauth_url: str = "https://oauth.reddit.com"
    reddit_url: str = "https://www.reddit.com"
    subreddits: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    poll_seconds: int = Field(default=60, ge=1)
    user_agent: str = "parity-support/0.1"
    client_id_env: str = "REDDIT_CLIENT_ID"
    client_secret_env: str = "REDDIT_CLIENT_SECRET"
    username_env: str = "REDDIT_USERNAME"
    password_env: str = "REDDIT_PASSWORD"
    public_replies: bool = True
    # --- added with the Reddit connector (issue 10) ---
    # Read the account's inbox (private messages, username mentions, comment replies).
    inbox: bool = True
    # Which listings of each watched subreddit are read.
    watch_submissions: bool = True
    watch_comments: bool = True
    # Each poll reads back this far behind its checkpoint, so an item Reddit indexed late
    # is still seen; what is read twice is recognised at intake.
    overlap_seconds: int = Field(default=120, ge=0)
    # With no checkpoint yet, items older than this are left alone (0: all the listing has).
    initial_lookback_hours: int = Field(default=24, ge=0)
    # Karma is stored as a fact about the identity (never used for ordering). Each lookup
    # costs one request of the rate budget, so only this many new authors per poll.
    fetch_karma: bool = True
    karma_lookups_per_poll: int = Field(default=10, ge=0)
    # The longest one 429 is waited out before the poll gives up until the next one.
    max_rate_wait_seconds: int = Field(default=600, ge=1)
    request_timeout_seconds: int = Field(default=16, ge=1)
    # How often the outbox is checked for acknowledgements and replies to deliver.
    outbox_poll_seconds: float = Field(default=5.0, gt=0)
    max_send_attempts: int = Field(default=8, ge=1)
    # A row still "sending" this long after it was claimed is from a crashed sender: it
    # becomes "unknown" and is checked against Reddit before any retry.
    sending_lease_seconds: int = Field(default=600, ge=0)
    # One instance polls and delivers, holding the reddit poller lock; a standby retries the
    # lock this often: the takeover time after the active instance dies (plus
    # database.keepalive_s * 2 when its whole host vanished).
    standby_retry_seconds: int = Field(default=15, ge=1)
    # New cases are acknowledged only when they are younger than this (no acks for history).
    ack_max_age_hours: int = Field(default=24, ge=1)
    # Public text never carries anything personal: only {reference}, {eta} and {account}.
    public_ack_template: str = (
        "Thanks for flagging this. We have logged it as {reference} and expect to reply "
        "{eta}. Please don't post account details here; send u/{account} a private message "
        "if you need to share them."
    )
    private_ack_subject: str = "[{reference} #{token}] We received your message"
    private_ack_template: str = (
        "Hello u/{username},\n\nthank you for contacting support. Your message is case "
        "{reference}, and we expect to reply {eta}.\n\nTo add anything, reply to this "
        "message and keep the case reference in the subject.\n\nThe support team"
    )

    @field_validator("oauth_url", "reddit_url")
    @classmethod
    def _https_off_loopback(cls, value: str) -> str:
        # Credentials travel to these URLs: plain http only to this machine (a test fake).
        parsed = urlsplit(value)
        if parsed.scheme == "https" or (
            parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")
        ):
            return value.rstrip("/")
        raise ValueError("must be an https:// URL (plain http only for 127.0.0.1 or localhost)")

    @field_validator("subreddits")
    @classmethod
    def _subreddit_names(cls, value: list[str]) -> list[str]:
        names = [v.strip().removeprefix("/").removeprefix("r/") for v in value]
        for name in names:
            if not _SUBREDDIT.fullmatch(name):
                raise ValueError(f"{name!r} is not a subreddit name")
        return names

    @field_validator("public_ack_template")
    @classmethod
    def _public_fields(cls, value: str) -> str:
        if not _template_fields(value) <= {"reference", "eta", "account"}:
            raise ValueError(
                "the public reply may use only {reference}, {eta} and {account}: "
                "it must never carry anything personal or the case token"
            )
        return value

    @field_validator("private_ack_subject", "private_ack_template")
    @classmethod
    def _private_fields(cls, value: str) -> str:
        allowed = {"reference", "token", "eta", "account", "username"}
        if not _template_fields(value) <= allowed:
            raise ValueError("placeholders are {reference}, {token}, {eta}, {account}, {username}")
        return value


def _template_fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from exc


class ConnectorsSettings(Strict):
    smtp: SmtpSettings = SmtpSettings()
    imap: ImapSettings = ImapSettings()
    twilio: TwilioSettings = TwilioSettings()
    twitter: TwitterSettings = TwitterSettings()
    reddit: RedditSettings = RedditSettings()
    web: WebSettings = WebSettings()


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
    # Seconds for connecting and for each SMTP step.
    timeout_s: float = Field(default=60.0, gt=0)

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
        if self.username and self.security == "none" and self.host not in _LOOPBACK:
            raise ValueError("AUTH without TLS is only allowed to a relay on this machine")
        return self


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
