"""The Twilio parser, pure: numbers, withheld caller ids, keywords, SMS/MMS/voice shapes, and
the voicemail merge of the recording and transcription callbacks in either order."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from connectors.twilio.parse import keyword, normalise_number, parse_twilio, source_key
from normalizer.message import ParseError
from normalizer.voicemail import merge_voicemail
from tests.channels.twilio.twilio_support import fixture

AT = datetime(2026, 11, 21, 1, 12, tzinfo=UTC)


def parse(kind: str, params: dict[str, str]):
    return parse_twilio(urlencode(params).encode(), envelope={"kind": kind}, received_at=AT)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550123", "+14155550123"),
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+1 (415) 555-0123", "+14155550123"),
        ("Anonymous", None),
        ("anonymous", None),
        ("+266696687", None),
        ("+7378742833", None),
        ("+2562533", None),
        ("+8656696", None),
        ("Restricted", None),
        ("Unknown", None),
        ("", None),
        ("4155550123", None),  # national: no country to place it in
        ("+0123456789", None),
        ("client:alice", None),
    ],
)
def test_numbers(raw: str, expected: str | None) -> None:
    assert normalise_number(raw) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", "stop"),
        (" stop ", "stop"),
        ("Unsubscribe", "stop"),
        ("START", "start"),
        ("unstop", "start"),
        ("HELP", "help"),
        ("help!", "help"),
        ("please stop calling me", None),
        ("Can you help me with my order?", None),
        ("", None),
    ],
)
def test_keywords(body: str, expected: str | None) -> None:
    assert keyword(body) == expected


def test_sms() -> None:
    params = fixture("sms")
    msg = parse("sms", params)
    assert msg.channel == "sms"
    assert msg.sender.kind == "phone" and msg.sender.handle == params["From"]
    assert not msg.sender.anonymous
    assert msg.text == params["Body"]
    assert msg.dedup_key == f"twilio:sms:{params['MessageSid']}"
    assert msg.thread.conversation == (f"phone:{params['From']}",)
    assert msg.automated is None
    assert msg.meta["twilio"]["media"] == []
    assert source_key("sms", params) == "sms:" + params["MessageSid"]


def test_mms_lists_its_media() -> None:
    params = fixture("mms", api="https://api.twilio.com")
    msg = parse("sms", params)
    media = msg.meta["twilio"]["media"]
    assert [m["url"] for m in media] == [params["MediaUrl0"], params["MediaUrl1"]]
    assert [m["content_type"] for m in media] == ["image/jpeg", "application/pdf"]
    assert msg.meta["twilio"]["kind"] == "mms"


def test_stop_is_automated_and_never_acknowledged() -> None:
    msg = parse("sms", {**fixture("sms"), "Body": "STOP"})
    assert msg.automated == "STOP keyword"


@pytest.mark.parametrize("withheld", ["Anonymous", "+266696687", "Restricted", ""])
def test_withheld_callers_are_anonymous_and_join_only_their_call(withheld: str) -> None:
    params = {**fixture("voice"), "From": withheld, "Caller": withheld}
    msg = parse("call", params)
    assert msg.sender.anonymous and msg.sender.handle == ""
    assert msg.thread.conversation == (f"twilio:call:{params['CallSid']}",)


def test_call_and_menu() -> None:
    call = parse("call", fixture("voice"))
    assert call.channel == "voice" and call.sender.handle == "+12125550142"
    assert call.thread.conversation == (
        "phone:+12125550142",
        f"twilio:call:{fixture('voice')['CallSid']}",
    )
    menu = parse("menu", fixture("menu"))
    assert menu.meta["callback_requested"] is True
    other = parse("menu", {**fixture("menu"), "Digits": "2"})
    assert other.meta["callback_requested"] is False


def test_voicemail_merge_is_order_free_and_idempotent() -> None:
    rec = parse("recording", fixture("recording"))
    tr = parse("transcription", fixture("transcription"))
    assert rec.dedup_key == tr.dedup_key
    transcript = fixture("transcription")["TranscriptionText"]
    a = merge_voicemail(rec.meta, tr.meta)
    b = merge_voicemail(tr.meta, rec.meta)
    assert a is not None and b is not None
    assert a[1]["voicemail"] == b[1]["voicemail"] and a[0] == b[0]
    assert transcript in a[0] and "(23 s)" in a[0]
    assert fixture("recording")["RecordingUrl"] in a[0]
    assert merge_voicemail(a[1], tr.meta) is None  # a retried callback adds nothing
    assert merge_voicemail(a[1], rec.meta) is None


def test_a_post_without_its_id_is_a_parse_error() -> None:
    params = fixture("sms")
    del params["MessageSid"]
    with pytest.raises(ParseError):
        parse("sms", params)
