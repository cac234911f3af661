"""Load settings.toml (or the file PARITY_SETTINGS names) into validated models.

A file gives only what it changes: every key it leaves out keeps its built-in default, and
the built-in defaults are exactly what the shipped settings.toml says (a test holds them
equal), so an operator's own short file never loses a shipped rule.

An unknown key or a wrong type stops start-up with a message naming it: a typo that
silently meant "use the default" would be found only when mail went missing.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from connectors.config import OutboxSettings
from connectors.oauth import OAuthSettings
from connectors.registry import REGISTRY, ConnectorsSettings
from inbox.alerts import AlertSettings
from inbox.config import DatabaseSettings, SlaSettings, StoreSettings, Strict, ThreadingSettings
from inbox.csat import CsatSettings
from inbox.report import AuditSettings
from inbox.web.config import InboxSettings
from normalizer.acks import AckSettings
from normalizer.config import NormalizerSettings
from normalizer.mailauth import MailAuthSettings

ENV = "PARITY_SETTINGS"
DEFAULT_FILE = "settings.toml"


class LoggingSettings(Strict):
    level: str = "INFO"
    # JSON lines, one object per record, for log shippers.
    json_lines: bool = False

    @field_validator("level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("level is one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value.upper()


class RetentionSettings(Strict):
    """[retention]: how long the content of resolved cases is kept (docs/operations/erasure.md)."""

    # Days after a case is resolved before its content is erased (as by `parity contacts
    # erase`, per case; the timing facts stay). 0: kept for ever.
    resolved_case_days: int = Field(default=0, ge=0, le=36500)
    # Per channel overrides of resolved_case_days, e.g. {sms = 30}; 0 keeps that channel's.
    channels: dict[str, int] = Field(default_factory=dict)
    # `parity run` applies the policy this often (seconds; 0: only `parity retention run`).
    interval_s: int = Field(default=3600, ge=0, le=7 * 86400)
    # Files uploaded for a reply that was never sent are removed this many hours after they
    # were uploaded or their draft was last touched, whichever is later (0: kept for ever).
    unsent_upload_hours: int = Field(default=24, ge=0, le=24 * 3650)

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: dict[str, int]) -> dict[str, int]:
        from normalizer.message import CHANNELS

        for name, days in value.items():
            if name not in CHANNELS:
                raise ValueError(f"unknown channel {name!r}: one of {', '.join(CHANNELS)}")
            if not 0 <= days <= 36500:
                raise ValueError(f"{name}: days between 0 and 36500")
        return value


class Settings(Strict):
    database: DatabaseSettings = DatabaseSettings()
    sla: SlaSettings = SlaSettings()
    threading: ThreadingSettings = ThreadingSettings()
    normalizer: NormalizerSettings = NormalizerSettings()
    logging: LoggingSettings = LoggingSettings()
    connectors: ConnectorsSettings = Field(default_factory=ConnectorsSettings)
    # The agent inbox (accounts, sessions, leases) served by the web connector.
    inbox: InboxSettings = InboxSettings()
    acknowledgements: AckSettings = Field(default_factory=AckSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    # The manager audit report (issue 12): the parity ratio threshold.
    audit: AuditSettings = Field(default_factory=AuditSettings)
    # Sender authentication of inbound email (SPF, DKIM, DMARC, ARC): DNS and trust.
    mail_auth: MailAuthSettings = Field(default_factory=MailAuthSettings)
    # OAuth2 grants of mailboxes (Google, Microsoft, generic), refreshed before expiry.
    oauth: OAuthSettings = Field(default_factory=OAuthSettings)
    # Erasure of resolved cases' content after a number of days (GDPR storage limitation).
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @model_validator(mode="after")
    def _grants_exist(self) -> Settings:
        """Every OAuth account a mailbox or the relay names is configured: a typo would
        otherwise show only as a mailbox that never signs in."""
        known = {a.name for a in self.oauth.accounts}
        named = [
            (f"connectors.imap.accounts ({a.name})", a.grant)
            for a in self.connectors.imap.accounts
            if a.auth == "oauth2"
        ]
        if self.outbox.email.oauth_account:
            named.append(("outbox.email", self.outbox.email.oauth_account))
        for where, name in named:
            if name not in known:
                raise ValueError(f"{where}: no [[oauth.accounts]] entry named {name!r}")
        return self

    @model_validator(mode="after")
    def _sends_within_the_lease(self) -> Settings:
        """No connector's sending attempt outlasts the outbox's sending lease (each
        connector's registry entry says, `ConnectorSpec.lease_problem`)."""
        for spec in REGISTRY:
            problem = spec.lease_problem(spec.section(self.connectors), self.outbox.lease_seconds)
            if problem is not None:
                raise ValueError(problem)
        return self

    # The file these settings were read from, None for the built-in defaults alone.
    _source: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str | None:
        return self._source

    def sources(self) -> str:
        """What was read, for the banner, `settings show` and the doctor: a file is laid
        over the built-in defaults, which are also what the shipped settings.toml says."""
        if self._source is None:
            return "the built-in defaults (no settings file)"
        return f"{self._source}, over the built-in defaults"

    # Satisfaction surveys after a case is resolved (issue 23).
    csat: CsatSettings = Field(default_factory=CsatSettings)
    # Alerts to managers by email and signed webhook (issue 23).
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    def store(self) -> StoreSettings:
        return StoreSettings(
            database=self.database,
            sla=self.sla,
            threading=self.threading,
            routing=self.inbox.routing,
        )


class SettingsError(Exception):
    """Settings that cannot be used; the message names the file and every bad key."""


def settings_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get(ENV) or DEFAULT_FILE)


def load(path: str | Path | None = None, *, missing_ok: bool = True) -> Settings:
    file = settings_path(str(path) if path else None)
    if not file.exists():
        if missing_ok and path is None and ENV not in os.environ:
            return Settings()
        raise SettingsError(f"{file}: settings file not found")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{file}: not valid TOML: {exc}") from exc
    settings = parse(data, str(file))
    settings._source = str(file)
    return settings


def parse(data: dict[str, Any], source: str = "settings") -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from exc


def _describe(error: Any) -> str:
    location = ".".join(str(p) for p in error["loc"])
    if not location:
        # A check across sections (a model validator): its message names the settings.
        return str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown key {location!r}"
    given = error.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"{location}: {error['msg']}{shown}"
