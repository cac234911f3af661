"""Load settings.toml (or the file PARITY_SETTINGS names) into validated models.

An unknown key or a wrong type stops start-up with a message naming it: a typo that
silently meant "use the default" would be found only when mail went missing.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from connectors.config import OutboxSettings
from connectors.registry import ConnectorsSettings
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
    # Satisfaction surveys after a case is resolved (issue 23).
    csat: CsatSettings = Field(default_factory=CsatSettings)
    # Alerts to managers by email and signed webhook (issue 23).
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    def store(self) -> StoreSettings:
        return StoreSettings(database=self.database, sla=self.sla, threading=self.threading)


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
    return parse(data, str(file))


def parse(data: dict[str, Any], source: str = "settings") -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from exc


def _describe(error: Any) -> str:
    location = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {location!r}"
    given = error.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"{location}: {error['msg']}{shown}"
