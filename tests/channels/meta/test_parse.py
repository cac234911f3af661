"""Meta's webhook bodies to messages: every message type, by a table of our fixtures.

The expected values are read off the fixture files by hand, not from the parser."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.meta.parse import Status, e164, events, parse, statuses
from normalizer.mail import Caps
from normalizer.message import InboundMessage, ParseError
from tests.channels.meta.support import body_of, fixture

RECEIVED = datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC)
WA_PREFIX = "wamid.HBgLMTYzMTU1NTExODEVAgASGBQz"

# fixture: (channel, visibility, identity kind, handle, text must contain, meta kind)
TABLE: dict[str, tuple[str, str, str, str, str, str]] = {
    "wa_text": (
        "whatsapp",
        "private",
        "phone",
        "+16315551181",
        "Instagram account was hacked",
        "text",
    ),
    "wa_image": (
        "whatsapp",
        "private",
        "phone",
        "+16315551181",
        "This is the login alert I got\n[image]",
        "image",
    ),
    "wa_voice": ("whatsapp", "private", "phone", "+16315551181", "[voice note]", "audio"),
    "wa_video": ("whatsapp", "private", "phone", "+16315551181", "[video]", "video"),
    "wa_document": (
        "whatsapp",
        "private",
        "phone",
        "+16315551181",
        "[document: invoice-2026-11.pdf]",
        "document",
    ),
    "wa_sticker": ("whatsapp", "private", "phone", "+16315551181", "[sticker]", "sticker"),
    "wa_location": (
        "whatsapp",
        "private",
        "phone",
        "+16315551181",
        "[location 40.7128,-74.006: Apple Fifth Avenue, 767 5th Ave",
        "location",
    ),
    "wa_contacts": (
        "whatsapp",
        "private",
        "phone",
        "+16315551181",
        "Dana Whitfield +1 (631) 555-0142",
        "contacts",
    ),
    "wa_interactive": (
        "whatsapp",
        "private",
        "phone",
        "+16315551181",
        "Still locked out",
        "interactive",
    ),
    "wa_list_reply": (
        "whatsapp",
        "private",
        "phone",
        "+16315551181",
        "Two-factor codes",
        "interactive",
    ),
    "wa_button": ("whatsapp", "private", "phone", "+16315551181", "Talk to a person", "button"),
    "wa_reaction": (
        "whatsapp",
        "private",
        "phone",
        "+16315551181",
        "[reacted \U0001f64f]",
        "reaction",
    ),
    "ms_text": (
        "messenger",
        "private",
        "messenger",
        "7208451234567890",
        "cannot get back in",
        "message",
    ),
    "ms_attachment": (
        "messenger",
        "private",
        "messenger",
        "7208451234567890",
        "[image]",
        "message",
    ),
    "ms_quick_reply": (
        "messenger",
        "private",
        "messenger",
        "7208451234567890",
        "Account hacked",
        "message",
    ),
    "ms_postback": (
        "messenger",
        "private",
        "messenger",
        "7208451234567890",
        "Get Started",
        "postback",
    ),
    "ms_feed_comment": (
        "messenger",
        "public",
        "messenger",
        "6543210987654321",
        "new admin removed me",
        "comment",
    ),
    "ig_text": (
        "instagram",
        "private",
        "instagram",
        "1139876543210456",
        "email and phone were changed",
        "message",
    ),
    "ig_story_reply": (
        "instagram",
        "private",
        "instagram",
        "1139876543210456",
        "[replied to our story]\nis this still",
        "message",
    ),
    "ig_story_mention": (
        "instagram",
        "private",
        "instagram",
        "1139876543210456",
        "[mentioned us in their story]",
        "message",
    ),
    "ig_comment": (
        "instagram",
        "public",
        "instagram",
        "1139876543210999",
        "my account is locked",
        "comment",
    ),
}


def only_message(name: str) -> InboundMessage:
    raw = body_of(fixture(name))
    found = events(json.loads(raw))
    assert len(found) == 1, found
    return parse(raw, envelope={"at": list(found[0].at)}, received_at=RECEIVED, caps=Caps())


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_message_type_parses(name: str) -> None:
    channel, visibility, kind, handle, text, meta_kind = TABLE[name]
    message = only_message(name)
    assert (message.channel, message.visibility) == (channel, visibility)
    assert (message.sender.kind, message.sender.handle) == (kind, handle)
    assert text in message.text
    assert message.meta["meta"]["kind"] == meta_kind
    assert message.received_at == RECEIVED
    assert message.dedup_key.startswith(f"meta:{channel}:") or message.dedup_key.startswith(
        "meta:wa:"
    )


def test_whatsapp_keys_names_and_times() -> None:
    message = only_message("wa_text")
    assert message.external_id == WA_PREFIX + "QTdGRjk0NzBBQ0YzNEJCN0Y0NQA="
    assert message.sender.name == "Kerry Fisher"
    # 1764504000 seconds after the epoch.
    assert message.sent_at == datetime(2025, 11, 30, 12, 0, tzinfo=UTC)
    assert message.thread.conversation == ("whatsapp:+16315551181",)
    media = only_message("wa_image").meta["meta"]["media"]
    assert media == [
        {
            "id": "1314155889291374",
            "mime_type": "image/jpeg",
            "sha256": "Lh0TJYzXtM0mdtr1v4Jp6vQZQ5MdxP1PKHWvc6JO9Zs=",
            "filename": "",
        }
    ]
    # A button reply answers our message: it threads with it.
    assert only_message("wa_interactive").thread.in_reply_to == (
        "meta:wa:wamid.HBgLMTYzMTU1NTExODEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
    )


def test_public_comments_name_their_post_and_thread_replies() -> None:
    fb = only_message("ms_feed_comment")
    assert fb.external_id == "1122334455667788_998877665544332"
    assert fb.sender.name == "Priya Raman"
    # A top-level comment (parent is the post) continues nothing.
    assert fb.thread.in_reply_to == ()
    ig = only_message("ig_comment")
    assert (ig.external_id, ig.sender.name) == ("17865799348089039", "lena.k.photos")
    assert ig.meta["meta"]["post"] == "17887498072083520"


def test_echoes_and_delivery_reports_are_not_messages() -> None:
    assert events(fixture("ms_echo")) == []
    assert events(fixture("ms_delivery")) == []
    assert statuses(fixture("ms_delivery")) == [Status("messenger", "m_SentByUs0001", "delivered")]
    for state in ("sent", "delivered", "read", "failed"):
        assert events(fixture(f"wa_status_{state}")) == []


def test_status_reports_with_their_errors() -> None:
    sid = "wamid.HBgLMTYzMTU1NTExODEVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"
    assert statuses(fixture("wa_status_read")) == [Status("whatsapp", sid, "read")]
    assert statuses(fixture("wa_status_failed")) == [
        Status(
            "whatsapp",
            sid,
            "failed",
            "WhatsApp error 131026: Message undeliverable (Message Undeliverable.)",
            131026,
        )
    ]


def test_one_body_with_many_events_keys_each() -> None:
    doc = fixture("wa_text")
    second = fixture("wa_image")["entry"][0]["changes"][0]["value"]["messages"][0]
    doc["entry"][0]["changes"][0]["value"]["messages"].append(second)
    doc["entry"].append(fixture("wa_voice")["entry"][0])
    found = events(doc)
    assert [e.at for e in found] == [
        (0, "changes", 0, 0),
        (0, "changes", 0, 1),
        (1, "changes", 0, 0),
    ]
    raw = body_of(doc)
    texts = [
        parse(raw, envelope={"at": list(e.at)}, received_at=RECEIVED, caps=Caps()).text
        for e in found
    ]
    assert texts[1].endswith("[image]") and texts[2] == "[voice note]"
    assert len({e.source_key for e in found}) == 3


@pytest.mark.parametrize(
    ("wa_id", "number"),
    [
        ("16315551181", "+16315551181"),
        ("447700900123", "+447700900123"),
        ("+4915112345678", "+4915112345678"),
        ("0044770", None),  # a leading zero is no country code
        ("12345", None),  # too short to be a number
        ("1631555118x", None),
        ("", None),
    ],
)
def test_whatsapp_ids_become_e164(wa_id: str, number: str | None) -> None:
    assert e164(wa_id) == number


@pytest.mark.parametrize(
    ("raw", "envelope", "why"),
    [
        (b"not json", {"at": [0, "changes", 0, 0]}, "not JSON"),
        (b"[]", {"at": [0, "changes", 0, 0]}, "not a JSON object"),
        (b'{"object":"user"}', {"at": [0, "changes", 0, 0]}, "not one of ours"),
        (body_of(fixture("wa_text")), {"at": [3, "changes", 0, 0]}, "no event at"),
        (body_of(fixture("wa_text")), {"at": [0, "changes", 0, 9]}, "no message 9"),
        (body_of(fixture("wa_text")), {"at": "0"}, "no event position"),
        (body_of(fixture("wa_text")), {"at": [0, "../x", 0, 0]}, "no event position"),
    ],
)
def test_hostile_or_broken_input_is_a_parse_error(
    raw: bytes, envelope: dict[str, Any], why: str
) -> None:
    with pytest.raises(ParseError, match=why):
        parse(raw, envelope=envelope, received_at=RECEIVED, caps=Caps())


def test_the_size_cap_is_checked_first() -> None:
    raw = body_of(fixture("wa_text"))
    with pytest.raises(ParseError, match="over the cap"):
        parse(
            raw,
            envelope={"at": [0, "changes", 0, 0]},
            received_at=RECEIVED,
            caps=Caps(max_bytes=100),
        )


def test_a_body_with_too_many_events_is_refused() -> None:
    doc = fixture("wa_text")
    one = doc["entry"][0]["changes"][0]["value"]["messages"][0]
    doc["entry"][0]["changes"][0]["value"]["messages"] = [
        {**one, "id": f"wamid.{i}"} for i in range(1001)
    ]
    with pytest.raises(ParseError, match="over 1000 events"):
        events(doc)
