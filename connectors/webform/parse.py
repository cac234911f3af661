"""A stored form post or status-page message to the one Message shape. A pure function.

The web handler stores a JSON document it built from the checked fields (the form's raw
multipart body carries the browser's boundary and nothing more worth keeping), so a parser
fix can be replayed over exactly what was accepted:

    {"v": 1, "kind": "form" | "followup", "sid": "f-...", "name": "...",
     "claims": [{"kind": "email", "handle": "..."}], "text": "...", "work": "js" | "nojs",
     "tag": "[C-000123 #token]" (a follow-up: the case tag the status page's token proved),
     "attachments": [{"filename": "...", "content_type": "...", "data": "<base64>"}]}

The sender is the submission (`web` identity `sid`), never the address or number typed:
those are claims (`meta["claims_reachable"]`) until the person confirms them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from inbox.i18n import supported
from normalizer.mail import Caps
from normalizer.message import AttachmentPart, InboundMessage, ParseError, Sender, ThreadSignals

MAX_TEXT = 100_000
MAX_ATTACHMENTS = 5
KINDS = ("form", "followup")


def _str(doc: Mapping[str, Any], key: str, limit: int) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise ParseError(f"web form field {key!r} is not text")
    return value[:limit]


def source_key(kind: str, form_token: str) -> str:
    """The intake key of a post: its kind and the hash of the form token it carried, so a
    double click or a replayed post is the same submission, stored once."""
    return f"{kind}:" + hashlib.sha256(form_token.encode()).hexdigest()[:40]


def conversation_of(sid: str) -> str:
    """The thread key of one submission: a follow-up by the same sender continues it."""
    return f"web:{sid}"


def parse(
    raw: bytes, *, envelope: Mapping[str, Any], received_at: datetime, caps: Caps
) -> InboundMessage:
    if len(raw) > caps.max_bytes:
        raise ParseError(f"web form post is {len(raw)} bytes, over the cap of {caps.max_bytes}")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"web form post is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("kind") not in KINDS:
        raise ParseError("web form post is not a version 1 form or follow-up")
    sid = _str(doc, "sid", 64)
    if not sid:
        raise ParseError("web form post has no submission id")
    kind = doc["kind"]
    claims = _claims(doc.get("claims", []))
    attachments = _attachments(doc.get("attachments", []))
    tag = _str(doc, "tag", 80)
    text = _str(doc, "text", MAX_TEXT)
    return InboundMessage(
        channel="web",
        visibility="private",
        dedup_key=f"web:{kind}:{envelope.get('key', sid)}"[:600],
        sender=Sender(kind="web", handle=sid, name=_str(doc, "name", 200)),
        received_at=received_at,
        # A follow-up carries the case tag its token proved: threading joins it by the token
        # (and reopens a resolved case inside the reopen window) as it would a mail reply.
        subject=tag if kind == "followup" else "",
        text=text,
        thread=ThreadSignals(conversation=(conversation_of(sid),)),
        attachments=attachments,
        # The language the person chose on the form: the case is answered in it.
        language=supported(_str(doc, "lang", 16)),
        meta={
            "web": {"kind": kind, "work": _str(doc, "work", 8)},
            **({"claims_reachable": ", ".join(claims)} if claims and kind == "form" else {}),
        },
    )


def _claims(items: Any) -> list[str]:
    """The handles the form gave (unverified), as `{"kind": ..., "handle": ...}` objects."""
    if not isinstance(items, list) or len(items) > 4:
        raise ParseError("web form post has a malformed list of claims")
    return [_str(item, "handle", 254) for item in items if isinstance(item, dict)]


def _attachments(items: Any) -> tuple[AttachmentPart, ...]:
    if not isinstance(items, list) or len(items) > MAX_ATTACHMENTS:
        raise ParseError("web form post has a malformed list of attachments")
    parts = []
    for item in items:
        if not isinstance(item, dict):
            raise ParseError("web form attachment is not an object")
        try:
            data = base64.b64decode(str(item.get("data", "")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ParseError("web form attachment is not base64") from exc
        parts.append(
            AttachmentPart(
                filename=_str(item, "filename", 200) or "file",
                content_type=_str(item, "content_type", 100) or "application/octet-stream",
                data=data,
            )
        )
    return tuple(parts)
