"""Twitter/X: a stored mention or direct message event (JSON) to an InboundMessage.

The connector stores each item as the API sent it, in the shape of a one-item API response:
`{"kind": "mention" | "dm", "account_id": ..., "data": {...}, "includes": {"users": [...]}}`,
so a parser fix can be replayed over exactly what X said. Everything here is pure.

Follower count and verified status become facts about the identity: stored for agents,
never part of the queue order (the SLA code never sees them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from normalizer.mail import Caps
from normalizer.message import InboundMessage, ParseError, Sender, ThreadSignals
from normalizer.parse import check_size


def tweet_ref(tweet_id: str) -> str:
    return f"twitter:tweet:{tweet_id}"


def conversation_ref(conversation_id: str) -> str:
    return f"twitter:conv:{conversation_id}"


def dm_conversation_ref(dm_conversation_id: str) -> str:
    return f"twitter:dm:{dm_conversation_id}"


def dm_event_ref(event_id: str) -> str:
    return f"twitter:dm-event:{event_id}"


def parse(
    raw: bytes, *, envelope: Mapping[str, Any], received_at: datetime, caps: Caps
) -> InboundMessage:
    """The twitter channel's parser in the normalizer's parser table (handed to it by the
    composition root from connectors/registry.py). The size cap every channel has: X's
    objects are small, so only a hostile or broken store ever reaches it."""
    check_size(raw, caps, "Twitter item")
    return parse_twitter(raw, received_at=received_at)


def parse_twitter(raw: bytes, *, received_at: datetime) -> InboundMessage:
    try:
        item = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"twitter item is not JSON: {exc}") from exc
    if not isinstance(item, dict):
        raise ParseError("twitter item is not a JSON object")
    kind = item.get("kind")
    data = item.get("data")
    if not isinstance(data, dict):
        raise ParseError("twitter item has no `data` object")
    users = _users(item.get("includes"))
    account_id = str(item.get("account_id") or "")
    if kind == "mention":
        return _mention(data, users, account_id, received_at)
    if kind == "dm":
        return _dm(data, users, account_id, received_at)
    raise ParseError(f"unknown twitter item kind {kind!r}")


def _mention(
    tweet: Mapping[str, Any],
    users: Mapping[str, Mapping[str, Any]],
    account_id: str,
    received_at: datetime,
) -> InboundMessage:
    tweet_id = _id(tweet.get("id"), "tweet id")
    author_id = _id(tweet.get("author_id"), "author_id (was the author_id expansion requested?)")
    if account_id and author_id == account_id:
        raise ParseError("tweet by our own support account; it is not a customer message")
    replied_to, quoted = _referenced(tweet.get("referenced_tweets"))
    conversation = _optional_id(tweet.get("conversation_id"))
    meta: dict[str, Any] = {
        "twitter": {
            "kind": "mention",
            "tweet_id": tweet_id,
            "conversation_id": conversation,
            "in_reply_to_user_id": _optional_id(tweet.get("in_reply_to_user_id")),
            "lang": tweet.get("lang"),
        }
    }
    return InboundMessage(
        channel="twitter",
        visibility="public",
        dedup_key=tweet_ref(tweet_id),
        sender=_sender(author_id, users.get(author_id)),
        received_at=received_at,
        external_id=tweet_id,
        text=_tweet_text(tweet),
        sent_at=_time(tweet.get("created_at")),
        own_refs=(tweet_ref(tweet_id),),
        thread=ThreadSignals(
            in_reply_to=tuple(tweet_ref(t) for t in replied_to),
            references=tuple(tweet_ref(t) for t in quoted),
            conversation=(conversation_ref(conversation),) if conversation else (),
        ),
        meta=meta,
    )


def _dm(
    event: Mapping[str, Any],
    users: Mapping[str, Mapping[str, Any]],
    account_id: str,
    received_at: datetime,
) -> InboundMessage:
    event_id = _id(event.get("id"), "dm event id")
    event_type = event.get("event_type", "MessageCreate")
    if event_type != "MessageCreate":
        raise ParseError(f"dm event {event_id} is a {event_type}, not a message")
    sender_id = _id(event.get("sender_id"), "sender_id (was dm_event.fields=sender_id requested?)")
    if account_id and sender_id == account_id:
        raise ParseError("direct message from our own support account; not a customer message")
    conversation = _optional_id(event.get("dm_conversation_id"))
    # A tweet shared in a DM is listed without a type.
    shared = [
        str(ref["id"])
        for ref in event.get("referenced_tweets") or []
        if isinstance(ref, dict) and _optional_id(ref.get("id")) is not None
    ]
    media = [
        str(k)
        for k in (event.get("attachments") or {}).get("media_keys", [])
        if isinstance(k, str | int)
    ]
    meta: dict[str, Any] = {
        "twitter": {
            "kind": "dm",
            "dm_event_id": event_id,
            "dm_conversation_id": conversation,
            # Media are listed, not fetched: DM media need the user's session to download.
            "media_keys": media,
        }
    }
    return InboundMessage(
        channel="twitter",
        visibility="private",
        dedup_key=f"twitter:dm:{event_id}",
        sender=_sender(sender_id, users.get(sender_id)),
        received_at=received_at,
        external_id=event_id,
        text=str(event.get("text") or ""),
        sent_at=_time(event.get("created_at")),
        own_refs=(dm_event_ref(event_id),),
        thread=ThreadSignals(
            references=tuple(tweet_ref(t) for t in shared),
            conversation=(dm_conversation_ref(conversation),) if conversation else (),
        ),
        meta=meta,
    )


def _users(includes: Any) -> dict[str, Mapping[str, Any]]:
    if not isinstance(includes, dict):
        return {}
    found: dict[str, Mapping[str, Any]] = {}
    for user in includes.get("users") or []:
        if isinstance(user, dict) and user.get("id") is not None:
            found[str(user["id"])] = user
    return found


def _sender(user_id: str, user: Mapping[str, Any] | None) -> Sender:
    """The identity is the user id, which never changes; the @handle is kept as a fact."""
    if user is None:
        # The expansion can be missing (a suspended or deleted author): still the same person.
        return Sender(kind="twitter", handle=user_id)
    username = str(user.get("username") or "")
    display = " ".join(str(user.get("name") or "").split())
    if display and username:
        name = f"{display} (@{username})"
    else:
        name = display or (f"@{username}" if username else "")
    facts: dict[str, Any] = {}
    if username:
        facts["username"] = username
    metrics = user.get("public_metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("followers_count"), int):
        facts["followers_count"] = metrics["followers_count"]
    if isinstance(user.get("verified"), bool):
        facts["verified"] = user["verified"]
    return Sender(kind="twitter", handle=user_id, name=name[:250], facts=facts)


def _tweet_text(tweet: Mapping[str, Any]) -> str:
    # Posts over 280 characters arrive truncated in `text`, whole in `note_tweet.text`.
    note = tweet.get("note_tweet")
    if isinstance(note, dict) and isinstance(note.get("text"), str) and note["text"]:
        return str(note["text"])
    return str(tweet.get("text") or "")


def _referenced(value: Any) -> tuple[list[str], list[str]]:
    replied_to: list[str] = []
    quoted: list[str] = []
    for ref in value or []:
        if not isinstance(ref, dict) or _optional_id(ref.get("id")) is None:
            continue
        if ref.get("type") == "replied_to":
            replied_to.append(str(ref["id"]))
        elif ref.get("type") == "quoted":
            quoted.append(str(ref["id"]))
    return replied_to, quoted


def _id(value: Any, what: str) -> str:
    found = _optional_id(value)
    if found is None:
        raise ParseError(f"twitter item has no valid {what}")
    return found


def _optional_id(value: Any) -> str | None:
    # X ids are decimal strings (64-bit snowflakes); 1:1 DM conversation ids are two joined.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value and value.replace("-", "").isdigit():
        return value
    return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
