"""The one shape every channel's input is turned into before deduplication and threading."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Channel = Literal["email", "sms", "voice", "twitter", "reddit"]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "voice", "twitter", "reddit")
Visibility = Literal["public", "private"]

# Which identity kind a channel's sender handle belongs to: sms and voice share the number.
IDENTITY_KIND: dict[str, str] = {
    "email": "email",
    "sms": "phone",
    "voice": "phone",
    "twitter": "twitter",
    "reddit": "reddit",
}


@dataclass(frozen=True)
class Sender:
    kind: str  # email | phone | twitter | reddit
    handle: str  # normalised: lower-case address, E.164 number, user id, username
    name: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    # A withheld caller id is not an identity: each such call gets its own contact.
    anonymous: bool = False


@dataclass(frozen=True)
class AttachmentPart:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ThreadSignals:
    """What a message says about which earlier messages it continues."""

    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    # A platform conversation: a Twitter conversation id, a Reddit parent, a phone number.
    conversation: tuple[str, ...] = ()


@dataclass(frozen=True)
class InboundMessage:
    channel: Channel
    visibility: Visibility
    dedup_key: str
    sender: Sender
    received_at: datetime
    external_id: str | None = None
    subject: str = ""
    text: str = ""
    html: str | None = None
    # The sanitized HTML the case page serves (inbox.mailhtml.view), made when parsing.
    html_view: str | None = None
    sent_at: datetime | None = None
    # Every id this message can be referred to by (its Message-ID, tweet id...).
    own_refs: tuple[str, ...] = ()
    thread: ThreadSignals = ThreadSignals()
    attachments: tuple[AttachmentPart, ...] = ()
    # Why this message must not be acknowledged (auto-reply, bounce, list mail), if any.
    automated: str | None = None
    recipients: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


class ParseError(Exception):
    """Input that cannot become a message; its raw bytes go to dead letters with this text."""
