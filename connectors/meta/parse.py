"""Meta's webhook bodies to messages, and to the status updates they carry. Pure functions.

One POST from Meta may carry many entries, each with many events, for any of our three
channels. The connector stores the raw body once (intake blobs are kept by their hash) and
one intake row per event, keyed by the event's own id; the envelope says where in the body
the event is (`at`). A parser fix can then be replayed over exactly what Meta sent, and a
redelivered body adds nothing: its events' keys are already stored.

Shapes followed (Meta's webhook reference):
- WhatsApp Cloud API: object "whatsapp_business_account", entry[].changes[] with field
  "messages", value.messages[] (text, image, audio, video, document, sticker, location,
  contacts, interactive, button, reaction) and value.statuses[] (sent, delivered, read, failed).
- Messenger: object "page", entry[].messaging[] (message, postback, with quick replies,
  attachments and story replies); entry[].changes[] field "feed" (comments on our posts).
- Instagram: object "instagram", entry[].messaging[] (as Messenger, plus story mentions);
  entry[].changes[] field "comments" (comments on our media).

Identity: WhatsApp's wa_id is the phone number; it is stored in E.164 as the phone identity,
so a number that texts by SMS and writes on WhatsApp is one contact. Messenger and Instagram
give page- and account-scoped ids (PSID, IGSID), each their own identity kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from normalizer.mail import Caps
from normalizer.message import InboundMessage, ParseError, Sender, ThreadSignals

# The body's `object` -> the channel its events belong to.
OBJECTS = {
    "whatsapp_business_account": "whatsapp",
    "page": "messenger",
    "instagram": "instagram",
}
# The public comment fields: on the page's posts and on our Instagram media.
COMMENT_FIELDS = {"messenger": "feed", "instagram": "comments"}
MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")
# Bounds on the work of one body, whatever Meta (or whoever signed it) puts in it.
MAX_EVENTS = 1000
MAX_TEXT = 100_000
MAX_ERROR = 500
# The states of a WhatsApp status webhook.
RANKED_STATES = ("sent", "delivered", "read", "failed")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class Event:
    """One event of a body: which channel, its intake key, and where it is in the body."""

    channel: str
    source_key: str
    at: tuple[int, str, int, int]  # entry index, "changes" | "messaging", index, message index


@dataclass(frozen=True)
class Status:
    """A delivery report on something we sent: a WhatsApp status, a Messenger read/delivery."""

    channel: str
    provider_id: str
    state: str  # sent | delivered | read | failed
    error: str | None = None
    error_code: int | None = None


@dataclass(frozen=True)
class Body:
    """What a signed body holds, read once on the webhook's path (`read_body`)."""

    channel: str | None  # None: its `object` is none of ours, or it could not be read
    events: list[Event]
    statuses: list[Status]
    # Why the body, or part of it, cannot be read; None when all of it can. Such a body is
    # kept as a dead letter (signed by Meta, so never dropped), beside any event it has.
    unreadable: str | None = None
    # What the body carries that Parity does not take in (a field we do not handle, an
    # echo of our own message, a reaction): "field account_update", "messaging reaction".
    # Not an error, so not a dead letter: the body is kept raw and counted (`unhandled`).
    unhandled: tuple[str, ...] = ()


def status_key(status: Status) -> str:
    """The intake key of one delivery report: a redelivered report carries the same one."""
    return f"status:{status.provider_id}:{status.state}"


# An intake key is at most 512 characters (inbox/models.py); an id longer than this is not
# one Meta gives, and is not put in the store's unique index.
MAX_KEY = 500


def read_body(raw: bytes) -> Body:
    """A body's events, statuses and what in it cannot be read. Never raises: a body Meta
    signed is stored whatever it holds, as messages, reports or a dead letter."""
    try:
        doc = load(raw)
    except ParseError as exc:
        return Body(None, [], [], str(exc))
    channel = OBJECTS.get(str(doc.get("object", "")))
    if channel is None:
        return Body(None, [], [], f"Meta webhook object {doc.get('object')!r} is not one of ours")
    entries = doc.get("entry")
    if not isinstance(entries, list) or not entries:
        return Body(channel, [], [], "Meta webhook body has no entries")
    try:
        scanned = scan(doc)
    except ParseError as exc:
        return Body(channel, [], [], str(exc))
    found, reports, unhandled = scanned.events, scanned.reports, scanned.unhandled
    problems = [
        f"entry {i} has neither changes nor messaging"
        for i, entry in enumerate(entries)
        if not isinstance(entry, dict)
        or not (isinstance(entry.get("changes"), list) or isinstance(entry.get("messaging"), list))
    ] + scanned.problems
    too_long = [e.source_key for e in found if len(e.source_key) > MAX_KEY] + [
        status_key(s) for s in reports if len(status_key(s)) > MAX_KEY
    ]
    if too_long:
        # Nothing of such a body goes in by its ids: all of it is one dead letter.
        return Body(channel, [], [], f"Meta webhook body has an id over {MAX_KEY} characters")
    unreadable = None
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        unreadable = "Meta webhook " + "; ".join(problems[:5]) + more
    return Body(channel, found, reports, unreadable, unhandled)


def load(raw: bytes) -> dict[str, Any]:
    """A body's JSON object. orjson: three times faster than the stdlib on the webhook's
    path, strict UTF-8, and nesting bounded (1024 levels), so a signed body nested deeper
    than the stdlib's recursion allows is unreadable, not a crash answered 500 for ever."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"Meta webhook body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ParseError("Meta webhook body is not a JSON object")
    return doc


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def e164(wa_id: str) -> str | None:
    """A WhatsApp id (digits, country code first) as an E.164 number, or None."""
    digits = re.sub(r"[\s\-().+]", "", wa_id or "")
    number = "+" + digits
    return number if digits.isdigit() and _E164.match(number) else None


def events(doc: Mapping[str, Any]) -> list[Event]:
    """Every message-like event of a body with its intake key (statuses are not events)."""
    return scan(doc).events


def statuses(doc: Mapping[str, Any]) -> list[Status]:
    """The delivery reports of a body: WhatsApp statuses, Messenger/Instagram reads."""
    return scan(doc).reports


@dataclass(frozen=True)
class Scan:
    events: list[Event]
    reports: list[Status]
    # What in the body is a message without the id that would key it ("entry 0 change 0
    # message 1 has no id"): kept as a dead letter, never skipped.
    problems: list[str]
    # What is neither an event, a report nor a problem, named (`Body.unhandled`).
    unhandled: tuple[str, ...] = ()


def scan(doc: Mapping[str, Any]) -> Scan:
    """A body's events and delivery reports, in one walk over it (the webhook's hot path)."""
    channel = OBJECTS.get(str(doc.get("object", "")))
    if channel is None:
        return Scan([], [], [])
    found: list[Event] = []
    reports: list[Status] = []
    problems: list[str] = []
    unhandled: list[str] = []
    for e, entry in enumerate(_list(doc.get("entry"))):
        entry = _dict(entry)
        for c, change in enumerate(_list(entry.get("changes"))):
            change = _dict(change)
            value = _dict(change.get("value"))
            field = change.get("field")
            if channel == "whatsapp" and field == "messages":
                for m, message in enumerate(_list(value.get("messages"))):
                    wamid = _dict(message).get("id")
                    if isinstance(wamid, str) and wamid:
                        found.append(Event(channel, f"wa:{wamid}", (e, "changes", c, m)))
                    else:
                        problems.append(f"entry {e} change {c} message {m} has no id")
                if value.get("errors"):
                    unhandled.append("messages errors")
            elif field == COMMENT_FIELDS.get(channel):
                key = _comment_key(channel, value)
                if key:
                    found.append(Event(channel, key, (e, "changes", c, 0)))
                else:
                    unhandled.append(label(field, value.get("item"), value.get("verb")))
            else:
                unhandled.append(label("field", field))
            for status in _list(value.get("statuses")):
                report = _whatsapp_status(_dict(status))
                if report is not None:
                    reports.append(report)
        if channel != "whatsapp":
            for i, item in enumerate(_list(entry.get("messaging"))):
                item = _dict(item)
                key = _messaging_key(item)
                if key:
                    found.append(Event(channel, key, (e, "messaging", i, 0)))
                elif _unkeyed(item):
                    problems.append(f"entry {e} messaging {i} is a message without its mid")
                direct = _direct_reports(channel, item)
                reports.extend(direct)
                if not key and not direct and not _unkeyed(item):
                    unhandled.append(label("messaging", *_messaging_kind(item)))
        if len(found) > MAX_EVENTS:
            raise ParseError(f"Meta webhook body has over {MAX_EVENTS} events")
        if len(reports) > MAX_EVENTS:
            raise ParseError(f"Meta webhook body has over {MAX_EVENTS} statuses")
    return Scan(found, reports, problems, _distinct(unhandled))


# Labels are names Meta gives (fields, verbs); anything else, from whoever signed the body,
# is "other", so a label is short and safe to show and count.
_NAME = re.compile(r"[a-z0-9_]{1,40}")
MAX_LABELS = 10


def label(*parts: Any) -> str:
    """What was not taken in, as words: ("field", "account_update") -> "field account_update"."""
    return " ".join(
        p if isinstance(p, str) and _NAME.fullmatch(p) else "other" for p in parts if p is not None
    )


def _distinct(labels: list[str]) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(labels))
    return found if len(found) <= MAX_LABELS else (*found[:MAX_LABELS], "more")


def _messaging_kind(item: Mapping[str, Any]) -> tuple[str, ...]:
    """What a messaging item we do not take in is: ("message", "echo"), ("reaction",)."""
    message = _dict(item.get("message"))
    if message:
        return ("message", "echo" if message.get("is_echo") else "deleted")
    kinds = [k for k in item if k not in ("sender", "recipient", "timestamp")]
    return (str(kinds[0]),) if kinds else ("empty",)


def _unkeyed(item: Mapping[str, Any]) -> bool:
    """A customer's message or tap that `_messaging_key` found no key for (not an echo)."""
    message = _dict(item.get("message"))
    if message:
        return not (message.get("is_echo") or message.get("is_deleted"))
    return bool(_dict(item.get("postback")))


def _whatsapp_status(status: Mapping[str, Any]) -> Status | None:
    wamid, state = status.get("id"), status.get("status")
    if not isinstance(wamid, str) or not wamid or state not in RANKED_STATES:
        return None
    errors = [_dict(x) for x in _list(status.get("errors"))]
    code = errors[0].get("code") if errors else None
    error = None
    if errors:
        first = errors[0]
        detail = _dict(first.get("error_data")).get("details") or first.get("message")
        error = f"WhatsApp error {code}: {first.get('title', '')}"
        if detail:
            error += f" ({detail})"
        error = error[:MAX_ERROR]  # shown on the row and the case: bounded, whoever wrote it
    return Status("whatsapp", wamid, str(state), error, code if isinstance(code, int) else None)


def _direct_reports(channel: str, item: Mapping[str, Any]) -> list[Status]:
    """Messenger's and Instagram's `delivery` (many mids) and `read` (one mid)."""
    found: list[Status] = []
    delivery = _dict(item.get("delivery"))
    for mid in _list(delivery.get("mids")):
        if isinstance(mid, str):
            found.append(Status(channel, mid, "delivered"))
    read_mid = _dict(item.get("read")).get("mid")
    if isinstance(read_mid, str):
        found.append(Status(channel, read_mid, "read"))
    return found


def _comment_key(channel: str, value: Mapping[str, Any]) -> str | None:
    if channel == "messenger":
        # Only new comments by someone else: edits, removals, reactions and our own posts
        # are not questions.
        if value.get("item") != "comment" or value.get("verb") != "add":
            return None
        comment = value.get("comment_id")
        return f"comment:{comment}" if isinstance(comment, str) and comment else None
    comment = value.get("id")
    return f"comment:{comment}" if isinstance(comment, str) and comment else None


def _messaging_key(item: Mapping[str, Any]) -> str | None:
    message = _dict(item.get("message"))
    if message:
        # An echo is our own page's message, sent by us or by someone in the inbox.
        if message.get("is_echo") or message.get("is_deleted"):
            return None
        mid = message.get("mid")
        return f"mid:{mid}" if isinstance(mid, str) and mid else None
    postback = _dict(item.get("postback"))
    if postback:
        mid = postback.get("mid")
        if isinstance(mid, str) and mid:
            return f"postback:{mid}"
        # Older postbacks carry no mid: the sender and the time name one tap.
        sender = _dict(item.get("sender")).get("id")
        return f"postback:{sender}:{item.get('timestamp')}" if sender else None
    return None


# --- one event to a message -------------------------------------------------------------


def _at(envelope: Mapping[str, Any]) -> tuple[int, str, int, int]:
    at = envelope.get("at")
    if (
        not isinstance(at, list | tuple)
        or len(at) != 4
        or at[1] not in ("changes", "messaging")
        or not all(isinstance(at[i], int) and at[i] >= 0 for i in (0, 2, 3))
    ):
        raise ParseError(f"Meta intake envelope has no event position: {at!r}")
    return int(at[0]), str(at[1]), int(at[2]), int(at[3])


def _pick(doc: Mapping[str, Any], at: tuple[int, str, int, int]) -> dict[str, Any]:
    try:
        entry = _dict(_list(doc.get("entry"))[at[0]])
        return _dict(_list(entry.get(at[1]))[at[2]])
    except IndexError as exc:
        raise ParseError(f"Meta webhook body has no event at {list(at)}") from exc


def parse(
    raw: bytes, *, envelope: Mapping[str, Any], received_at: datetime, caps: Caps
) -> InboundMessage:
    """The parser of all three channels (the envelope's position names the event)."""
    if len(raw) > caps.max_bytes:
        raise ParseError(f"Meta webhook body is {len(raw)} bytes, over the cap of {caps.max_bytes}")
    if "at" not in envelope and "unreadable" in envelope:
        return _unreadable(raw, received_at, caps)
    doc = load(raw)
    channel = OBJECTS.get(str(doc.get("object", "")))
    if channel is None:
        raise ParseError(f"Meta webhook object {doc.get('object')!r} is not one of ours")
    at = _at(envelope)
    item = _pick(doc, at)
    if channel == "whatsapp":
        return _whatsapp(item, at[3], received_at)
    if at[1] == "changes":
        return _comment(channel, item, received_at)
    return _direct(channel, item, received_at)


def _unreadable(raw: bytes, received_at: datetime, caps: Caps) -> InboundMessage:
    """A body stored as unreadable, read again (a replay runs today's code): still
    unreadable, the reason now; readable, with one event, that event (its own dedup key makes
    it a duplicate if it went in by itself too)."""
    body = read_body(raw)
    if body.unreadable:
        raise ParseError(body.unreadable)
    if len(body.events) != 1:
        raise ParseError(
            f"Meta webhook body is readable now, with {len(body.events)} events and "
            f"{len(body.statuses)} delivery reports: one dead letter files one event only"
        )
    return parse(raw, envelope={"at": list(body.events[0].at)}, received_at=received_at, caps=caps)


def _text(value: Any) -> str:
    return str(value)[:MAX_TEXT] if isinstance(value, str | int | float) else ""


def _seconds(value: Any, *, millis: bool = False) -> datetime | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if millis:
        number /= 1000
    if not 0 < number < 32_503_680_000:  # before the year 3000: not garbage
        return None
    return datetime.fromtimestamp(number, UTC)


# --- WhatsApp -----------------------------------------------------------------------------


def _whatsapp(change: Mapping[str, Any], index: int, received_at: datetime) -> InboundMessage:
    value = _dict(change.get("value"))
    messages = _list(value.get("messages"))
    if index >= len(messages):
        raise ParseError(f"WhatsApp change has no message {index}")
    message = _dict(messages[index])
    wamid = _text(message.get("id"))
    wa_id = _text(message.get("from"))
    number = e164(wa_id)
    if not wamid or number is None:
        raise ParseError(f"WhatsApp message without an id or a number: {wamid!r} {wa_id!r}")
    profile = next(
        (
            _dict(c.get("profile"))
            for c in map(_dict, _list(value.get("contacts")))
            if c.get("wa_id") == wa_id
        ),
        {},
    )
    name = _text(profile.get("name"))[:250]
    kind = _text(message.get("type")) or "unknown"
    text, details = whatsapp_content(kind, message)
    context = _dict(message.get("context"))
    replied = _text(context.get("id"))
    meta: dict[str, Any] = {
        "meta": {
            "kind": kind,
            "wamid": wamid,
            "phone_number_id": _text(_dict(value.get("metadata")).get("phone_number_id")),
            **details,
        }
    }
    if replied:
        meta["meta"]["context"] = replied
    return InboundMessage(
        channel="whatsapp",
        visibility="private",
        dedup_key=f"meta:wa:{wamid}",
        sender=Sender(kind="phone", handle=number, name=name, facts={"whatsapp": wa_id}),
        received_at=received_at,
        sent_at=_seconds(message.get("timestamp")),
        external_id=wamid,
        text=text,
        own_refs=(f"meta:wa:{wamid}",),
        thread=ThreadSignals(
            in_reply_to=(f"meta:wa:{replied}",) if replied else (),
            conversation=(f"whatsapp:{number}",),
        ),
        recipients=(_text(_dict(value.get("metadata")).get("display_phone_number")),),
        meta=meta,
    )


def whatsapp_content(kind: str, message: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The readable text of one WhatsApp message, and what else it carries (media ids)."""
    body = _dict(message.get(kind))
    if kind == "text":
        return _text(body.get("body")), {}
    if kind in MEDIA_TYPES:
        media = {
            "id": _text(body.get("id")),
            "mime_type": _text(body.get("mime_type")),
            "sha256": _text(body.get("sha256")),
            "filename": _text(body.get("filename"))[:200],
        }
        what = "voice note" if kind == "audio" and body.get("voice") else kind
        caption = _text(body.get("caption"))
        label = f"[{what}{': ' + media['filename'] if media['filename'] else ''}]"
        return (f"{caption}\n{label}" if caption else label), {"media": [media]}
    if kind == "location":
        where = ", ".join(_text(body.get(k)) for k in ("name", "address") if body.get(k))
        at = f"{_text(body.get('latitude'))},{_text(body.get('longitude'))}"
        return f"[location {at}{': ' + where if where else ''}]", {"location": at}
    if kind == "contacts":
        shared = []
        for contact in map(_dict, _list(message.get("contacts"))[:20]):
            name = _text(_dict(contact.get("name")).get("formatted_name"))
            phones = [_text(_dict(p).get("phone")) for p in _list(contact.get("phones"))[:5]]
            shared.append(f"{name} {' '.join(p for p in phones if p)}".strip())
        return "[shared contacts] " + "; ".join(shared), {}
    if kind == "interactive":
        choice = _dict(body.get(_text(body.get("type"))))
        title = _text(choice.get("title"))
        return title, {"choice": _text(choice.get("id"))}
    if kind == "button":
        return _text(body.get("text")), {"choice": _text(body.get("payload"))}
    if kind == "reaction":
        emoji = _text(body.get("emoji"))
        target = _text(body.get("message_id"))
        # An empty emoji is a removed reaction.
        return (f"[reacted {emoji}]" if emoji else "[removed a reaction]"), {"reacted_to": target}
    return f"[{kind} message Parity cannot show]", {}


# --- Messenger and Instagram Direct ------------------------------------------------------


def _direct(channel: str, item: Mapping[str, Any], received_at: datetime) -> InboundMessage:
    who = _text(_dict(item.get("sender")).get("id"))
    if not who:
        raise ParseError(f"{channel} event without a sender")
    message = _dict(item.get("message"))
    postback = _dict(item.get("postback"))
    details: dict[str, Any] = {}
    if message:
        mid = _text(message.get("mid"))
        key = f"mid:{mid}"
        text = _text(message.get("text"))
        quick = _dict(message.get("quick_reply"))
        if quick:
            details["choice"] = _text(quick.get("payload"))
        media = []
        for attachment in map(_dict, _list(message.get("attachments"))[:20]):
            kind = _text(attachment.get("type"))
            url = _text(_dict(attachment.get("payload")).get("url"))
            if kind == "story_mention":
                details["story_mention"] = url
                text = (text + "\n" if text else "") + "[mentioned us in their story]"
                continue
            if url:
                media.append({"type": kind, "url": url})
            text = (text + "\n" if text else "") + f"[{kind or 'attachment'}]"
        if media:
            details["media"] = media
        story = _dict(_dict(message.get("reply_to")).get("story"))
        if story:
            details["story_reply"] = _text(story.get("url")) or _text(story.get("id"))
            text = "[replied to our story]\n" + text if text else "[replied to our story]"
        replied = _text(_dict(message.get("reply_to")).get("mid"))
    elif postback:
        mid = _text(postback.get("mid"))
        key = f"postback:{mid}" if mid else f"postback:{who}:{item.get('timestamp')}"
        text = _text(postback.get("title"))
        details["choice"] = _text(postback.get("payload"))
        replied = ""
    else:
        raise ParseError(f"{channel} event is neither a message nor a postback")
    external = mid or key
    return InboundMessage(
        channel=channel,
        visibility="private",
        dedup_key=f"meta:{channel}:{key}",
        sender=Sender(kind=channel, handle=who),
        received_at=received_at,
        sent_at=_seconds(item.get("timestamp"), millis=True),
        external_id=external,
        text=text,
        own_refs=(f"meta:{channel}:{external}",),
        thread=ThreadSignals(
            in_reply_to=(f"meta:{channel}:{replied}",) if replied else (),
            conversation=(f"{channel}:{who}",),
        ),
        recipients=(_text(_dict(item.get("recipient")).get("id")),),
        meta={"meta": {"kind": "postback" if postback else "message", **details}},
    )


# --- public comments ----------------------------------------------------------------------


def _comment(channel: str, change: Mapping[str, Any], received_at: datetime) -> InboundMessage:
    value = _dict(change.get("value"))
    author = _dict(value.get("from"))
    who = _text(author.get("id"))
    if channel == "messenger":
        comment = _text(value.get("comment_id"))
        post = _text(value.get("post_id"))
        text = _text(value.get("message"))
        name = _text(author.get("name"))
        sent = _seconds(value.get("created_time"))
    else:
        comment = _text(value.get("id"))
        post = _text(_dict(value.get("media")).get("id"))
        text = _text(value.get("text"))
        name = _text(author.get("username"))
        sent = None
    parent = _text(value.get("parent_id"))
    if not comment or not who:
        raise ParseError(f"{channel} comment without an id or an author")
    # A reply to a comment threads with that comment; a top-level one with nothing earlier
    # (a post's comments are many people's, not one conversation).
    replied = parent if parent and parent != post else ""
    return InboundMessage(
        channel=channel,
        visibility="public",
        dedup_key=f"meta:{channel}:comment:{comment}",
        sender=Sender(kind=channel, handle=who, name=name[:250]),
        received_at=received_at,
        sent_at=sent,
        external_id=comment,
        text=text,
        own_refs=(f"meta:{channel}:comment:{comment}",),
        thread=ThreadSignals(in_reply_to=(f"meta:{channel}:comment:{replied}",) if replied else ()),
        meta={"meta": {"kind": "comment", "post": post, "comment": comment}},
    )


def iter_media(meta: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The media a stored message still has to fetch (its `meta.meta.media`)."""
    for media in _list(_dict(meta.get("meta")).get("media")):
        if isinstance(media, dict):
            yield media
