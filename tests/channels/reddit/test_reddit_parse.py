"""The Reddit parser, table-tested on the fixture items the fake server serves."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from connectors.reddit.parse import parse_reddit
from connectors.registry import parser_table
from normalizer.mail import Caps
from normalizer.message import ParseError
from normalizer.parse import parse
from tests.channels.reddit.reddit_fake import children

RECEIVED = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def item(listing: str, fullname: str) -> bytes:
    for child in children(listing):
        if child["data"]["name"] == fullname:
            return json.dumps(child).encode()
    raise AssertionError(f"{fullname} is not in {listing}")


# (listing, fullname, visibility, handle, subject, text starts, in_reply_to, conversation,
#  automated)
CASES = [
    (
        "inbox.json",
        "t4_2kq8v1f",
        "private",
        "dana_k_22",
        "Locked out of my account",
        "Hi, this is about my comment",
        (),
        ("reddit:t4_2kq8v1f",),
        None,
    ),
    (
        "inbox.json",
        "t1_m5bz2qp",  # a username mention: the inbox copy has no link_id, only a context
        "public",
        "kestrel_dev",
        "",
        "u/AcmeCloudSupport any news",
        ("reddit:t3_1h9b7kq",),
        ("reddit:t3_1h9b7kq",),
        None,
    ),
    (
        "inbox.json",
        "t1_m5bwq3n",  # a reply to one of our comments
        "public",
        "mira-oak",
        "",
        "The refund hasn't arrived",
        ("reddit:t1_m5a9f2d",),
        ("reddit:t3_1h97m2c",),
        None,
    ),
    (
        "inbox.json",
        "t4_2kq7h3c",  # a reply within a private exchange
        "private",
        "bytefield",
        "re: [C-000009] We received your message",
        "Thanks. The invoice number",
        ("reddit:t4_2kq5a0b",),
        ("reddit:t4_2kq5a0b",),
        None,
    ),
    (
        "inbox.json",
        "t4_2kq6z9y",
        "private",
        "reddit",
        "Your account is now verified",
        "Thanks for verifying",
        (),
        ("reddit:t4_2kq6z9y",),
        "a message from Reddit itself",
    ),
    (
        "inbox.json",
        "t4_2kq6m1e",
        "private",
        "automoderator",
        "Your post in r/AcmeCloud was held for review",
        "Posts from accounts younger",
        (),
        ("reddit:t4_2kq6m1e",),
        "AutoModerator",
    ),
    (
        "r_AcmeCloud_new.json",
        "t3_1h98uwx",
        "public",
        "throwaway_acme_9921",
        "Account hacked, 2FA changed, support silent for 3 days",
        "Someone changed my 2FA device",
        (),
        ("reddit:t3_1h98uwx",),
        None,
    ),
    (
        "r_AcmeCloud_new.json",
        "t3_1h97m2c",  # a link post: the link is the text
        "public",
        "mira-oak",
        "Billing charged twice for November",
        "https://status.acmecloud.example/incidents/",
        (),
        ("reddit:t3_1h97m2c",),
        None,
    ),
    (
        "r_AcmeCloud_comments.json",
        "t1_m5c0x4a",
        "public",
        "dana_k_22",
        "",
        "Same problem here since yesterday",
        ("reddit:t3_1h98uwx",),
        ("reddit:t3_1h98uwx",),
        None,
    ),
]


@pytest.mark.parametrize(
    ("listing", "fullname", "visibility", "handle", "subject", "text", "irt", "conv", "auto"),
    CASES,
    ids=[c[1] for c in CASES],
)
def test_items_become_messages(
    listing, fullname, visibility, handle, subject, text, irt, conv, auto
):
    raw = item(listing, fullname)
    data = json.loads(raw)["data"]
    message = parse_reddit(raw, envelope={"source": "inbox"}, received_at=RECEIVED)
    assert message.channel == "reddit"
    assert message.visibility == visibility
    assert message.dedup_key == f"reddit:{fullname}"
    assert message.external_id == fullname
    assert message.sender.kind == "reddit"
    assert message.sender.handle == handle
    assert message.sender.name == data["author"]  # the username as Reddit spells it
    assert message.subject == subject
    assert message.text.startswith(text)
    assert message.thread.in_reply_to == irt
    assert message.thread.conversation == conv
    assert message.own_refs == (f"reddit:{fullname}",)
    assert message.automated == auto
    assert message.sent_at == datetime.fromtimestamp(data["created_utc"], UTC)
    assert message.received_at == RECEIVED


def test_a_comment_threads_the_same_whichever_listing_it_came_from():
    # The mention is both in the inbox (no link_id) and in the subreddit's comments.
    from_inbox = parse_reddit(item("inbox.json", "t1_m5bz2qp"), envelope={}, received_at=RECEIVED)
    from_sub = parse_reddit(
        item("r_AcmeCloud_comments.json", "t1_m5bz2qp"), envelope={}, received_at=RECEIVED
    )
    assert from_inbox.dedup_key == from_sub.dedup_key
    assert from_inbox.thread == from_sub.thread
    assert from_inbox.text == from_sub.text


def test_karma_from_the_envelope_is_a_fact_and_the_address_a_recipient():
    message = parse_reddit(
        item("r_AcmeCloud_comments.json", "t1_m5c0x4a"),
        envelope={
            "source": "r/acmecloud/comments",
            "address": "r/AcmeCloud",
            "author_about": {"link_karma": 3, "comment_karma": 57, "is_gold": True},
        },
        received_at=RECEIVED,
    )
    assert message.sender.facts == {"link_karma": 3, "comment_karma": 57}
    assert message.recipients == ("r/AcmeCloud",)
    assert message.meta["reddit"]["source"] == "r/acmecloud/comments"
    assert message.meta["reddit"]["subreddit"] == "AcmeCloud"


def test_a_deleted_author_is_nobody_in_particular():
    message = parse_reddit(
        item("r_AcmeCloud_comments.json", "t1_m5byy01"), envelope={}, received_at=RECEIVED
    )
    assert message.sender.anonymous
    assert message.sender.handle == ""
    assert message.text == "[removed]"


BAD = [
    (b"not json at all", "not a Reddit JSON item"),
    (b"\xff\xfe", "not a Reddit JSON item"),
    (b"[1, 2]", "not a Reddit item"),
    (json.dumps({"kind": "t5", "data": {"name": "t5_2qh1i"}}).encode(), "kind 't5'"),
    (json.dumps({"kind": "t1", "data": {"body": "no name"}}).encode(), "without a valid fullname"),
    (json.dumps({"kind": "t1", "data": {"name": "t3_abc"}}).encode(), "without a valid fullname"),
    (
        json.dumps({"kind": "t1", "data": {"name": "t1_abc", "parent_id": "x; drop"}}).encode(),
        "malformed parent_id",
    ),
    (
        json.dumps({"kind": "t4", "data": {"name": "t4_abc", "created_utc": 1e300}}).encode(),
        "impossible created_utc",
    ),
]


@pytest.mark.parametrize(("raw", "error"), BAD, ids=[e for _, e in BAD])
def test_bad_items_are_parse_errors(raw, error):
    with pytest.raises(ParseError, match=error):
        parse_reddit(raw, envelope={}, received_at=RECEIVED)


def test_parse_dispatches_reddit_and_caps_its_size():
    raw = item("inbox.json", "t4_2kq8v1f")
    message = parse(
        "reddit", raw, envelope={}, received_at=RECEIVED, caps=Caps(), parsers=parser_table()
    )
    assert message.external_id == "t4_2kq8v1f"
    with pytest.raises(ParseError, match="over the cap"):
        parse(
            "reddit",
            raw,
            envelope={},
            received_at=RECEIVED,
            caps=Caps(max_bytes=len(raw) - 1),
            parsers=parser_table(),
        )
