"""Telegram updates to messages. Pure functions.

An update is one JSON object (Bot API `Update`). The connector stores each update on its
own, raw (a webhook's body as Telegram posted it; an update of a `getUpdates` answer
serialised again on its own), keyed by the chat and message ids: the same message comes
back under the same key whether a poll overlaps, Telegram redelivers a webhook or the
mode was switched in between. The envelope keeps the `update_id`.

What is taken in: `message` updates of private chats (text, photo, document, voice, audio,
video, with their captions; anything else as a line saying what it was). What is not, and
why (`route` says it, the connector counts it in status):
- group, supergroup and channel messages: a group is many people's conversation, a reply
  there would be read by people who never wrote to us, and the bot cannot tell which group
  member wanted help. docs/channels/telegram.md asks to switch groups off at BotFather;
- edited messages: the original is what was answered; an edit is not a new question;
- other update kinds (callback queries, member changes): not asked for (`allowed_updates`).

Identity: the user id (`from.id`), a number for life; the username and name are facts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from normalizer.mail import Caps
from normalizer.message import InboundMessage, ParseError, Sender, ThreadSignals
from normalizer.parse import check_size

# The message kinds that carry a file, in the order they are looked for.
MEDIA_KINDS = ("photo", "document", "voice", "audio", "video", "video_note", "animation")
# Kinds shown as a line of text only (nothing to download that helps an agent).
LABEL_KINDS = ("sticker", "location", "contact", "venue", "poll", "dice")
MAX_TEXT = 100_000
# Telegram's ids are signed 64-bit integers at most.
_MAX_ID = 2**63


@dataclass(frozen=True)
class Routed:
    """What the connector does with one update: store it as a message, or ignore it."""

    action: Literal["store", "ignore"]
    source_key: str = ""
    reason: str = ""  # why it is ignored: "group", "edited", "other"
    update_id: int | None = None


def load(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ParseError(f"Telegram update is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ParseError("Telegram update is not a JSON object")
    return doc


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> int | None:
    """A Telegram id: an integer (never a bool, never beyond 64 bits)."""
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= _MAX_ID:
        return None
    return value


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    return value[:limit] if isinstance(value, str) else ""


def source_key(chat_id: int, message_id: int) -> str:
    return f"msg:{chat_id}:{message_id}"


def route(update: Mapping[str, Any]) -> Routed:
    """Whether an update is taken in, and its intake key; raises ParseError when it has no
    `update_id` or its message has no ids (the connector keeps it as a dead letter)."""
    update_id = _id(update.get("update_id"))
    if update_id is None:
        raise ParseError("Telegram update without an update_id")
    message = _dict(update.get("message"))
    if not message:
        edited = any(k.startswith("edited_") for k in update)
        return Routed("ignore", reason="edited" if edited else "other", update_id=update_id)
    chat = _dict(message.get("chat"))
    chat_id, message_id = _id(chat.get("id")), _id(message.get("message_id"))
    if chat_id is None or message_id is None:
        raise ParseError(f"Telegram update {update_id}: message without a chat or message id")
    if chat.get("type") != "private":
        return Routed("ignore", reason="group", update_id=update_id)
    return Routed("store", source_key(chat_id, message_id), update_id=update_id)


def parse(
    raw: bytes, *, envelope: Mapping[str, Any], received_at: datetime, caps: Caps
) -> InboundMessage:
    """One stored update to a message (the envelope is not needed: the update says it all)."""
    check_size(raw, caps, "Telegram update")
    update = load(raw)
    routed = route(update)
    if routed.action != "store":
        # The connector does not store these; one that was (an older version, a replay
        # by hand) says why it is no message.
        raise ParseError(f"Telegram update {routed.update_id} is not taken in: {routed.reason}")
    message = _dict(update["message"])
    chat_id = int(message["chat"]["id"])
    message_id = int(message["message_id"])
    author = _dict(message.get("from"))
    user_id = _id(author.get("id"))
    if user_id is None:
        raise ParseError(f"Telegram message {chat_id}:{message_id} has no sender")
    text, details = content(message)
    name = " ".join(
        p for p in (_text(author.get("first_name"), 100), _text(author.get("last_name"), 100)) if p
    )
    facts: dict[str, Any] = {}
    username = _text(author.get("username"), 64)
    if username:
        facts["username"] = username
    language = _text(author.get("language_code"), 16)
    if language:
        facts["language_code"] = language
    replied = _id(_dict(message.get("reply_to_message")).get("message_id"))
    key = f"telegram:{chat_id}:{message_id}"
    sent = _id(message.get("date"))
    meta: dict[str, Any] = {
        "telegram": {
            "update_id": routed.update_id,
            "chat_id": chat_id,
            "message_id": message_id,
            **details,
        }
    }
    return InboundMessage(
        channel="telegram",
        visibility="private",
        dedup_key=key,
        sender=Sender(kind="telegram", handle=str(user_id), name=name[:250], facts=facts),
        received_at=received_at,
        sent_at=datetime.fromtimestamp(sent, UTC) if sent and 0 < sent < 32_503_680_000 else None,
        external_id=f"{chat_id}:{message_id}",
        text=text,
        own_refs=(key,),
        thread=ThreadSignals(
            in_reply_to=(f"telegram:{chat_id}:{replied}",) if replied is not None else (),
            conversation=(f"telegram:{chat_id}",),
        ),
        # A bot cannot write to another bot: a message from one is not a person asking.
        automated="sent by a bot" if author.get("is_bot") is True else None,
        meta=meta,
    )


def content(message: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The readable text of a message, and the files it carries (to fetch after the store)."""
    lines: list[str] = []
    text = _text(message.get("text"))
    if text:
        lines.append(text)
    caption = _text(message.get("caption"))
    if caption:
        lines.append(caption)
    details: dict[str, Any] = {}
    media = [m for m in (_media(kind, message.get(kind)) for kind in MEDIA_KINDS) if m]
    for item in media:
        label = "voice message" if item["kind"] == "voice" else item["kind"].replace("_", " ")
        name = item.get("file_name")
        lines.append(f"[{label}{': ' + name if name else ''}]")
    if media:
        details["media"] = media
    for kind in LABEL_KINDS:
        if kind in message:
            lines.append(_label(kind, _dict(message.get(kind))))
    if not lines:
        lines.append("[a message Parity cannot show]")
    if _dict(message.get("forward_origin")) or "forward_date" in message:
        details["forwarded"] = True
        lines.insert(0, "[forwarded]")
    return "\n".join(lines), details


def _media(kind: str, value: Any) -> dict[str, Any] | None:
    if kind == "photo":
        # A photo comes in several sizes, smallest first: the largest is the one to keep.
        sizes = [s for s in value if isinstance(s, dict)] if isinstance(value, list) else []
        sizes = [s for s in sizes if _text(s.get("file_id"))]
        if not sizes:
            return None
        best = max(sizes, key=lambda s: _id(s.get("file_size")) or 0)
        found: dict[str, Any] = {"kind": "photo", "file_id": _text(best["file_id"], 256)}
        found["mime_type"] = "image/jpeg"  # the Bot API re-encodes photos as JPEG
        size = _id(best.get("file_size"))
        if size is not None:
            found["file_size"] = size
        return found
    item = _dict(value)
    file_id = _text(item.get("file_id"), 256)
    if not file_id:
        return None
    found = {"kind": kind, "file_id": file_id}
    for field, limit in (("file_name", 200), ("mime_type", 100)):
        text = _text(item.get(field), limit)
        if text:
            found[field] = text
    size = _id(item.get("file_size"))
    if size is not None:
        found["file_size"] = size
    duration = _id(item.get("duration"))
    if duration is not None:
        found["duration"] = duration
    return found


def _label(kind: str, value: Mapping[str, Any]) -> str:
    if kind == "location":
        return f"[location {value.get('latitude')},{value.get('longitude')}]"
    if kind == "contact":
        who = " ".join(
            p
            for p in (
                _text(value.get("first_name"), 100),
                _text(value.get("last_name"), 100),
                _text(value.get("phone_number"), 40),
            )
            if p
        )
        return f"[shared contact: {who}]"
    if kind == "sticker":
        emoji = _text(value.get("emoji"), 16)
        return f"[sticker{' ' + emoji if emoji else ''}]"
    return f"[{kind}]"


def iter_media(meta: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The files a stored message carries (its `meta.telegram.media`)."""
    media = _dict(meta.get("telegram")).get("media")
    for item in media if isinstance(media, list) else []:
        if isinstance(item, dict):
            yield item
