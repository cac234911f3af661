"""`parity doctor`: what is wrong with this installation, and what to do about each thing.

Checks the settings file, the database and its migrations, each enabled connector's
credentials and whether its hosts answer (a TCP connect with a short timeout), the email
relay and the audit key. Secrets are never printed: only the names of their variables.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.engine import make_url

from connectors.registry import REGISTRY, availability
from inbox import audit, migrate, tokens
from inbox.db import make_engine
from inbox.models import utcnow
from inbox.secrets import Secret, mask
from parity import backup
from parity.settings import Settings, SettingsError, load

CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Finding:
    area: str  # "settings", "database", "connector imap", "audit", ...
    problem: str
    fix: str
    fatal: bool = True  # False: a warning, the exit status stays 0


Connect = Callable[[str, int], str | None]


def tcp_connect(host: str, port: int) -> str | None:
    """None when something listens at host:port, else why not."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"


def check_settings(path: str | None) -> tuple[Settings | None, list[Finding]]:
    try:
        return load(path), []
    except SettingsError as exc:
        return None, [Finding("settings", str(exc), "correct the keys named above")]


def check_database(settings: Settings) -> list[Finding]:
    db = settings.database
    resolved = db.resolved_url()
    url = make_url(resolved.reveal() if isinstance(resolved, Secret) else resolved)
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).exists():
        # Connecting would create an empty file: say so instead.
        return [
            Finding(
                "database",
                f"SQLite file {file} does not exist",
                "run `parity db upgrade` (or fix [database] url)",
            )
        ]
    try:
        engine = make_engine(
            db.resolved_url(),
            busy_timeout_ms=db.busy_timeout_ms,
            sqlite_cache_mb=db.sqlite_cache_mb,
        )
    except Exception as exc:
        return [Finding("database", f"unusable URL: {mask(str(exc))}", "fix [database] url")]
    try:
        current = migrate.current(engine)
    except Exception as exc:
        return [
            Finding(
                "database",
                f"cannot connect: {type(exc).__name__}: {mask(str(getattr(exc, 'orig', exc)))}",
                f"start the database or fix [database] url (or ${db.url_env})",
            )
        ]
    finally:
        engine.dispose()
    head = migrate.head()
    if current != head:
        return [
            Finding(
                "database",
                f"schema at migration {current or 'none'}, code expects {head}",
                "run `parity db upgrade`",
            )
        ]
    return []


def check_connectors(settings: Settings, connect: Connect) -> list[Finding]:
    findings = []
    for spec in REGISTRY:
        section = spec.section(settings.connectors)
        if not section.enabled:
            continue
        area = f"connector {spec.name}"
        ok, why = availability(settings.connectors, spec.name, os.environ)
        if not ok:
            findings.append(Finding(area, why or "cannot run", "set what is named, or disable it"))
            continue
        reachable = True
        for endpoint in spec.endpoints(section):
            error = connect(endpoint.host, endpoint.port)
            if error is not None:
                reachable = False
                host, port = endpoint.host, endpoint.port
                findings.append(
                    Finding(
                        area,
                        f"{endpoint.what}: cannot reach {host}:{port} ({error})",
                        "check the host name, port and firewall",
                    )
                )
        if reachable:
            # Every host answers: ask the provider what only it knows (a token's validity).
            for problem in spec.online_checks(section, os.environ):
                findings.append(Finding(area, problem, "renew the token named above"))
    relay = settings.outbox.email
    if relay.enabled and relay.host:
        error = connect(relay.host, relay.port)
        if error is not None:
            findings.append(
                Finding(
                    "outbox email",
                    f"SMTP relay {relay.host}:{relay.port} unreachable ({error})",
                    "fix [outbox.email] host/port; email stays queued until then",
                )
            )
    elif relay.enabled:
        findings.append(
            Finding(
                "outbox email",
                "no relay configured: acknowledgements and replies stay queued",
                "set [outbox.email] host",
                fatal=False,
            )
        )
    return findings


def check_audit(settings: Settings) -> list[Finding]:
    keyed = audit.key_configured()
    if not settings.audit.allow_unkeyed:
        if keyed:
            return []
        return [
            Finding(
                "audit",
                f"{audit.KEY_ENV} is not set: `parity run` and every command that writes "
                "the audit log refuse to start",
                f"set {audit.KEY_ENV} to a long random value in the environment "
                "(`openssl rand -hex 32`); on a development machine only, "
                "[audit] allow_unkeyed = true",
            )
        ]
    if keyed:
        return [
            Finding(
                "audit",
                "[audit] allow_unkeyed = true is a development setting (unused while "
                f"{audit.KEY_ENV} is set)",
                "remove allow_unkeyed from [audit]",
                fatal=False,
            )
        ]
    return [
        Finding(
            "audit",
            f"[audit] allow_unkeyed = true and {audit.KEY_ENV} is not set: a development "
            "setting; the audit log is chained with a public key and detects accidents, "
            "not forgery",
            f"set {audit.KEY_ENV} to a long random value and remove allow_unkeyed",
            fatal=False,
        )
    ]


# A store nobody has backed up for longer than this is worth a warning (a daily backup
# that ran late is not).
BACKUP_STALE_HOURS = 48.0


def backup_findings(record: dict[str, Any] | None, now: datetime) -> list[Finding]:
    """Pure: what the store's record of its newest `parity backup` says to the doctor."""
    if record is None:
        return [
            Finding(
                "backup",
                "no backup recorded (`parity backup` keeps a record in the store)",
                "run `parity backup FILE` regularly (docs: operations/backups)",
                fatal=False,
            )
        ]
    age = backup.backup_age_hours(record, now)
    if age > BACKUP_STALE_HOURS:
        return [
            Finding(
                "backup",
                f"the newest backup ({record['file']}) is {age:.0f} h old",
                "run `parity backup FILE`, and check what schedules it",
                fatal=False,
            )
        ]
    return []


def check_backup(settings: Settings) -> list[Finding]:
    db = settings.database
    engine = make_engine(db.resolved_url(), busy_timeout_ms=db.busy_timeout_ms)
    try:
        return backup_findings(backup.last_backup(engine), utcnow())
    finally:
        engine.dispose()


def check_oauth(settings: Settings, environ: dict[str, str] | None = None) -> list[Finding]:
    """Each OAuth account: the key to read its grant, the grant itself, where alerts go."""
    oauth = settings.oauth
    if not oauth.accounts:
        return []
    findings: list[Finding] = []
    problem = tokens.key_problem(environ)
    if problem is not None:
        findings.append(
            Finding(
                "oauth",
                f"{problem}: the stored grants cannot be read or written",
                f"set {tokens.KEY_ENV} to a long random value (`openssl rand -hex 32`), the "
                "same on every instance",
            )
        )
    if not oauth.alert_to:
        findings.append(
            Finding(
                "oauth",
                "[oauth] alert_to is empty: nobody is told when a mailbox's sign-in fails",
                "set [oauth] alert_to to the operators' address",
                fatal=False,
            )
        )
    db = settings.database
    try:
        engine = make_engine(db.resolved_url(), busy_timeout_ms=db.busy_timeout_ms)
        try:
            stored = tokens.statuses(engine)
        finally:
            engine.dispose()
    except Exception:  # check_database reports the store itself
        return findings
    for account in oauth.accounts:
        area = f"oauth {account.name}"
        fix = f"run `parity mailbox authorize {account.name}`"
        grant = stored.get(account.name)
        if grant is None:
            findings.append(Finding(area, "not authorized: no grant is stored", fix))
        elif grant["status"] != tokens.OK:
            reason = mask(grant["reason"] or "")
            findings.append(
                Finding(area, f"{grant['status']} since {grant['failed_at']}: {reason}", fix)
            )
    return findings


def diagnose(path: str | None, connect: Connect = tcp_connect) -> list[Finding]:
    settings, findings = check_settings(path)
    if settings is None:
        return findings
    database = check_database(settings)
    findings += database
    if not database:  # reachable and migrated
        findings += check_backup(settings)
    findings += check_connectors(settings, connect)
    findings += check_audit(settings)
    findings += check_oauth(settings)
    return findings


def report(path: str | None, out: TextIO | None = None, connect: Connect = tcp_connect) -> int:
    """Print each finding with its fix; 1 when any is a problem, 0 when only warnings."""
    out = out or sys.stdout  # looked up now: tests and callers may have replaced it
    findings = diagnose(path, connect)
    shown = Path(path).name if path else "settings"
    for f in findings:
        print(f"{'PROBLEM' if f.fatal else 'warning'} [{f.area}] {f.problem}", file=out)
        print(f"    fix: {f.fix}", file=out)
    problems = sum(f.fatal for f in findings)
    if problems:
        print(f"{problems} problem(s) found with {shown}", file=out)
        return 1
    settings, _ = check_settings(path)
    if settings is not None:
        print(f"settings read from {settings.sources()}", file=out)
    print(f"no problems found with {shown}", file=out)
    return 0
