"""Reddit: one stored listing item (a `{"kind", "data"}` thing as the API sent it) to a Message.

Pure: the connector stores each item's JSON untouched, with what it knew around it (the
listing it came from, the author's karma) in the envelope, and this turns it into the one
shape. Comments (t1) and submissions (t3) are public; private messages (t4) are private.

Threading signals, all as `reddit:<fullname>`:
- a comment replies to its parent (a comment or the submission) and belongs to the
  conversation of its submission, so a comment joins the case of its thread;
- a private message replies to its parent and belongs to the conversation of the first
  message of its exchange;
- every item can be referred to by its own fullname.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from normalizer.mail import Caps
from normalizer.message import InboundMessage, ParseError, Sender, ThreadSignals, Visibility
from normalizer.parse import check_size

KINDS = {"t1": "comment", "t3": "submission", "t4": "message"}
# Accounts Reddit itself writes from: what they send is stored and cased, never acknowledged.
SYSTEM_AUTHORS = {"reddit": "a message from Reddit itself", "automoderator": "AutoModerator"}
# What an author field holds when the account is gone: nobody to merge with or answer.
GONE = {"", "[deleted]", "[removed]"}
_FULLNAME = re.compile(r"t[1-6]_[0-9a-z]{1,13}")
# The submission id inside a permalink or an inbox item's context: /r/x/comments/<id36>/...
_THREAD_IN_PATH = re.compile(r"/comments/([0-9a-z]{1,13})(?:/|$)")


def ref(fullname: str) -> str:
    """The thread reference of a Reddit thing, as stored in message refs."""
    return f"reddit:{fullname}"


def parse(
    raw: bytes, *, envelope: Mapping[str, Any], received_at: datetime, caps: Caps
) -> InboundMessage:
    """The reddit channel's parser in the normalizer's parser table (handed to it by the
    composition root from connectors/registry.py)."""
    check_size(raw, caps, "Reddit item")
    return parse_reddit(raw, envelope=envelope, received_at=received_at)


def parse_reddit(
    raw: bytes, *, envelope: Mapping[str, Any], received_at: datetime
) -> InboundMessage:
    try:
        thing = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"not a Reddit JSON item: {exc}") from exc
    if not isinstance(thing, dict) or not isinstance(thing.get("data"), dict):
        raise ParseError('not a Reddit item: expected {"kind": ..., "data": {...}}')
    kind = thing.get("kind")
    if kind not in KINDS:
        raise ParseError(f"Reddit item of kind {kind!r}: only t1, t3 and t4 become messages")
    data: dict[str, Any] = thing["data"]
    fullname = _fullname(kind, data)

    sender = _sender(data.get("author"), envelope.get("author_about"))
    sent_at = _time(data.get("created_utc"))
    meta: dict[str, Any] = {
        "reddit": {
            k: v
            for k, v in {
                "kind": KINDS[kind],
                "fullname": fullname,
                "subreddit": data.get("subreddit"),
                "permalink": data.get("permalink") or data.get("context") or None,
                "type": data.get("type"),
                "link_title": data.get("link_title"),
                "flair": data.get("link_flair_text"),
                "source": envelope.get("source"),
            }.items()
            if v
        }
    }
    address = envelope.get("address")
    common: dict[str, Any] = {
        "channel": "reddit",
        "dedup_key": ref(fullname),
        "sender": sender,
        "received_at": received_at,
        "external_id": fullname,
        "sent_at": sent_at,
        "own_refs": (ref(fullname),),
        "automated": _automated(data, sender),
        "recipients": (str(address),) if address else (),
        "meta": meta,
    }
    visibility: Visibility
    if kind == "t3":
        visibility = "public"
        title = _text(data.get("title"))
        body = _text(data.get("selftext"))
        if not body and not data.get("is_self", True):
            body = _text(data.get("url"))  # a link post: the link is what was said
        thread = ThreadSignals(conversation=(ref(fullname),))
        return InboundMessage(
            visibility=visibility, subject=title, text=body, thread=thread, **common
        )
    if kind == "t1":
        visibility = "public"
        parent = _optional_fullname(data.get("parent_id"), "parent_id")
        link = _optional_fullname(data.get("link_id"), "link_id") or _thread_of(data)
        thread = ThreadSignals(
            in_reply_to=(ref(parent),) if parent else (),
            conversation=(ref(link),) if link else (),
        )
        return InboundMessage(
            visibility=visibility, text=_text(data.get("body")), thread=thread, **common
        )
    visibility = "private"
    parent = _optional_fullname(data.get("parent_id"), "parent_id")
    first = _optional_fullname(data.get("first_message_name"), "first_message_name")
    thread = ThreadSignals(
        in_reply_to=(ref(parent),) if parent else (),
        conversation=(ref(first or fullname),),
    )
    return InboundMessage(
        visibility=visibility,
        subject=_text(data.get("subject")),
        text=_text(data.get("body")),
        thread=thread,
        **common,
    )


def _fullname(kind: str, data: Mapping[str, Any]) -> str:
    name = data.get("name")
    if not name and isinstance(data.get("id"), str):
        name = f"{kind}_{data['id']}"
    if not isinstance(name, str) or not _FULLNAME.fullmatch(name) or not name.startswith(kind):
        raise ParseError(f"Reddit {KINDS[kind]} without a valid fullname (name={name!r})")
    return name


def _optional_fullname(value: Any, field: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _FULLNAME.fullmatch(value):
        raise ParseError(f"Reddit item with a malformed {field}: {value!r}")
    return value


def _thread_of(data: Mapping[str, Any]) -> str | None:
    # Inbox copies of comments (mentions, replies) carry no link_id; their context link
    # names the submission.
    for key in ("context", "permalink"):
        value = data.get(key)
        if isinstance(value, str):
            found = _THREAD_IN_PATH.search(value)
            if found:
                return f"t3_{found.group(1)}"
    return None


def _sender(author: Any, about: Any) -> Sender:
    name = author if isinstance(author, str) else ""
    if name in GONE:
        # A deleted account is nobody in particular: never merged with anyone.
        return Sender(kind="reddit", handle="", name="[deleted]", anonymous=True)
    facts: dict[str, Any] = {}
    if isinstance(about, Mapping):
        for key in ("link_karma", "comment_karma"):
            value = about.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                facts[key] = value
    return Sender(kind="reddit", handle=name.lower(), name=name, facts=facts)


def _automated(data: Mapping[str, Any], sender: Sender) -> str | None:
    reason = SYSTEM_AUTHORS.get(sender.handle)
    if reason:
        return reason
    if data.get("distinguished") == "admin":
        return "a message from Reddit's admins"
    return None


def _time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ParseError(f"Reddit item with an impossible created_utc: {value!r}") from exc
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
