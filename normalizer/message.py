"""The one shape every channel's input is turned into before deduplication and threading."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inbox.channels import CHANNEL_FACTS, CHANNEL_NAMES, IDENTITY_KIND_OF
from inbox.channels import Visibility as Visibility

# A channel's name: one of the registry's (inbox.channels), checked when a message is made.
Channel = str
CHANNELS: tuple[Channel, ...] = CHANNEL_NAMES
# Which identity kind a channel's sender handle belongs to: sms and voice share the number.
IDENTITY_KIND = IDENTITY_KIND_OF


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
    # The language of the text (inbox/i18n.py LANGUAGES): set by a parser that knows it
    # (the form's language selector), else detected in parse (normalizer/language.py); None
    # when unknown.
    language: str | None = None

    def __post_init__(self) -> None:
        # The registry replaced a Literal type: what mypy checked, the constructor checks.
        if self.channel not in CHANNEL_FACTS:
            raise ValueError(f"unknown channel {self.channel!r}")


class ParseError(Exception):
    """Input that cannot become a message; its raw bytes go to dead letters with this text."""
