"""The Twitter parser, by a table of stored items (tests/channels/twitter/fixtures/stored/)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.registry import parser_table
from normalizer.mail import Caps
from normalizer.message import ParseError
from normalizer.parse import parse
from tests.support.helpers import fixture_bytes

RECEIVED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SUPPORT = "1412345678901234567"


def parsed(name: str):
    return parse(
        "twitter",
        fixture_bytes("twitter", "stored", name),
        envelope={},
        received_at=RECEIVED,
        caps=Caps(),
        parsers=parser_table(),
    )


MESSAGES = [
    (
        "mention_plain.json",
        {
            "visibility": "public",
            "dedup_key": "twitter:tweet:2123706672739255506",
            "external_id": "2123706672739255506",
            "handle": "1398765432109876543",
            "name": "Ann Example (@ann_exmpl)",
            "facts": {"username": "ann_exmpl", "followers_count": 212, "verified": False},
            "text_starts": "@ParityDesk I'm locked out of my account",
            "sent_at": datetime(2026, 11, 20, 9, 15, 2, tzinfo=UTC),
            "own_refs": ("twitter:tweet:2123706672739255506",),
            "conversation": ("twitter:conv:2123706672739255506",),
            "in_reply_to": (),
            "references": (),
        },
    ),
    (
        "mention_reply_in_thread.json",
        {
            "visibility": "public",
            "dedup_key": "twitter:tweet:2123710879626167506",
            "external_id": "2123710879626167506",
            "handle": "783214556",
            # Runs of spaces in display names are folded.
            "name": "Bob 🚀 Big (@bigbob)",
            "facts": {"username": "bigbob", "followers_count": 1204331, "verified": True},
            "text_starts": "@ParityDesk still no answer",
            "sent_at": datetime(2026, 11, 20, 9, 31, 45, tzinfo=UTC),
            "own_refs": ("twitter:tweet:2123710879626167506",),
            "conversation": ("twitter:conv:2123093922673591506",),
            "in_reply_to": ("twitter:tweet:2123093922673591506",),
            "references": (),
        },
    ),
    (
        "mention_quote_fr.json",
        {
            "visibility": "public",
            "dedup_key": "twitter:tweet:2123714801300407506",
            "external_id": "2123714801300407506",
            "handle": "1123581321345589144",
            "name": "Chloé Martin (@chloe_m)",
            "facts": {"username": "chloe_m", "followers_count": 87, "verified": False},
            "text_starts": "Est-ce que @ParityDesk a un problème ?",
            "sent_at": datetime(2026, 11, 20, 9, 47, 20, tzinfo=UTC),
            "own_refs": ("twitter:tweet:2123714801300407506",),
            "conversation": ("twitter:conv:2123714801300407506",),
            "in_reply_to": (),
            "references": ("twitter:tweet:2123690809881527506",),
        },
    ),
    (
        "mention_note_tweet.json",
        {
            "visibility": "public",
            "dedup_key": "twitter:tweet:2123718530036663506",
            "external_id": "2123718530036663506",
            "handle": "2244668800112233445",
            "name": "Dev Tester (@dt_dev)",
            "facts": {"username": "dt_dev", "followers_count": 3, "verified": False},
            # The whole long post, not the 280-character cut in `text`.
            "text_ends": "the old phone number's SIM.",
            "sent_at": datetime(2026, 11, 20, 10, 2, 9, tzinfo=UTC),
            "own_refs": ("twitter:tweet:2123718530036663506",),
            "conversation": ("twitter:conv:2123718530036663506",),
            "in_reply_to": (),
            "references": (),
        },
    ),
    (
        "mention_author_not_expanded.json",
        {
            "visibility": "public",
            "dedup_key": "twitter:tweet:2123744000000000001",
            "external_id": "2123744000000000001",
            "handle": "1555555555555555555",
            "name": "",
            "facts": {},
            "text_starts": "@ParityDesk hello?",
            "sent_at": datetime(2026, 11, 20, 11, 43, 21, tzinfo=UTC),
            "own_refs": ("twitter:tweet:2123744000000000001",),
            "conversation": ("twitter:conv:2123744000000000001",),
            "in_reply_to": (),
            "references": (),
        },
    ),
    (
        "dm_plain_fr.json",
        {
            "visibility": "private",
            "dedup_key": "twitter:dm:2123733088465847506",
            "external_id": "2123733088465847506",
            "handle": "1123581321345589144",
            "name": "Chloé Martin (@chloe_m)",
            "facts": {"username": "chloe_m", "followers_count": 87, "verified": False},
            "text_starts": "Bonjour, je n'arrive plus",
            "sent_at": datetime(2026, 11, 20, 11, 0, 0, tzinfo=UTC),
            "own_refs": ("twitter:dm-event:2123733088465847506",),
            "conversation": ("twitter:dm:1123581321345589144-1412345678901234567",),
            "in_reply_to": (),
            "references": (),
        },
    ),
    (
        "dm_with_media_and_tweet.json",
        {
            "visibility": "private",
            "dedup_key": "twitter:dm:2123735596659639506",
            "external_id": "2123735596659639506",
            "handle": "2244668800112233445",
            "name": "Dev Tester (@dt_dev)",
            "facts": {"username": "dt_dev", "followers_count": 3, "verified": False},
            "text_starts": "This is the screen I get",
            "sent_at": datetime(2026, 11, 20, 11, 9, 58, tzinfo=UTC),
            "own_refs": ("twitter:dm-event:2123735596659639506",),
            "conversation": ("twitter:dm:1412345678901234567-2244668800112233445",),
            "in_reply_to": (),
            # The tweet shared in the DM: a weak link, only for the sender's own cases.
            "references": ("twitter:tweet:2123718530036663506",),
        },
    ),
]


@pytest.mark.parametrize(("name", "want"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_stored_items_become_messages(name, want):
    message = parsed(name)
    assert message.channel == "twitter"
    assert message.visibility == want["visibility"]
    assert message.dedup_key == want["dedup_key"]
    assert message.external_id == want["external_id"]
    assert message.sender.kind == "twitter"
    assert message.sender.handle == want["handle"]
    assert message.sender.name == want["name"]
    assert message.sender.facts == want["facts"]
    assert message.text.startswith(want.get("text_starts", ""))
    assert message.text.endswith(want.get("text_ends", ""))
    assert message.sent_at == want["sent_at"]
    assert message.received_at == RECEIVED
    assert message.own_refs == want["own_refs"]
    assert message.thread.conversation == want["conversation"]
    assert message.thread.in_reply_to == want["in_reply_to"]
    assert message.thread.references == want["references"]
    assert message.subject == ""
    assert message.automated is None


def test_dm_media_are_listed_not_lost():
    message = parsed("dm_with_media_and_tweet.json")
    assert message.meta["twitter"]["media_keys"] == ["3_2123735590000000000"]


REFUSED = [
    ("mention_without_author_id.json", "author_id"),
    ("mention_by_support_account.json", "our own support account"),
    ("dm_from_support_account.json", "our own support account"),
    ("dm_participants_join.json", "ParticipantsJoin"),
    ("truncated.json", "not JSON"),
    ("unknown_kind.json", "unknown twitter item kind 'like'"),
]


@pytest.mark.parametrize(("name", "why"), REFUSED, ids=[r[0] for r in REFUSED])
def test_items_that_are_not_customer_messages_are_refused_with_a_reason(name, why):
    with pytest.raises(ParseError, match=why):
        parsed(name)
