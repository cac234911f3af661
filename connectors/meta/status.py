"""What the Meta connector reports: per channel, the last webhook and the signature failures,
the token's validity and the outbox counts; and what a delivery report does to our rows,
once it is stored (the webhook stores it raw first, then answers Meta, then applies it).

The counts live in the connector's health record, which the daemon persists for
`parity connectors status --json` (connector_state `details`): no write per webhook.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from connectors.base import ConnectorHealth
from connectors.meta.parse import Status, read_body, status_key
from inbox.channels import channels_of
from inbox.db import is_sqlite, read, write
from inbox.models import Blob, DeadLetter, Intake, Outbox, utcnow
from inbox.outbox import record_report

log = logging.getLogger(__name__)

CONNECTOR = "meta"


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
        self._channels().setdefault(channel, {})["last_webhook_received"] = utcnow().isoformat()

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
MAX_REPORTS = 200


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
    message) and applied in the transaction that marks it "applied". A row whose report is
    not in its body any more (it cannot be: it was read from there) is dead-lettered with
    why rather than lost.
    """
    taken = 0
    with write(engine) as conn:
        query = (
            select(Intake.id, Intake.channel, Intake.source_key, Intake.raw_sha256, Blob.data)
            .join(Blob, Blob.sha256 == Intake.raw_sha256)
            .where(Intake.connector == CONNECTOR, Intake.state == "report")
            .order_by(Intake.id)
            .limit(limit)
        )
        if not is_sqlite(conn):
            # Two instances sweeping at once: each takes other rows (applying one twice
            # would be harmless, but audited twice).
            query = query.with_for_update(of=Intake, skip_locked=True)
        rows = conn.execute(query).all()
        bodies: dict[str, list[Status]] = {}
        for row in rows:
            taken += 1
            if row.raw_sha256 not in bodies:
                bodies[row.raw_sha256] = read_body(row.data).statuses
            found = [s for s in bodies[row.raw_sha256] if status_key(s) == row.source_key]
            if not found:
                dead_letter_report(conn, row, "the delivery report is not in its stored body")
                continue
            for report in found[:1]:
                moved = apply_status_in(conn, report)
                if moved:
                    log.info("meta: %s %s: outbox %s", report.channel, report.state, moved)
            conn.execute(
                update(Intake)
                .where(Intake.id == row.id, Intake.state == "report")
                .values(state="applied", processed_at=utcnow())
            )
    return taken


def dead_letter_report(conn: Connection, row: Any, error: str) -> None:
    conn.execute(
        update(Intake).where(Intake.id == row.id).values(state="dead", processed_at=utcnow())
    )
    conn.execute(
        insert(DeadLetter).values(
            intake_id=row.id,
            connector=CONNECTOR,
            channel=row.channel,
            raw_sha256=row.raw_sha256,
            error=error,
            created_at=utcnow(),
            replays=0,
            resolved=False,
        )
    )
