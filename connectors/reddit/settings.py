"""The [connectors.reddit] section: watched subreddits and the account's inbox."""

from __future__ import annotations

import re
import string
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from inbox.config import Strict
from inbox.i18n import N_

_SUBREDDIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{1,20}")


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
    # An acknowledgement not sent within this many hours of being queued is expired by the
    # outbox drainer, never sent late (no acks for history).
    ack_max_age_hours: int = Field(default=24, ge=1)
    # Public text never carries anything personal: only {reference}, {eta} and {account}.
    # The defaults are said in the case's language (inbox/i18n.py); a text the operator wrote
    # is sent as written. Private texts may use {status_url} (the status page, with the
    # token); the public reply may not.
    public_ack_template: str = N_(
        "Thanks for flagging this. We have logged it as {reference} and expect to reply "
        "{eta}. Please don't post account details here; send u/{account} a private message "
        "if you need to share them."
    )
    private_ack_subject: str = N_("[{reference} #{token}] We received your message")
    private_ack_template: str = N_(
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
        allowed = {"reference", "token", "eta", "account", "username", "status_url"}
        if not _template_fields(value) <= allowed:
            raise ValueError(
                "placeholders are {reference}, {token}, {eta}, {account}, {username}, {status_url}"
            )
        return value


def _template_fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from exc
