"""One intake step for signed input nobody can read (normalizer/intake.py `unreadable_input`),
used by every webhook connector, each keeping its own key format and its replay, on SQLite
and PostgreSQL: stored under a key made from the bytes (hashlib here, not the code under
test), filed by the channel's own parser as a dead letter with why, and replayed by it."""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode

import pytest
from sqlalchemy import Engine, select

from inbox.models import DeadLetter, Intake, Message
from normalizer.deadletters import replay
from normalizer.intake import MAX_WHY, UNREADABLE, store, unreadable_input
from tests.support.helpers import normalize, normalizer

TWILIO_POST = urlencode({"Body": "my account was hacked", "From": "+14155550123"}).encode()

# (connector, channel, bytes the provider signed, key prefix, the connector's own envelope,
#  what the channel's parser says on the first try and on a replay)
CASES = [
    ("meta", "whatsapp", b"{not json", "unreadable", {}, "not JSON"),
    ("meta", "messenger", b'{"object":"page","entry":[]}', "unreadable", {}, "no entries"),
    ("telegram", "telegram", b"\xff\xfe not an update", "unreadable", {}, "not JSON"),
    (
        "twilio",
        "sms",
        TWILIO_POST,
        "unkeyed:sms",
        {"kind": "sms", "address": "+14155550100"},
        "MessageSid",
    ),
    ("twilio", "sms", TWILIO_POST, "unkeyed:status", {"kind": "status"}, "MessageSid"),
]


def test_the_key_is_the_prefix_and_the_bytes_hash_and_why_is_bounded() -> None:
    raw = b"\x00" * 10
    item = unreadable_input(
        "twilio", "voice", raw, "x" * 5000, prefix="unkeyed:call", envelope={"kind": "call"}
    )
    assert item.source_key == "unkeyed:call:" + hashlib.sha256(raw).hexdigest()
    assert item.envelope == {"kind": "call", UNREADABLE: "x" * MAX_WHY}
    assert (item.connector, item.channel, item.payload, item.state) == (
        "twilio",
        "voice",
        raw,
        "pending",
    )


@pytest.mark.parametrize(("connector", "channel", "raw", "prefix", "envelope", "why"), CASES)
def test_each_channel_files_it_as_a_dead_letter_and_replays_it(
    engine: Engine,
    connector: str,
    channel: str,
    raw: bytes,
    prefix: str,
    envelope: dict[str, str],
    why: str,
) -> None:
    item = unreadable_input(
        connector, channel, raw, "as read at the webhook", prefix=prefix, envelope=envelope
    )
    # The same bytes again (a provider's retry) add nothing.
    first, again = store(engine, [item]), store(engine, [item])
    assert not first[0].duplicate and again[0].duplicate
    with engine.connect() as conn:
        (key,) = conn.execute(select(Intake.source_key)).scalars().all()
    assert key == f"{prefix}:{hashlib.sha256(raw).hexdigest()}"
    assert [o.state for o in normalize(engine)] == ["dead"]
    with engine.connect() as conn:
        (letter,) = conn.execute(select(DeadLetter)).all()
    assert (letter.connector, letter.channel) == (connector, channel)
    assert why in letter.error
    result = replay(engine, normalizer(engine), letter.id)
    assert result.outcome == "still failing" and why in (result.error or "")
    with engine.connect() as conn:
        assert conn.execute(select(DeadLetter.replays)).scalars().all() == [1]
        assert conn.execute(select(Message.id)).all() == []
