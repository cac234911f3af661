"""Fit a parsed message to what both databases store, so no input can crash the worker.

SQLite stores anything; PostgreSQL refuses NUL characters in text, strings that are not
valid Unicode (lone surrogates), and values longer than a VARCHAR column. A mail that hit
one of these would stop a worker on PostgreSQL only, and be retried until it gave up.
Text is cleaned, names are shortened, and keys too long for their column are replaced by
their hash, the same way every time, so dedup and threading still find them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from inbox.models import Attachment, Identity, Message, MessageRef
from normalizer.message import AttachmentPart, InboundMessage, ThreadSignals


def _length(column: Any) -> int:
    return int(column.type.length)


KEY = _length(Message.dedup_key)
REF = _length(MessageRef.ref)
EXTERNAL_ID = _length(Message.external_id)
HANDLE = min(_length(Identity.handle), _length(Message.from_handle))
NAME = min(_length(Identity.display_name), _length(Message.from_name))
FILENAME = _length(Attachment.filename)
CONTENT_TYPE = _length(Attachment.content_type)


def text(value: str) -> str:
    """`value` without NUL characters and with any lone surrogate replaced."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    return value


def key(value: str, length: int) -> str:
    """A lookup key that fits `length`: itself, or its hash when longer."""
    value = text(value)
    if len(value) <= length:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()


def short(value: str, length: int) -> str:
    return text(value)[:length]


def storable(message: InboundMessage) -> InboundMessage:
    sender = message.sender
    thread = message.thread
    return dataclasses.replace(
        message,
        dedup_key=key(message.dedup_key, KEY),
        external_id=None if message.external_id is None else key(message.external_id, EXTERNAL_ID),
        sender=dataclasses.replace(
            sender, handle=key(sender.handle, HANDLE), name=short(sender.name, NAME)
        ),
        subject=text(message.subject),
        text=text(message.text),
        html=None if message.html is None else text(message.html),
        html_view=None if message.html_view is None else text(message.html_view),
        own_refs=tuple(key(r, REF) for r in message.own_refs),
        thread=ThreadSignals(
            in_reply_to=tuple(key(r, REF) for r in thread.in_reply_to),
            references=tuple(key(r, REF) for r in thread.references),
            conversation=tuple(key(r, REF) for r in thread.conversation),
        ),
        attachments=tuple(
            AttachmentPart(short(a.filename, FILENAME), short(a.content_type, CONTENT_TYPE), a.data)
            for a in message.attachments
        ),
        recipients=tuple(text(r) for r in message.recipients),
        meta={k: text(v) if isinstance(v, str) else v for k, v in message.meta.items()},
    )


__all__ = ["key", "short", "storable", "text"]
