"""Settings of the store, the SLA policy and case threading, as validated models.

The composition root loads settings.toml into these models; every model forbids unknown keys
so that a typo stops start-up with its name instead of silently meaning the default.
"""

from __future__ import annotations

import re
from datetime import date, time

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inbox.channels import CHANNEL_NAMES
from inbox.labels import BadTag, normalize_field, normalize_tags
from inbox.secrets import Secret, from_env


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DatabaseSettings(Strict):
    url: str = "sqlite:///var/parity.db"
    # Name of an environment variable whose value replaces `url`, for URLs carrying a password.
    url_env: str = "PARITY_DATABASE_URL"
    # How long a writer waits for a lock before intake answers "try again later" (SMTP 451).
    busy_timeout_ms: int = Field(default=5000, ge=0)
    # PostgreSQL: TCP keepalives so a dead peer's locks free in about this many seconds.
    keepalive_s: int = Field(default=30, ge=5)
    # SQLite: page cache per connection, in MiB. The default is SQLite's own: at 1,000,000
    # open cases 64 MiB made no measurable difference to suggestions (bench/suggestions.py),
    # and every pooled connection may fill its cache. Raise it for a store much larger than
    # memory's page cache.
    sqlite_cache_mb: int = Field(default=2, ge=1)

    def resolved_url(self, environ: dict[str, str] | None = None) -> str | Secret:
        secret = from_env(self.url_env, environ)
        return secret if secret is not None else self.url


def regular_expression(value: str) -> str:
    """A setting's pattern, refused at start-up when it does not compile (content and
    routing rules share this check)."""
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from exc
    return value


class ContentRule(Strict):
    """A content rule may bring a case's due time forward; it never pushes it back. It may
    also tag a new case and set its custom fields (issue 22); a rule does at least one."""

    name: str
    pattern: str
    due_within_minutes: int | None = Field(default=None, ge=1)
    tags: list[str] = Field(default_factory=list, max_length=20)
    fields: dict[str, str] = Field(default_factory=dict, max_length=20)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        try:
            return normalize_tags(value)
        except BadTag as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            pairs = [normalize_field(k, v) for k, v in value.items()]
        except BadTag as exc:
            raise ValueError(str(exc)) from exc
        return {k: v for k, v in pairs if v is not None}

    @model_validator(mode="after")
    def _does_something(self) -> ContentRule:
        if self.due_within_minutes is None and not self.tags and not self.fields:
            raise ValueError(f"rule {self.name!r} sets no due time, tags or fields")
        return self

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return regular_expression(value)


class BusinessHours(Strict):
    enabled: bool = False
    timezone: str = "UTC"
    # ISO weekdays, 1 = Monday.
    days: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    start: time = time(9, 0)
    end: time = time(17, 0)
    holidays: list[date] = Field(default_factory=list)

    @field_validator("days")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if not value or any(d < 1 or d > 7 for d in value):
            raise ValueError("days are ISO weekdays from 1 (Monday) to 7 (Sunday)")
        return value


# The shipped content rule. It is a default of the code, not only a line of the shipped
# settings.toml: an operator's own file that sets a port (and no rules) must not lose it.
# `rules = []` in [sla] turns it off.
ACCOUNT_TAKEOVER = ContentRule(
    name="account takeover",
    pattern=r"(?i)\b(hacked|locked out|account (was )?(stolen|compromised))\b",
    due_within_minutes=60,
)


class SlaSettings(Strict):
    # One target for every channel: the queue never asks which channel a case came from.
    first_response_minutes: int = Field(default=240, ge=1)
    business_hours: BusinessHours = BusinessHours()
    rules: list[ContentRule] = Field(default_factory=lambda: [ACCOUNT_TAKEOVER.model_copy()])


class ThreadingSettings(Strict):
    # A message for a case resolved less than this long ago reopens it; later ones start a
    # new case linked to it.
    reopen_window_days: int = Field(default=14, ge=0)


AUTO_ASSIGN_MODES = ("off", "round_robin", "load_balanced")
TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class RoutingRule(Strict):
    """`[[inbox.routing]]`: a new case whose facts meet every condition the rule sets goes
    to `team` (issue 22). An empty condition matches anything; the first rule that
    matches wins, in the file's order. Conditions on one channel sit beside conditions on
    all: the rule names channels only as data, never in code."""

    name: str = Field(min_length=1, max_length=64)
    team: str
    # Any of these channels (the registry's names); empty: every channel.
    channels: list[str] = Field(default_factory=list, max_length=50)
    # Any of these case languages (inbox/i18n.py codes); empty: every language.
    languages: list[str] = Field(default_factory=list, max_length=50)
    # A regular expression searched in the subject and text; empty: no condition.
    pattern: str = ""
    # Any of the addresses the message came to (a support mailbox, our phone number or
    # handle), compared case-insensitively; empty: any.
    addresses: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("team")
    @classmethod
    def _team(cls, value: str) -> str:
        name = value.strip().lower()
        if not TEAM_NAME.match(name):
            raise ValueError("a team name is lower-case letters, digits, '.', '_' or '-'")
        return name

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in CHANNEL_NAMES]
        if unknown:
            raise ValueError(f"unknown channel {unknown[0]!r}; one of {', '.join(CHANNEL_NAMES)}")
        return value

    @field_validator("languages", "addresses")
    @classmethod
    def _folded(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value if v.strip()]

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return regular_expression(value)


class StoreSettings(Strict):
    database: DatabaseSettings = DatabaseSettings()
    sla: SlaSettings = SlaSettings()
    threading: ThreadingSettings = ThreadingSettings()
    # Routing rules, from [[inbox.routing]]: the normalizer applies them as a case opens.
    routing: list[RoutingRule] = Field(default_factory=list, max_length=500)
