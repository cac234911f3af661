"""The connector contract: what every connector declares, so the composition root only iterates.

A connector is one `ConnectorSpec` in connectors/registry.py. It declares its name (its
channels come from the channel registry, inbox/channels.py), its settings model (the
`[connectors.<name>]` section), its secrets (the `*_env` variable names), what it needs to
run (`availability`), the hosts `parity doctor` checks it can reach (`endpoints`), its
channels' parsers, and it builds its intake tasks, its HTTP routes and its sender. The
daemon, doctor, status and CLI in parity/ never name a connector: they iterate over the
registry. The shape follows the
known plugin patterns: a Singer stream declares its settings and discovery, an Apprise
plugin its secrets and transport, an aiosmtpd handler is handed to a server it does not own.

Nothing here imports a connector's library: a spec's functions import it when they build,
so a missing library disables only that connector (its `availability` says so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import Engine

from connectors.base import Connector
from connectors.config import OutboxSettings
from connectors.oauth import TokenSource
from connectors.outbox import OutboxDrainer
from inbox.channels import channels_of
from inbox.config import SlaSettings, Strict
from inbox.web.routes import Route
from normalizer.ack_plan import AckRoute
from normalizer.intake import IntakeWriter
from normalizer.parse import Parser

S = TypeVar("S", bound=Strict)

# Whether a connector can run here, and when not, why (names only, never a secret's value).
Availability = tuple[bool, str | None]
AVAILABLE: Availability = (True, None)


@dataclass(frozen=True)
class Endpoint:
    """A host a connector talks to: `parity doctor` tries a TCP connect to it."""

    what: str  # "IMAP account support", "X API"
    host: str
    port: int


def url_endpoint(what: str, url: str) -> Endpoint:
    """The endpoint of a base URL: its host, and its port or the scheme's default."""
    parts = urlsplit(url)
    return Endpoint(
        what, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    )


@dataclass(frozen=True)
class Runtime:
    """What the composition root hands a connector when it builds: shared parts, no settings
    file (a connector reads its own section; the few shared settings are named here)."""

    engine: Engine
    # This process's name in poller locks, outbox claims and status ("host:pid").
    instance: str
    # Intake: the writer every connector submits raw input to, and the normalizer's wake-up.
    writer: IntakeWriter
    on_stored: Callable[[int], None]
    # The outbox retry policy and the email relay ([outbox]).
    outbox: OutboxSettings
    sla: SlaSettings
    # The business hours' time zone, in which a promised time is worded.
    timezone: str
    environ: Mapping[str, str]
    # How long after a case is resolved a message reopens it ([threading]).
    reopen_window_days: int = 14
    # OAuth2 grants by [[oauth.accounts]] name, one source each shared by every connector
    # of this process (IMAP sign-in, the relay's XOAUTH2 or API sends).
    token_sources: Mapping[str, TokenSource] = field(default_factory=dict)


@dataclass
class Built:
    """What a connector built: supervised tasks and the HTTP routes it adds to the listener."""

    tasks: list[Connector] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)


@dataclass(frozen=True)
class Sender(Generic[S]):
    """A connector's way out: outbox drainers for its channels.

    Senders with the same `key` are built once (email leaves through one relay whichever
    email connector took the mail in). A sender with `needs_intake` False runs whenever its
    connector is selected, even where the intake side cannot run here.
    """

    key: str
    # Names it in the log line saying why it does not run ("email outbox not running: ...").
    label: str
    needs_intake: bool
    availability: Callable[[S, Runtime], Availability]
    build: Callable[[S, Runtime], list[OutboxDrainer]]


def _no_secrets(_section: Any) -> tuple[str, ...]:
    return ()


def _no_endpoints(_section: Any) -> list[Endpoint]:
    return []


def _no_ack_routes(_section: Any) -> Mapping[str, AckRoute]:
    return {}


def _no_checks(_section: Any, _environ: Mapping[str, str]) -> list[str]:
    return []


def _no_lease_problem(_section: Any, _lease_seconds: int) -> str | None:
    return None


def _always(_section: Any, _environ: Mapping[str, str]) -> Availability:
    return AVAILABLE


@dataclass(frozen=True)
class ConnectorSpec(Generic[S]):
    """One connector's declaration: every part the composition root needs, nothing else."""

    name: str
    # The `[connectors.<name>]` section's model (connectors/<name>/settings.py).
    settings_model: type[S]
    # Builds what runs: intake tasks and HTTP routes. Called only when `availability` agrees.
    build: Callable[[S, Runtime], Built]
    # What it needs beyond being enabled: library importable, settings, credentials present.
    availability: Callable[[S, Mapping[str, str]], Availability] = _always
    # The environment variables holding its secrets (names; values stay in the environment).
    secrets: Callable[[S], tuple[str, ...]] = _no_secrets
    endpoints: Callable[[S], list[Endpoint]] = _no_endpoints
    # What `parity doctor` asks the provider once its hosts answer (a token still valid):
    # each problem found, in words that name no secret's value.
    online_checks: Callable[[S, Mapping[str, str]], list[str]] = _no_checks
    sender: Sender[S] | None = None
    # It serves HTTP: the listener (the agent inbox, every connector's routes) starts when
    # any connector that does is available.
    serves_http: bool = False
    # Its pending intake rows are reported as `backlog` in its heartbeat (a server that
    # accepts faster than the store writes; pollers checkpoint instead).
    reports_backlog: bool = False
    # Its part of the start-up line ("SMTP on 127.0.0.1:2525 for ..."), when it runs.
    describe: Callable[[S], str] | None = None
    # The parser of each channel it brings in: a pure module-level function in its package
    # (connectors/<name>/parse.py), handed to the normalizer by the composition root.
    parsers: Mapping[str, Parser] = field(default_factory=dict)
    # How each of its channels acknowledges a new case, when the route depends on its own
    # settings or live state (a pure function per channel, normalizer/ack_plan.py
    # `AckRoute`); none means the channel is acknowledged from [acknowledgements]. Handed
    # to the worker by the composition root, like the parsers.
    ack_routes: Callable[[S], Mapping[str, AckRoute]] = _no_ack_routes
    # Why one of its sending attempts could outlast the outbox's sending lease
    # (`[outbox] lease_seconds`, given), or None: past the lease a row still being sent is
    # taken for a dead process's and may go twice. The settings refuse to load on an answer
    # (parity/settings.py). Only a sender that waits on its own clock, beyond its HTTP
    # client's timeouts, needs one (X's wait for media processing).
    lease_problem: Callable[[S, int], str | None] = _no_lease_problem

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels it brings in, from the channel registry (none for the web inbox)."""
        return channels_of(self.name)

    def section(self, connectors: Strict) -> S:
        """Its settings section out of `[connectors]`; the registry test checks the type."""
        value = getattr(connectors, self.name)
        assert isinstance(value, self.settings_model)
        return value

    def check(self, connectors: Strict, environ: Mapping[str, str]) -> Availability:
        """Available, or why not: switched off in settings first, then its own needs."""
        section = self.section(connectors)
        if not getattr(section, "enabled", True):
            return False, "disabled in settings"
        return self.availability(section, environ)
