"""Twilio: a stored webhook form post (SMS, MMS, call, menu choice, recording, transcript) to
an InboundMessage. Everything here is pure.

The connector stores the form body exactly as Twilio posted it, and says in the envelope which
webhook it came to (`kind`): sms, call, menu, recording or transcription. A parser fix can then
be replayed over exactly what Twilio said.

Identity is the E.164 number. A withheld caller id is nobody in particular: anonymous, so each
such call is its own contact. The conversation key is the number (a caller or texter with an
open case joins it) plus, for voice, the CallSid, so a voicemail and a callback request always
join their own call's case, even from a withheld number.

A voicemail is one message keyed by its RecordingSid: the recording-status callback and the
transcription callback both parse to it, and the worker folds the later one into the stored
message (normalizer/voicemail.py `merge_voicemail`), in either order and any number of times.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from normalizer.mail import Caps
from normalizer.message import InboundMessage, ParseError, Sender, ThreadSignals
from normalizer.parse import check_size
from normalizer.voicemail import voicemail_text

KINDS = ("sms", "call", "menu", "recording", "transcription")
# What carriers and Twilio put in From when the caller withheld the number: the spelled
# words, and the digit strings that spell them on a phone keypad (ANONYMOUS, RESTRICTED,
# UNAVAILABLE, BLOCKED, UNKNOWN).
WITHHELD = frozenset(
    {
        "",
        "anonymous",
        "restricted",
        "unknown",
        "unavailable",
        "private",
        "blocked",
        "+266696687",
        "266696687",
        "+7378742833",
        "7378742833",
        "+2562533",
        "2562533",
        "+8656696",
        "8656696",
        "+86282452253",
    }
)
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# Carrier keywords (CTIA): opt-out, opt back in, and help. Matched on the whole message body.
STOP_WORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout"})
START_WORDS = frozenset({"start", "yes", "unstop"})
HELP_WORDS = frozenset({"help", "info"})
MAX_MEDIA = 10  # Twilio delivers at most ten media items per MMS


def phone_ref(number: str) -> str:
    return f"phone:{number}"


def call_ref(call_sid: str) -> str:
    return f"twilio:call:{call_sid}"


def keyword(body: str) -> str | None:
    """ "stop", "start" or "help" when the whole text is such a carrier keyword."""
    word = body.strip().strip(".!").lower()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


def normalise_number(value: str) -> str | None:
    """The E.164 form of a caller id, or None when it is withheld or not a number."""
    cleaned = re.sub(r"[\s\-().]", "", value or "")
    if cleaned.lower() in WITHHELD:
        return None
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    if not cleaned.startswith("+"):
        # Twilio sends E.164; a bare national number cannot be placed in a country.
        return None
    return cleaned if _E164.match(cleaned) else None


def form(raw: bytes) -> dict[str, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"twilio form post is not UTF-8: {exc}") from exc
    # Twilio sends each parameter once; a repeated one keeps its last value, as validators do.
    return dict(parse_qsl(text, keep_blank_values=True))


STATUS_UNREADABLE = "twilio status callback has no valid MessageSid and MessageStatus"


def source_key(kind: str, params: Mapping[str, str]) -> str:
    """The intake key of one webhook: a retry by Twilio carries the same one."""
    if kind == "sms":
        return "sms:" + _need(params, "MessageSid")
    if kind == "call":
        return "call:" + _need(params, "CallSid")
    if kind == "menu":
        return f"menu:{_need(params, 'CallSid')}:{params.get('Digits', '')}"
    if kind == "recording":
        return "recording:" + _need(params, "RecordingSid")
    if kind == "transcription":
        return "transcription:" + _need(params, "TranscriptionSid")
    raise ParseError(f"unknown twilio webhook kind {kind!r}")


def parse(
    raw: bytes, *, envelope: Mapping[str, Any], received_at: datetime, caps: Caps
) -> InboundMessage:
    """The SMS and voice channels' parser in the normalizer's parser table (handed to it by
    the composition root from connectors/registry.py)."""
    check_size(raw, caps, "Twilio post")
    return parse_twilio(raw, envelope=envelope, received_at=received_at)


def parse_twilio(
    raw: bytes, *, envelope: Mapping[str, Any], received_at: datetime
) -> InboundMessage:
    params = form(raw)
    kind = str(envelope.get("kind") or "")
    if kind == "sms":
        return _sms(params, received_at)
    if kind == "call":
        return _call(params, received_at)
    if kind == "menu":
        return _menu(params, received_at)
    if kind in ("recording", "transcription"):
        # The recording-status post has no From/To: they come in the signed callback URL.
        query = envelope.get("query")
        if isinstance(query, dict):
            params = {**{str(k): str(v) for k, v in query.items()}, **params}
        return _voicemail(kind, params, received_at)
    if kind == "status":
        # Only a status callback that cannot be applied is ever parsed (a dead letter).
        raise ParseError(STATUS_UNREADABLE)
    raise ParseError(f"unknown twilio webhook kind {kind!r}")


def sender(params: Mapping[str, str]) -> Sender:
    raw_from = params.get("From", "")
    number = normalise_number(raw_from)
    facts = {
        k.lower(): params[k]
        for k in ("FromCountry", "FromCity", "FromState", "CallerName")
        if params.get(k)
    }
    if number is None:
        return Sender(kind="phone", handle="", name="Withheld number", facts=facts, anonymous=True)
    name = params.get("CallerName", "").strip()
    return Sender(kind="phone", handle=number, name=name[:250], facts=facts)


def _conversation(who: Sender, call_sid: str | None = None) -> tuple[str, ...]:
    refs = [] if who.anonymous else [phone_ref(who.handle)]
    if call_sid:
        refs.append(call_ref(call_sid))
    return tuple(refs)


def _sms(params: Mapping[str, str], received_at: datetime) -> InboundMessage:
    sid = _need(params, "MessageSid")
    who = sender(params)
    body = params.get("Body", "")
    count = _int(params.get("NumMedia")) or 0
    media = [
        {"url": params[f"MediaUrl{i}"], "content_type": params.get(f"MediaContentType{i}", "")}
        for i in range(min(count, MAX_MEDIA))
        if params.get(f"MediaUrl{i}")
    ]
    word = keyword(body)
    meta: dict[str, Any] = {
        "twilio": {
            "kind": "mms" if media else "sms",
            "message_sid": sid,
            "to": params.get("To", ""),
            "media": media,
            "segments": _int(params.get("NumSegments")),
        }
    }
    if word:
        meta["twilio"]["keyword"] = word
    return InboundMessage(
        channel="sms",
        visibility="private",
        dedup_key=f"twilio:sms:{sid}",
        sender=who,
        received_at=received_at,
        external_id=sid,
        text=body,
        own_refs=(f"twilio:sms:{sid}",),
        thread=ThreadSignals(conversation=_conversation(who)),
        # A carrier keyword is an instruction to the phone network, not a question.
        automated=f"{word.upper()} keyword" if word else None,
        recipients=(params.get("To", ""),),
        meta=meta,
    )


def _call(params: Mapping[str, str], received_at: datetime) -> InboundMessage:
    sid = _need(params, "CallSid")
    who = sender(params)
    shown = who.handle or "a withheld number"
    return InboundMessage(
        channel="voice",
        visibility="private",
        dedup_key=call_ref(sid),
        sender=who,
        received_at=received_at,
        external_id=sid,
        subject=f"Phone call from {shown}",
        text=f"Phone call from {shown}.",
        own_refs=(call_ref(sid),),
        thread=ThreadSignals(conversation=_conversation(who, sid)),
        recipients=(params.get("To", ""),),
        meta={
            "twilio": {
                "kind": "call",
                "call_sid": sid,
                "to": params.get("To", ""),
                "call_status": params.get("CallStatus", ""),
                "direction": params.get("Direction", ""),
            }
        },
    )


def _menu(params: Mapping[str, str], received_at: datetime) -> InboundMessage:
    sid = _need(params, "CallSid")
    who = sender(params)
    digits = params.get("Digits", "")
    callback = digits == "1"
    text = (
        f"Callback requested by {who.handle or 'a withheld number'}."
        if callback
        else f"Caller pressed {digits or 'nothing'} in the call menu."
    )
    return InboundMessage(
        channel="voice",
        visibility="private",
        dedup_key=f"twilio:menu:{sid}:{digits}",
        sender=who,
        received_at=received_at,
        external_id=sid,
        text=text,
        thread=ThreadSignals(conversation=_conversation(who, sid)),
        # The call itself opened the case and was acknowledged; this is a detail of it.
        automated="call menu choice",
        recipients=(params.get("To", ""),),
        # `callback_requested` is read by the worker: it sets the case's visible flag.
        meta={
            "twilio": {"kind": "menu", "call_sid": sid, "digits": digits},
            "callback_requested": callback,
        },
    )


def _voicemail(kind: str, params: Mapping[str, str], received_at: datetime) -> InboundMessage:
    recording = _need(params, "RecordingSid")
    call_sid = _need(params, "CallSid")
    who = sender(params)
    vm: dict[str, Any] = {
        "recording_sid": recording,
        "call_sid": call_sid,
        "recording_url": params.get("RecordingUrl", ""),
    }
    if kind == "recording":
        vm["duration_s"] = _int(params.get("RecordingDuration"))
        vm["recording_status"] = params.get("RecordingStatus", "")
    else:
        vm["transcription_sid"] = _need(params, "TranscriptionSid")
        vm["transcription_status"] = params.get("TranscriptionStatus", "")
        if params.get("TranscriptionStatus", "completed") == "completed":
            vm["transcript"] = params.get("TranscriptionText", "")
    vm = {k: v for k, v in vm.items() if v not in (None, "")}
    return InboundMessage(
        channel="voice",
        visibility="private",
        dedup_key=f"twilio:voicemail:{recording}",
        sender=who,
        received_at=received_at,
        external_id=recording,
        subject="Voicemail",
        text=voicemail_text(vm),
        own_refs=(f"twilio:recording:{recording}",),
        thread=ThreadSignals(conversation=_conversation(who, call_sid)),
        # The call opened the case and was acknowledged; the voicemail joins it.
        automated="voicemail of an acknowledged call",
        recipients=(params.get("To", ""),),
        meta={"voicemail": vm, "twilio": {"kind": "voicemail", "call_sid": call_sid}},
    )


def _need(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if not re.fullmatch(r"[A-Za-z0-9]{2,64}", value):
        raise ParseError(f"twilio post has no valid {name}")
    return value


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None
