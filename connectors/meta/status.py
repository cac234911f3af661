"""What the Meta connector reports: per channel, the last webhook and the signature failures,
the token's validity and the outbox counts; and what a delivery report does to our rows.

The counts live in the connector's health record, which the daemon persists for
`parity connectors status --json` (connector_state `details`): no write per webhook.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from connectors.base import ConnectorHealth
from connectors.meta.parse import Status
from inbox.channels import channels_of
from inbox.db import read
from inbox.models import Outbox, utcnow
from inbox.outbox import mark

CONNECTOR = "meta"


class WebhookStats:
    """Per channel: when a webhook last came, and how many were refused for their signature.

    A refused webhook names no channel (its body is not trusted), so signature failures are
    counted once for the connector and shown under each channel.
    """

    def __init__(self, health: ConnectorHealth) -> None:
        self.health = health
        self.failures = 0

    def _channels(self) -> dict[str, dict[str, Any]]:
        found = self.health.details.setdefault("channels", {c: {} for c in channels_of(CONNECTOR)})
        assert isinstance(found, dict)
        return found

    def received(self, channel: str) -> None:
        self._channels().setdefault(channel, {})["last_webhook_at"] = utcnow().isoformat()

    def signature_failure(self) -> None:
        self.failures += 1
        self.health.details["signature_failures"] = self.failures
        for facts in self._channels().values():
            facts["signature_failures"] = self.failures

    def token(self, which: str, valid: bool, why: str | None = None) -> None:
        self.health.details.setdefault("tokens", {})[which] = {
            "valid": valid,
            **({"reason": why} if why else {}),
            "checked_at": utcnow().isoformat(),
        }

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


def outbox_state(status: Status) -> str | None:
    """The outbox state a delivery report moves a sent row to (None: nothing new)."""
    if status.state in ("delivered", "read"):
        # Read implies delivered; the outbox keeps whether it arrived, not whether it was read.
        return "delivered"
    if status.state == "failed":
        return "undelivered"
    return None  # "sent": the row is sent already


def apply_status(engine: Engine, status: Status) -> int:
    state = outbox_state(status)
    if state is None:
        return 0
    return mark(engine, status.channel, state, provider_id=status.provider_id, error=status.error)
