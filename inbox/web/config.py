"""Settings of the agent inbox ([inbox] in settings.toml)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from inbox.accounts import LoginLimits, SessionPolicy
from inbox.casework import FileLimits, Timing
from inbox.config import RoutingRule, Strict


class InboxSettings(Strict):
    # A claimed case stays with its agent this long unless renewed; the web client renews
    # it while the agent works (any action on the case, or the presence heartbeat).
    lease_seconds: int = Field(default=300, ge=30)
    # Someone counts as viewing a case this long after their last heartbeat.
    presence_seconds: int = Field(default=60, ge=10)
    # A session ends after this long without a request, and after session_max_hours anyway.
    session_idle_minutes: int = Field(default=480, ge=5)
    session_max_hours: int = Field(default=72, ge=1)
    # Set true when agents reach the inbox over HTTPS (behind a TLS proxy).
    cookie_secure: bool = False
    cookie_samesite: str = "Strict"
    # Failed logins that cost nothing, per (account, client address) and per client address,
    # within the window; past them each failure doubles the wait before the next try from
    # that address (login_delay_seconds, then twice that, ... up to login_max_delay_seconds).
    # Nobody's failures ever block the right password from another address.
    login_max_failures_per_account: int = Field(default=5, ge=1)
    login_max_failures_per_ip: int = Field(default=20, ge=1)
    login_window_minutes: int = Field(default=15, ge=1)
    login_delay_seconds: int = Field(default=1, ge=1, le=3600)
    login_max_delay_seconds: int = Field(default=900, ge=1, le=86400)
    # Behind a reverse proxy every client has the proxy's address: then take the client
    # address from the last X-Forwarded-For entry (which the proxy wrote). Only then.
    trust_forwarded_for: bool = False
    # The domain of the Message-IDs of replies; empty means connectors.smtp.hostname.
    message_id_domain: str = ""
    queue_page_max: int = Field(default=200, ge=1, le=1000)
    # After resolving or replying, where an agent goes: "stay" on the case, or "next" (the
    # next case, by claim-next). Each agent may choose otherwise in their own settings.
    after_done: Literal["stay", "next"] = "stay"
    # The search box's page: at most this many cases.
    search_page_max: int = Field(default=50, ge=1, le=200)

    # Files an agent may attach to one reply, and their total size in bytes. Mail relays
    # commonly refuse messages over 10-25 MB, and base64 makes a file a third larger.
    attachments_max_count: int = Field(default=10, ge=0, le=100)
    attachments_max_bytes: int = Field(default=10 * 1024 * 1024, ge=0, le=100 * 1024 * 1024)
    # Routing rules ([[inbox.routing]]): the first that matches a new case sends it to its
    # team (docs/agents/teams.md). The normalizer applies them; none by default.
    routing: list[RoutingRule] = Field(default_factory=list, max_length=500)

    # Notifications: a case of mine "about to breach" when its due time is this near (or
    # past); an agent's email digest (off until the agent turns it on) lists unread
    # notifications older than digest_after_minutes, at most once per digest_period_minutes.
    notify_breach_minutes: int = Field(default=30, ge=1, le=24 * 60)
    digest_after_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    digest_period_minutes: int = Field(default=240, ge=5, le=7 * 24 * 60)
    # How often `parity run` looks for breaches and digests to send (0: never).
    notify_sweep_seconds: int = Field(default=60, ge=0, le=3600)
    # Open pages get their notifications over a live stream (/events/notifications); only
    # while it is down do they ask /api/notifications, this often.
    notify_fallback_poll_seconds: int = Field(default=60, ge=5, le=24 * 3600)

    @field_validator("cookie_samesite")
    @classmethod
    def _samesite(cls, value: str) -> str:
        if value not in ("Strict", "Lax"):
            raise ValueError('cookie_samesite is "Strict" or "Lax"')
        return value

    def timing(self) -> Timing:
        return Timing(
            lease=timedelta(seconds=self.lease_seconds),
            presence=timedelta(seconds=self.presence_seconds),
        )

    def breach_within(self) -> timedelta:
        return timedelta(minutes=self.notify_breach_minutes)

    def file_limits(self) -> FileLimits:
        return FileLimits(
            max_count=self.attachments_max_count, max_bytes=self.attachments_max_bytes
        )

    def login_limits(self) -> LoginLimits:
        return LoginLimits(
            per_account=self.login_max_failures_per_account,
            per_ip=self.login_max_failures_per_ip,
            window=timedelta(minutes=self.login_window_minutes),
            delay=timedelta(seconds=self.login_delay_seconds),
            max_delay=timedelta(
                seconds=max(self.login_delay_seconds, self.login_max_delay_seconds)
            ),
        )

    def session_policy(self) -> SessionPolicy:
        return SessionPolicy(
            idle=timedelta(minutes=self.session_idle_minutes),
            lifetime=timedelta(hours=self.session_max_hours),
        )
