"""Connector status from connector_state, as `parity connectors status` and /healthz show it.

Every instance writes its heartbeat to the shared store, so any process (a CLI, any web
instance) reads the same picture of all of them.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from connectors.registry import CONNECTORS, availability
from inbox import queries, tokens
from inbox.db import read
from inbox.models import ConnectorState, Intake, utcnow
from parity.settings import Settings

# How often `parity run` writes each connector's state (parity/daemon.py). Defined here, not
# there, so that status (which the daemon's /healthz uses) does not import the daemon.
HEARTBEAT_S = 5.0
# A connector's heartbeat older than this means its process is gone.
STALE_AFTER = timedelta(seconds=HEARTBEAT_S * 3)
# connector_state's name for a normalizer worker process's heartbeat (parity/workers.py):
# not a connector, so connector_status leaves its rows out.
NORMALIZER = "normalizer"


def worker_status(engine: Engine) -> list[dict[str, Any]]:
    """Every normalizer worker process seen lately, on any node, oldest heartbeat first."""
    now = utcnow()
    with read(engine) as conn:
        rows = list(
            conn.execute(
                select(ConnectorState)
                .where(ConnectorState.connector == NORMALIZER)
                .order_by(ConnectorState.heartbeat_at)
            )
        )
    return [
        {
            "instance": r.instance,
            "running": bool(r.running and now - r.heartbeat_at < STALE_AFTER),
            "heartbeat_at": queries.iso(r.heartbeat_at),
            "last_success_at": queries.iso(r.last_success_at),
            "last_error": r.last_error,
            "processed": (r.details or {}).get("processed", 0),
        }
        for r in rows
        # A worker that stopped an hour ago is history, not status.
        if now - r.heartbeat_at < max(STALE_AFTER, timedelta(hours=1))
    ]


def connector_status(settings: Settings, engine: Engine) -> list[dict[str, Any]]:
    """Each connector: enabled or why not, running, last success, backlog and last error."""
    now = utcnow()
    with read(engine) as conn:
        rows = list(conn.execute(select(ConnectorState).order_by(ConnectorState.heartbeat_at)))
        pending = dict(
            conn.execute(
                select(Intake.connector, func.count())
                .where(Intake.state == "pending")
                .group_by(Intake.connector)
            ).all()
        )
    result = []
    for name in CONNECTORS:
        enabled, why = availability(settings.connectors, name, os.environ)
        instances = [
            {
                "instance": r.instance,
                "alive": now - r.heartbeat_at < STALE_AFTER,
                "running": bool(r.running and now - r.heartbeat_at < STALE_AFTER),
                "heartbeat_at": queries.iso(r.heartbeat_at),
                "last_success_at": queries.iso(r.last_success_at),
                "last_error": r.last_error,
                "last_error_at": queries.iso(r.last_error_at),
                "restarts": r.restarts,
                "details": r.details,
            }
            for r in rows
            if r.connector == name
        ]
        live = [i for i in instances if i["running"]]
        if live and not enabled:
            # This process may lack the connector's environment (another container has it);
            # an instance that runs it proves it is enabled there.
            enabled, why = True, None
        # A connector that turned itself off (e.g. refused credentials) says so, until an
        # instance started later reports otherwise.
        latest = (instances[-1]["details"] or {}) if instances else {}
        if enabled and latest.get("disabled_reason"):
            enabled, why = False, str(latest["disabled_reason"])
        successes = [i["last_success_at"] for i in instances if i["last_success_at"]]
        errors = sorted(
            (i for i in instances if i["last_error"]), key=lambda i: i["last_error_at"] or ""
        )
        entry: dict[str, Any] = {
            "name": name,
            "enabled": enabled,
            "disabled_reason": why,
            "running": bool(live),
            "last_success_at": max(successes) if successes else None,
            "backlog": pending.get(name, 0),
            "last_error": errors[-1]["last_error"] if errors else None,
            # Crashes survived by the processes alive now (each restarts with backoff).
            "restarts": sum(i["restarts"] for i in instances if i["alive"]),
            "instances": instances,
        }
        # Per-account status (IMAP: upstream backlog, quota, last auth error) as the running
        # instances report it, or as the last instances seen did when none runs.
        accounts: dict[str, Any] = {}
        for instance in live or instances:  # oldest heartbeat first: newer ones overwrite
            accounts.update((instance["details"] or {}).get("accounts") or {})
        if accounts:
            entry["accounts"] = accounts
        result.append(entry)
    return result


# Health is public: no customer data. Connector errors can quote an address or a number
# (a refused recipient, an SMS sender), so strings are scrubbed of both and kept short.
_ADDRESS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
# Health's own figures look like phone numbers to a digit pattern: an ISO time
# ("2026-12-07T23:45:13Z"), a listening address ("127.0.0.1:8080"). They are matched first,
# at the same position, and kept; only what is left of a run of digits is masked.
_KEEP = (
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?!\d)"
)
_PHONE = re.compile(rf"(?P<keep>{_KEEP})|\+?\d[\d ().-]{{6,}}\d")
_MAX_TEXT = 200


def _mask_number(match: re.Match[str]) -> str:
    return match.group("keep") or "<number>"


def scrub(value: Any) -> Any:
    """The same structure with addresses and phone numbers masked in every string."""
    if isinstance(value, str):
        text = _PHONE.sub(_mask_number, _ADDRESS.sub("<address>", value))
        return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"
    if isinstance(value, dict):
        return {scrub(str(k)): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def _lag_s(last_success_at: str | None) -> float | None:
    if last_success_at is None:
        return None
    return round((utcnow() - datetime.fromisoformat(last_success_at)).total_seconds(), 1)


def grant_health(settings: Settings, engine: Engine) -> list[dict[str, Any]]:
    """Each configured OAuth account: its grant's status and the provider's reason."""
    if not settings.oauth.accounts:
        return []
    stored = tokens.statuses(engine)
    result = []
    for account in settings.oauth.accounts:
        grant = stored.get(account.name)
        result.append(
            {
                "account": account.name,
                "provider": account.provider,
                "status": grant["status"] if grant else "not authorized",
                "reason": grant["reason"] if grant else None,
                "failed_at": grant["failed_at"] if grant else None,
                "access_expires_at": grant["access_expires_at"] if grant else None,
            }
        )
    return result


def health(settings: Settings, engine: Engine) -> tuple[dict[str, Any], int]:
    """/healthz: overall status and each connector as `parity connectors status` sees it.

    Degraded (503) when an enabled connector runs nowhere or an OAuth account's grant is
    not "ok" (auth failed, or never authorized); down (503) when the store is unreachable.
    Rate-limit budgets and IMAP quota come from the instances' reports.
    """
    try:
        status = connector_status(settings, engine)
    except Exception as exc:  # the store is down: that is the health answer
        return {"status": "down", "database": f"unreachable: {type(exc).__name__}"}, 503
    connectors = []
    for entry in status:
        instances = entry["instances"]
        limits: dict[str, Any] = {}
        for instance in instances:
            details = instance["details"] or {}
            for key in ("rate_limits", "rate_limit"):
                if details.get(key):
                    limits[instance["instance"]] = details[key]
        view: dict[str, Any] = {
            "name": entry["name"],
            "enabled": entry["enabled"],
            "disabled_reason": entry["disabled_reason"],
            "state": "up" if entry["running"] else ("down" if entry["enabled"] else "disabled"),
            "last_success_at": entry["last_success_at"],
            "lag_s": _lag_s(entry["last_success_at"]),
            "backlog": entry["backlog"],
            "last_error": entry["last_error"],
            "restarts": entry["restarts"],
            "instances": [
                {
                    "instance": i["instance"],
                    "running": i["running"],
                    "heartbeat_at": i["heartbeat_at"],
                    "last_success_at": i["last_success_at"],
                    "last_error": i["last_error"],
                }
                for i in instances
                if i["alive"]
            ],
        }
        if entry.get("accounts"):
            view["accounts"] = entry["accounts"]
        if limits:
            view["rate_limits"] = limits
        connectors.append(scrub(view))
    ok = all(c["state"] != "down" for c in connectors)
    grants = grant_health(settings, engine)
    # A mailbox whose sign-in died takes in nothing until someone authorizes it again.
    ok = ok and all(g["status"] == tokens.OK for g in grants)
    body: dict[str, Any] = {
        "status": "ok" if ok else "degraded",
        "database": "ok",
        "connector_states": connectors,
    }
    if grants:
        body["oauth"] = [scrub(g) for g in grants]
    try:
        workers = [w for w in worker_status(engine) if w["running"]]
        body["normalizer"] = scrub(
            {
                "processes": len(workers),
                "instances": [
                    {k: w[k] for k in ("instance", "heartbeat_at", "last_success_at", "last_error")}
                    for w in workers
                ],
            }
        )
    except Exception as exc:  # a failing extra must not take health down with it
        body["normalizer"] = {"error": type(exc).__name__}
    return body, (200 if ok else 503)
