"""Alerts for managers: a parity breach, too many unanswered cases on a channel, an SLA drop.

`evaluate` is pure: the figures of the manager's report in, the alerts out. `check` is the
edge: it computes the reports, keeps one alert per condition and period (`alert_events.key`
is unique, so two instances checking at once raise it once), and queues its messages in
the outbox in the same transaction: an email to each address of `email_to` through the
email relay, and a JSON POST to `webhook_url`, signed with HMAC-SHA256 of the body
(`X-Parity-Signature: sha256=<hex>`), which the webhook sender (connectors/webhook.py)
retries with the outbox's backoff like any row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field
from sqlalchemy import Connection, Engine, insert

from inbox import audit, report_days
from inbox.channels import MAIL_CHANNEL
from inbox.config import Strict
from inbox.db import insert_ignore, write
from inbox.models import AlertEvent, Outbox, utcnow

# The outbox channel of alert webhooks: not a customer channel, drained by its own sender.
WEBHOOK_CHANNEL = "webhook"
SIGNATURE_HEADER = "X-Parity-Signature"
CONDITIONS = ("parity_breach", "unanswered", "sla_drop")


class AlertSettings(Strict):
    """[alerts] in settings.toml."""

    # Off by default: with it on, `parity run` checks every `interval_s`.
    enabled: bool = False
    interval_s: int = Field(default=300, ge=10, le=86400)
    # Who hears of an alert: mail addresses (through [outbox.email]) and/or one webhook.
    email_to: list[str] = Field(default_factory=list)
    webhook_url: str = ""
    # The environment variable with the webhook's signing secret (required with a URL).
    webhook_secret_env: str = "PARITY_ALERTS_WEBHOOK_SECRET"  # noqa: S105 (a name)
    # The report an alert judges: cases first heard from in the last `window_hours`.
    window_hours: int = Field(default=24, ge=1, le=24 * 90)
    # One alert per condition (and channel) per period of this many hours.
    period_hours: int = Field(default=24, ge=1, le=24 * 30)
    # A parity breach: the report's ratio above [audit] parity_ratio_threshold.
    parity_breach: bool = True
    # A channel with more open, unanswered cases than this (0: never).
    unanswered_max: int = Field(default=25, ge=0)
    # SLA attainment of the window this many points below the `sla_baseline_days` before it
    # (0: never), once the window has `sla_min_judged` judged cases.
    sla_drop_points: float = Field(default=10.0, ge=0, le=100)
    sla_baseline_days: int = Field(default=7, ge=1, le=90)
    sla_min_judged: int = Field(default=10, ge=1)


@dataclass(frozen=True)
class Alert:
    condition: str
    subject: str  # the channel, or "all"
    text: str
    detail: dict[str, Any] = field(default_factory=dict)


def evaluate(
    window: Mapping[str, Any], baseline: Mapping[str, Any], settings: AlertSettings
) -> list[Alert]:
    """The alerts the window's report (and the baseline's before it) call for."""
    found: list[Alert] = []
    if settings.parity_breach and window.get("parity_breach"):
        found.append(
            Alert(
                "parity_breach",
                "all",
                f"Parity breach: the slowest channel ({window['parity_worst_channel']}) answers "
                f"{window['parity_ratio']} times slower than the fastest "
                f"({window['parity_best_channel']}); the threshold is "
                f"{window['parity_ratio_threshold']}.",
                {
                    "ratio": window["parity_ratio"],
                    "threshold": window["parity_ratio_threshold"],
                    "worst": window["parity_worst_channel"],
                    "best": window["parity_best_channel"],
                },
            )
        )
    channels: Mapping[str, Mapping[str, Any]] = window.get("channels", {})
    before: Mapping[str, Mapping[str, Any]] = baseline.get("channels", {})
    for name, figures in channels.items():
        unanswered = int(figures.get("unanswered") or 0)
        if settings.unanswered_max and unanswered > settings.unanswered_max:
            found.append(
                Alert(
                    "unanswered",
                    name,
                    f"{name}: {unanswered} open cases have no answer yet (more than "
                    f"{settings.unanswered_max}).",
                    {"channel": name, "unanswered": unanswered, "max": settings.unanswered_max},
                )
            )
        now_pct = figures.get("sla_attained_pct")
        then_pct = before.get(name, {}).get("sla_attained_pct")
        judged = int(figures.get("sla_judged") or 0)
        if (
            settings.sla_drop_points
            and now_pct is not None
            and then_pct is not None
            and judged >= settings.sla_min_judged
            and then_pct - now_pct >= settings.sla_drop_points
        ):
            found.append(
                Alert(
                    "sla_drop",
                    name,
                    f"{name}: SLA attainment fell to {now_pct}% from {then_pct}% "
                    f"({judged} cases judged).",
                    {"channel": name, "now_pct": now_pct, "baseline_pct": then_pct},
                )
            )
    return found


def period_of(now: datetime, hours: int) -> str:
    """The de-duplication period `now` falls in, named by its start (UTC)."""
    seconds = hours * 3600
    start = int(now.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H")


def key_of(alert: Alert, period: str) -> str:
    return f"{alert.condition}:{alert.subject}:{period}"[:256]


def signature(secret: bytes, body: bytes) -> str:
    """The webhook's X-Parity-Signature value: HMAC-SHA256 of the exact body, in hex."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def webhook_body(alert: Alert, period: str, at: datetime) -> str:
    return json.dumps(
        {
            "event": "parity.alert",
            "condition": alert.condition,
            "subject": alert.subject,
            "text": alert.text,
            "detail": alert.detail,
            "period": period,
            "raised_at": at.isoformat(timespec="seconds"),
        },
        sort_keys=True,
    )


def _reports(
    engine: Engine, settings: AlertSettings, threshold: float, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    start = now - timedelta(hours=settings.window_hours)
    base_start = start - timedelta(days=settings.sla_baseline_days)
    # The report's own path: PostgreSQL's daily rollups (a check every few minutes no longer
    # reads the baseline's days of cases into Python), SQLite's Python path; same figures.
    with engine.connect() as conn:
        window = report_days.compute(conn, now=now, since=start, until=now, threshold=threshold)
        baseline = report_days.compute(
            conn, now=now, since=base_start, until=start, threshold=threshold
        )
        conn.rollback()
    return window, baseline


def _row(
    conn: Connection, channel: str, recipient: str, subject: str, body: str, now: datetime
) -> int:
    return int(
        conn.execute(
            insert(Outbox)
            .values(
                case_id=None,
                kind="alert",
                channel=channel,
                recipient=recipient,
                subject=subject,
                body=body,
                payload={},
                state="queued",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                created_by="alerts",
            )
            .returning(Outbox.id)
        ).scalar_one()
    )


def _queue(
    conn: Connection, alert: Alert, settings: AlertSettings, period: str, now: datetime
) -> list[int]:
    """The alert's messages, in the transaction that records it: one email per address and
    one webhook call, each an outbox row its sender retries with backoff."""
    subject = f"Parity alert: {alert.text}"[:200]
    text = (
        f"{alert.text}\n\nPeriod: {period} (UTC)\n"
        f"Details: {json.dumps(alert.detail, sort_keys=True)}\n"
    )
    ids = [_row(conn, MAIL_CHANNEL, address, subject, text, now) for address in settings.email_to]
    if settings.webhook_url:
        body = webhook_body(alert, period, now)
        ids.append(_row(conn, WEBHOOK_CHANNEL, settings.webhook_url, alert.condition, body, now))
    return ids


def check(
    engine: Engine, settings: AlertSettings, threshold: float, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Evaluate now; raise (store and queue) each alert not yet raised in its period.

    Returns every alert found, each with `raised` (new now) or not (already raised)."""
    now = now or utcnow()
    window, baseline = _reports(engine, settings, threshold, now)
    period = period_of(now, settings.period_hours)
    results = []
    for alert in evaluate(window, baseline, settings):
        key = key_of(alert, period)
        with write(engine) as conn:
            new = (
                conn.execute(
                    insert_ignore(conn, AlertEvent, ["key"])
                    .values(
                        key=key,
                        condition=alert.condition,
                        subject=alert.subject,
                        detail=alert.detail,
                        created_at=now,
                    )
                    .returning(AlertEvent.id)
                ).first()
                is not None
            )
            outbox_ids = _queue(conn, alert, settings, period, now) if new else []
            if new:
                audit.append(
                    conn,
                    actor="system",
                    action="alert.raised",
                    after={"key": key, "text": alert.text, "outbox_ids": outbox_ids},
                )
        results.append(
            {
                "condition": alert.condition,
                "subject": alert.subject,
                "text": alert.text,
                "key": key,
                "raised": bool(new),
                "outbox_ids": outbox_ids,
            }
        )
    return results


def describe(results: Sequence[Mapping[str, Any]]) -> str:
    if not results:
        return "no alert\n"
    return "".join(
        f"{'RAISED' if r['raised'] else 'already raised'}: {r['text']}\n" for r in results
    )
