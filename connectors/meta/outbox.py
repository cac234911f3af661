"""Sending WhatsApp, Messenger and Instagram rows through the shared outbox drainer.

Meta's reply windows are facts of the channel, decided here before anything is sent
(`window`, pure):
- WhatsApp: free text within 24 hours of the customer's last message; after that only an
  approved template (`whatsapp_ack_template` for acknowledgements, `whatsapp_reply_template`
  for agents' replies), whose one parameter is the case reference. The customer's answer
  to it opens the window again.
- Messenger and Instagram Direct: within 24 hours a plain response; then, for 7 days, the
  HUMAN_AGENT tag (a person answering, which is what an agent's reply is); after that the
  reply is refused before sending, with the reason on the row, which the case shows.
- A public comment is answered by a public reply to it; no window applies.

A message has no idempotency key at Meta: a send whose answer was lost (a read timeout) is
"unknown" and left for an agent, never sent twice blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, func, select

from connectors.meta.graph import (
    RATE_LIMITS,
    TOKEN_INVALID,
    TRANSIENT,
    UNREACHABLE,
    WINDOW_CLOSED,
    Graph,
    GraphError,
)
from connectors.meta.settings import MetaSettings, WhatsAppTemplate
from connectors.outbox import Failure, http_retriable
from inbox.channels import CHANNEL_FACTS, IDENTITY_KIND_OF
from inbox.db import read
from inbox.models import Identity, Message, utcnow
from inbox.outbox import Claimed
from inbox.replies import reply_window

# What the case shows (the words, kept exactly): the registry's window facts.
TEMPLATE_REASON = CHANNEL_FACTS["whatsapp"].reply_window.outside
MESSENGER_CLOSED = CHANNEL_FACTS["messenger"].reply_window.outside
INSTAGRAM_CLOSED = CHANNEL_FACTS["instagram"].reply_window.outside
RATE_PAUSE_S = 60.0
TOKEN_PAUSE_S = 3600.0

Mode = Literal["text", "template", "human_agent", "refused"]


@dataclass(frozen=True)
class Window:
    mode: Mode
    reason: str | None = None


def window(channel: str, last_inbound: datetime | None, now: datetime) -> Window:
    """How a private message to a person may go now, given when they last wrote to us (the
    rule the agent's reply form shows too: inbox.replies.reply_window)."""
    mode, reason = reply_window(channel, last_inbound, now)
    return Window("human_agent" if mode == "tagged" else mode, reason)


class Stop(Exception):
    """Meta refused the token: nothing is sent on this channel until it is renewed."""


class Refused(Exception):
    """Refused before sending: the reason is the case's to show."""


def classify(channel: str, exc: BaseException) -> Failure:
    """What a failed send means (the codes are listed in connectors/meta/graph.py)."""
    if isinstance(exc, Refused):
        return Failure(False, str(exc))
    if not isinstance(exc, GraphError):
        return Failure(True, f"{type(exc).__name__}: {exc}"[:500])
    text = str(exc)
    if exc.code in TOKEN_INVALID:
        why = f"{channel} token invalid or expired (renew it): {text}"
        return Failure(False, why, pause_s=TOKEN_PAUSE_S, stop=Stop(why))
    if exc.code in RATE_LIMITS:
        return Failure(True, f"rate limited: {text}", pause_s=RATE_PAUSE_S)
    if exc.unsure:
        return Failure(False, text, unknown=True)
    if exc.code == 131047:
        return Failure(False, f"{TEMPLATE_REASON} (Meta refused free text: {text})")
    if exc.code == 131026:
        return Failure(False, f"this number cannot receive WhatsApp messages: {text}")
    if exc.code in UNREACHABLE or exc.subcode in WINDOW_CLOSED:
        closed = MESSENGER_CLOSED if channel == "messenger" else INSTAGRAM_CLOSED
        return Failure(False, f"{closed} ({text})")
    if exc.code in TRANSIENT or exc.status == 0 or http_retriable(exc.status):
        return Failure(True, text)
    return Failure(False, text)


def reply_route(payload: dict[str, Any], recipient: str) -> dict[str, Any]:
    """A public comment is answered by a public reply to it; anything else privately."""
    route = dict(payload)
    target = payload.get("in_reply_to_external_id") or payload.get("external_id")
    if payload.get("visibility") == "public" and target:
        route.update(mode="comment", comment_id=str(target))
    else:
        route.update(mode="message", to=recipient)
    return route


class MetaSender:
    """One channel's sender (whatsapp, messenger or instagram) for the outbox drainer."""

    resend_safe = False

    def __init__(self, channel: str, settings: MetaSettings, graph: Graph, engine: Engine) -> None:
        self.channel = channel
        self.settings = settings
        self.graph = graph
        self.engine = engine

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        return None

    def reply_route(self, row: Claimed) -> dict[str, Any]:
        return reply_route(row.payload, row.recipient)

    def last_inbound(self, handle: str) -> datetime | None:
        """When this person last wrote to us on this channel (the window's start)."""
        with read(self.engine) as conn:
            at = conn.execute(
                select(func.max(Message.received_at))
                .join(Identity, Identity.id == Message.identity_id)
                .where(
                    Message.channel == self.channel,
                    Message.direction == "inbound",
                    Identity.kind == IDENTITY_KIND_OF[self.channel],
                    Identity.handle == handle,
                )
            ).scalar_one_or_none()
            conn.rollback()
        if at is not None and at.tzinfo is None:
            # SQLite hands back naive datetimes; the store writes UTC.
            at = at.replace(tzinfo=UTC)
        return at

    def send(self, row: Claimed) -> str | None:
        payload = row.payload
        if payload.get("mode") == "comment":
            return self._comment(str(payload["comment_id"]), row.body)
        to = str(payload.get("to") or row.recipient)
        decided = window(self.channel, self.last_inbound(to), utcnow())
        if decided.mode == "refused":
            raise Refused(decided.reason)
        if self.channel == "whatsapp":
            return self._whatsapp(row, to, decided)
        body: dict[str, Any] = {"recipient": {"id": to}, "message": {"text": row.body}}
        if decided.mode == "human_agent":
            body.update(messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
        else:
            body["messaging_type"] = "RESPONSE"
        answer = self.graph.post("me/messages", body)
        return str(answer.get("message_id") or "") or None

    def _whatsapp(self, row: Claimed, to: str, decided: Window) -> str | None:
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            # The Cloud API takes the number without its "+".
            "to": to.removeprefix("+"),
        }
        if decided.mode == "text":
            body.update(type="text", text={"body": row.body, "preview_url": False})
        else:
            template = (
                self.settings.whatsapp_ack_template
                if row.kind == "ack"
                else self.settings.whatsapp_reply_template
            )
            body.update(type="template", template=template_body(template, row))
        path = f"{self.settings.whatsapp_phone_number_id}/messages"
        answer = self.graph.post(path, body)
        messages = answer.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            return str(messages[0].get("id") or "") or None
        return None

    def _comment(self, comment_id: str, text: str) -> str | None:
        # Facebook answers a comment with a comment on it; Instagram with a reply.
        edge = "comments" if self.channel == "messenger" else "replies"
        answer = self.graph.post(f"{comment_id}/{edge}", {"message": text})
        return str(answer.get("id") or "") or None

    def classify(self, exc: BaseException) -> Failure:
        return classify(self.channel, exc)


def template_body(template: WhatsAppTemplate, row: Claimed) -> dict[str, Any]:
    """The template message: its name, language, and the case reference as {{1}}."""
    if not template.name:
        which = "whatsapp_ack_template" if row.kind == "ack" else "whatsapp_reply_template"
        raise Refused(f"{TEMPLATE_REASON}, but [connectors.meta] {which} is not set")
    return {
        "name": template.name,
        "language": {"code": template.language},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": row.case_reference or ""}],
            }
        ],
    }
