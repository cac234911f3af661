"""Delivery status notifications (RFC 3464): what a bounce says about mail we sent.

When an acknowledgement or an agent's reply cannot be delivered, the receiving side's MTA
sends a `multipart/report; report-type=delivery-status` back to our return path. It names
the recipients with their action (failed, delayed, delivered...) and status code, and it
returns our original message or its headers, so its Message-ID tells us which outbox row it
is about. Read here as pure functions over the parsed message; the worker records the
outcome on the outbox row and the case, so an agent sees "undelivered: 550 5.1.1 no such
user" instead of believing the customer heard back.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from typing import Any, Literal

from inbox.references import bare_message_id

# The actions RFC 3464 section 2.3.3 defines; anything else is read as unknown.
_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
Outcome = Literal["undelivered", "delivered", "delayed"]


@dataclass(frozen=True)
class RecipientStatus:
    recipient: str  # the Final-Recipient address, lower-case
    action: str  # failed | delayed | delivered | relayed | expanded | unknown
    status: str  # the enhanced status code, e.g. 5.1.1
    diagnostic: str  # the remote server's words, e.g. "smtp; 550 5.1.1 no such user"


@dataclass(frozen=True)
class DeliveryReport:
    original_message_id: str | None  # without angle brackets
    recipients: tuple[RecipientStatus, ...]

    @property
    def outcome(self) -> Outcome | None:
        """One word for the whole report: undelivered wins, since one lost copy matters."""
        actions = {r.action for r in self.recipients}
        if "failed" in actions:
            return "undelivered"
        if "delayed" in actions:
            return "delayed"
        if actions and actions <= {"delivered", "relayed", "expanded"}:
            return "delivered"
        return None

    @property
    def reason(self) -> str:
        """What an agent reads: the recipients, their status and the remote diagnostic."""
        return "; ".join(
            f"{r.recipient or 'recipient'}: {r.action} {r.status} {r.diagnostic}".strip()
            for r in self.recipients
        )[:500]

    def as_meta(self) -> dict[str, Any]:
        return {
            "original_message_id": self.original_message_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "recipients": [
                {
                    "recipient": r.recipient,
                    "action": r.action,
                    "status": r.status,
                    "diagnostic": r.diagnostic,
                }
                for r in self.recipients
            ],
        }


def _field(block: Message, name: str) -> str:
    """A field of a status block, unfolded to one line ("" when absent)."""
    value = block.get(name)
    return " ".join(str(value).split()) if value is not None else ""


def _typed_value(value: str) -> str:
    """'rfc822; Ann@Example.org' -> 'ann@example.org' (the address type is not ours to keep)."""
    _, sep, rest = value.partition(";")
    return (rest if sep else value).strip().strip("<>").lower()


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part, as the email package gives them."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):
        # Some generators mark it 7bit text; read the blocks ourselves.
        return [HeaderParser().parsestr(chunk) for chunk in payload.split("\n\n") if chunk.strip()]
    return []


def _original_headers(report: Message) -> Message | None:
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        elif ctype == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return HeaderParser().parsestr(text.decode("utf-8", "replace"))
    return None


def delivery_report(msg: Message) -> DeliveryReport | None:
    """The report a DSN carries, or None for any other mail (including non-standard bounces,
    which stay ordinary automated messages)."""
    if msg.get_content_type() != "multipart/report":
        return None
    if str(msg.get_param("report-type", "")).lower() != "delivery-status":
        return None
    recipients: list[RecipientStatus] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _status_blocks(part):
            recipient = _typed_value(
                _field(block, "final-recipient") or _field(block, "original-recipient")
            )
            action = _field(block, "action").lower()
            if not recipient and not action:
                continue  # the per-message block (Reporting-MTA, Arrival-Date...)
            recipients.append(
                RecipientStatus(
                    recipient=recipient,
                    action=action if action in _ACTIONS else "unknown",
                    status=_field(block, "status"),
                    diagnostic=_field(block, "diagnostic-code"),
                )
            )
    original = _original_headers(msg)
    message_id = None
    if original is not None and original.get("message-id"):
        message_id = bare_message_id(str(original["message-id"])) or None
    if not recipients and message_id is None:
        return None
    return DeliveryReport(original_message_id=message_id, recipients=tuple(recipients))
