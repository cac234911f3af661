"""The Telegram parser over our fixtures: each message kind, what is not taken in, and the
unreadable. Expected values are read off the fixture files by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.telegram.intake import next_offset, raw_input
from connectors.telegram.parse import iter_media, load, parse, route
from normalizer.mail import Caps
from normalizer.message import ParseError
from tests.channels.telegram.support import IGNORED, PRIVATE, body_of, fixture

AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def parsed(name: str, caps: Caps | None = None) -> Any:
    return parse(body_of(fixture(name)), envelope={}, received_at=AT, caps=caps or Caps())


# fixture: (handle, name, text lines, media kinds, replies to, username)
TABLE: dict[str, tuple[str, str, list[str], list[str], tuple[str, ...], str | None]] = {
    "text": (
        "718293645",
        "Ana Lima",
        ["Hello, I lost access to my account and my email. How can I get back in?"],
        [],
        (),
        "ana_lima",
    ),
    "photo_caption": (
        "718293645",
        "Ana Lima",
        ["This is the error I get when I sign in", "[photo]"],
        ["photo"],
        (),
        "ana_lima",
    ),
    "document": (
        "5120934871",
        "Bruno",
        ["I was charged twice for November, invoice attached", "[document: invoice-2026-11.pdf]"],
        ["document"],
        (),
        None,
    ),
    "voice": ("6002114733", "Chiara Rossi", ["[voice message]"], ["voice"], (), "chiara_r"),
    "reply": (
        "718293645",
        "Ana Lima",
        ["Thanks. My old phone number was +55 11 91234-5678 if that helps."],
        [],
        ("telegram:718293645:19",),
        "ana_lima",
    ),
    "forwarded_sticker": ("5120934871", "Bruno", ["[forwarded]", "[sticker 😢]"], [], (), None),
}


def test_the_table_covers_every_private_fixture() -> None:
    assert set(TABLE) == set(PRIVATE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_message_kind_parses(name: str) -> None:
    handle, who, lines, kinds, replies, username = TABLE[name]
    update = fixture(name)
    message = parsed(name)
    chat = update["message"]["chat"]["id"]
    mid = update["message"]["message_id"]
    assert message.channel == "telegram" and message.visibility == "private"
    assert message.sender.kind == "telegram"
    assert (message.sender.handle, message.sender.name) == (handle, who)
    # The username is a fact, never the identity.
    assert message.sender.facts.get("username") == username
    assert message.text.split("\n") == lines
    assert [m["kind"] for m in iter_media(message.meta)] == kinds
    assert message.dedup_key == f"telegram:{chat}:{mid}"
    assert message.own_refs == (message.dedup_key,)
    assert message.thread.in_reply_to == replies
    assert message.thread.conversation == (f"telegram:{chat}",)
    assert message.sent_at == datetime.fromtimestamp(update["message"]["date"], UTC)
    assert message.meta["telegram"]["update_id"] == update["update_id"]
    assert message.automated is None


def test_a_photo_keeps_its_largest_size() -> None:
    [media] = list(iter_media(parsed("photo_caption").meta))
    assert media == {
        "kind": "photo",
        "file_id": "AgACAgQAAxkBAAMSZ1tlarge",
        "mime_type": "image/jpeg",
        "file_size": 48211,
    }


def test_a_document_keeps_its_name_and_type() -> None:
    [media] = list(iter_media(parsed("document").meta))
    assert (media["file_name"], media["mime_type"], media["file_size"]) == (
        "invoice-2026-11.pdf",
        "application/pdf",
        20431,
    )


@pytest.mark.parametrize(("name", "reason"), sorted(IGNORED.items()))
def test_group_messages_and_edits_are_not_taken_in(name: str, reason: str) -> None:
    routed = route(fixture(name))
    assert (routed.action, routed.reason) == ("ignore", reason)
    assert raw_input(body_of(fixture(name))) == (None, routed)
    # Replayed by hand, it says why it is no message.
    with pytest.raises(ParseError, match=reason):
        parsed(name)


def test_a_private_message_is_keyed_by_chat_and_message() -> None:
    item, routed = raw_input(body_of(fixture("text")))
    assert item is not None and routed is not None
    assert item.source_key == "msg:718293645:17"
    assert item.envelope == {"update_id": 640117201}
    # The edit of that message is not a second one.
    assert route(fixture("edited")).source_key == ""


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"message": {"message_id": 1, "chat": {"id": 5, "type": "private"}}}',
        b'{"update_id": true, "message": {}}',
        b'{"update_id": 5, "message": {"message_id": 1, "chat": {"type": "private"}}}',
        b"\xff\xfe{",
    ],
)
def test_unreadable_updates_are_kept_for_dead_letters(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse(raw, envelope={}, received_at=AT, caps=Caps())
    item, routed = raw_input(raw)
    assert routed is None and item is not None
    assert item.source_key.startswith("unreadable:") and item.payload == raw


def test_a_message_from_a_bot_is_not_acknowledged() -> None:
    update = fixture("text")
    update["message"]["from"]["is_bot"] = True
    message = parse(body_of(update), envelope={}, received_at=AT, caps=Caps())
    assert message.automated == "sent by a bot"


def test_the_size_cap_comes_first() -> None:
    raw = body_of(fixture("text"))
    with pytest.raises(ParseError, match="over the cap"):
        parse(raw, envelope={}, received_at=AT, caps=Caps(max_bytes=len(raw) - 1))


def test_a_message_without_text_or_known_content_says_so() -> None:
    update = fixture("text")
    del update["message"]["text"]
    assert parse(body_of(update), envelope={}, received_at=AT, caps=Caps()).text == (
        "[a message Parity cannot show]"
    )


@pytest.mark.parametrize(
    ("ids", "current", "expected"),
    [([], None, None), ([], 7, 7), ([5, 9, 6], None, 10), ([5], 8, 8), ([3, "x", True], 1, 4)],
)
def test_the_next_offset_is_one_past_the_highest_update(
    ids: list[Any], current: int | None, expected: int | None
) -> None:
    updates = [{"update_id": i} for i in ids]
    assert next_offset(updates, current) == expected


def test_load_refuses_what_is_not_an_object() -> None:
    with pytest.raises(ParseError):
        load(b'"a string"')
