"""What the Meta connector reports: per channel, the last webhook and the signature failures,
the token's validity and the outbox counts; and what a delivery report does to our rows,
once it is stored (the webhook stores it raw first, then answers Meta, then applies it).

The counts live in the connector's health record, which the daemon persists for
`parity connectors status --json` (connector_state `details`): no write per webhook.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from connectors.base import ConnectorHealth
from connectors.meta.parse import Status, read_body, status_key
from connectors.reports import MAX_REPORTS, StoredReport, apply_stored
from inbox.channels import channels_of
from inbox.db import read
from inbox.models import Intake, Outbox, utcnow
from inbox.outbox import record_report

log = logging.getLogger(__name__)

CONNECTOR = "meta"
# The intake state of a body kept for parts Parity does not take in: never claimed by the
# normalizer (it claims "pending" only), counted in status.
UNHANDLED = "unhandled"
MAX_RECENT = 10


class WebhookStats:
    """Per channel, as the issue names them: when a webhook was last received, how many were
    refused for their signature, whether the channel's token is valid, the outbox counts.

    A refused webhook names no channel (its body is not trusted), so signature failures are
    counted once for the connector and shown under each channel. Messenger and Instagram
    share the page's token: one check shows under both.
    """

    def __init__(self, health: ConnectorHealth) -> None:
        self.health = health
        self.failures = 0
        self._seconds: dict[str, int] = {}

    def _channels(self) -> dict[str, dict[str, Any]]:
        found = self.health.details.get("channels")
        if not isinstance(found, dict):
            found = {
                c: {"last_webhook_received": None, "signature_failures": 0, "token_valid": None}
                for c in channels_of(CONNECTOR)
            }
            self.health.details["channels"] = found
            self.health.details.setdefault("signature_failures", 0)
        return found

    def received(self, channel: str) -> None:
        # To the second, written at most once a second per channel: this runs on every
        # webhook, and formatting a time costs more than the rest of the bookkeeping.
        second = int(time.time())
        if self._seconds.get(channel) == second:
            return
        self._seconds[channel] = second
        self._channels().setdefault(channel, {})["last_webhook_received"] = (
            utcnow().replace(microsecond=0).isoformat()
        )

    def signature_failure(self) -> None:
        self.failures += 1
        self.health.details["signature_failures"] = self.failures
        for facts in self._channels().values():
            facts["signature_failures"] = self.failures

    def token(
        self, which: str, valid: bool, why: str | None = None, channels: Sequence[str] = ()
    ) -> None:
        """Meta's answer on the `which` token ("whatsapp", "page"), for the `channels` it
        serves."""
        checked = utcnow().isoformat()
        self.health.details.setdefault("tokens", {})[which] = {
            "valid": valid,
            **({"reason": why} if why else {}),
            "checked_at": checked,
        }
        for channel in channels:
            facts = self._channels().setdefault(channel, {})
            facts["token_valid"] = valid
            facts["token_checked_at"] = checked
            if why:
                facts["token_error"] = why
            else:
                facts.pop("token_error", None)

    def unhandled(self, channel: str, labels: Sequence[str]) -> None:
        """A body with parts Parity does not take in was kept (state "unhandled"): what they
        were, newest first, for the operator who wonders why Meta sends them."""
        facts = self._channels().setdefault(channel, {})
        seen = facts.get("unhandled_recent")
        recent = [x for x in (seen if isinstance(seen, list) else []) if x not in labels]
        facts["unhandled_recent"] = [*labels, *recent][:MAX_RECENT]
        facts["unhandled_last_at"] = utcnow().replace(microsecond=0).isoformat()

    def kept_unhandled(self, engine: Engine) -> None:
        """How many bodies each channel kept as unhandled, from the store (so a restart
        does not reset it)."""
        with read(engine) as conn:
            rows = conn.execute(
                select(Intake.channel, func.count())
                .where(Intake.state == UNHANDLED, Intake.connector == CONNECTOR)
                .group_by(Intake.channel)
            ).all()
            conn.rollback()
        counts = {channel: int(n) for channel, n in rows}
        for channel in channels_of(CONNECTOR):
            self._channels().setdefault(channel, {})["unhandled_kept"] = counts.get(channel, 0)

    def outbox(self, engine: Engine) -> None:
        """The outbox counts of each channel, by state."""
        with read(engine) as conn:
            rows = conn.execute(
                select(Outbox.channel, Outbox.state, func.count())
                .where(Outbox.channel.in_(channels_of(CONNECTOR)))
                .group_by(Outbox.channel, Outbox.state)
            ).all()
            conn.rollback()
        channels = self._channels()
        for channel in channels_of(CONNECTOR):
            channels.setdefault(channel, {})["outbox"] = {
                state: int(n) for ch, state, n in rows if ch == channel
            }


# How far a sent message got, by Meta's word. A report never moves a row back: "delivered"
# after "read" (Meta does not promise their order) changes nothing. "failed" is final, and
# outranks the rest: an error Meta reports is shown, whatever came before it.
RANK = {"sent": 0, "delivered": 1, "read": 2, "failed": 3}
# The outbox keeps whether a message arrived (channel-neutral states); `payload.status`
# keeps Meta's own word, read included.
OUTBOX_STATE = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "failed": "undelivered",
}
# The outbox states a report may find a sent row in ("unknown": a send whose outcome we
# never heard; Meta's report on its id settles it).
REPORTED_STATES = ("sent", "unknown", "delivered", "undelivered")


def current_rank(outbox_state: str, payload: dict[str, Any] | None) -> int:
    """How far a row already got: Meta's last word on it, else what its state says."""
    known = (payload or {}).get("status")
    if isinstance(known, str) and known in RANK:
        return RANK[known]
    return {"sent": 0, "delivered": 1, "undelivered": 3}.get(outbox_state, -1)


def apply_status_in(conn: Connection, status: Status) -> list[int]:
    """One delivery report on the rows sent with its id, in the caller's transaction; the
    ids of the rows it moved. Idempotent: the same report again finds the row there."""
    if status.state not in RANK:
        return []
    rows = conn.execute(
        select(Outbox.id, Outbox.kind, Outbox.case_id, Outbox.state, Outbox.payload).where(
            Outbox.channel == status.channel,
            Outbox.provider_id == status.provider_id,
            Outbox.state.in_(REPORTED_STATES),
        )
    ).all()
    moved: list[int] = []
    for row in rows:
        if RANK[status.state] <= current_rank(row.state, row.payload):
            continue
        state = OUTBOX_STATE[status.state]
        values: dict[str, Any] = {
            "state": state,
            "payload": {
                **(row.payload or {}),
                "status": status.state,
                "status_at": utcnow().isoformat(),
            },
        }
        if status.state == "failed":
            values["last_error"] = status.error or "WhatsApp reported the message failed"
        conn.execute(update(Outbox).where(Outbox.id == row.id).values(**values))
        moved.append(row.id)
        if state == row.state or row.case_id is None:
            continue  # read after delivered: Meta's word is kept, the row has not moved
        reason = values.get("last_error") or f"{status.channel}: {status.state}"
        record_report(conn, row, state, str(reason))
    return moved


def apply_reports(engine: Engine, limit: int = MAX_REPORTS) -> int:
    """Apply the delivery reports stored and not yet applied; how many were taken.

    Each report row is read back from its stored body (the body is the record, as for a
    message) and applied in the transaction that marks it "applied" (connectors/reports.py).
    """
    bodies: dict[str, list[Status]] = {}

    def apply(conn: Connection, report: StoredReport) -> list[int] | None:
        if report.raw_sha256 not in bodies:
            bodies[report.raw_sha256] = read_body(report.data).statuses
        found = [s for s in bodies[report.raw_sha256] if status_key(s) == report.source_key]
        return apply_status_in(conn, found[0]) if found else None

    return apply_stored(engine, CONNECTOR, apply, limit)
