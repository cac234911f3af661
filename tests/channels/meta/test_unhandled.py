"""Parts of a signed Meta body that Parity does not take in are kept, never dropped silently,
on SQLite and PostgreSQL: the body is stored raw once, in intake state "unhandled" (which the
normalizer never claims), named and counted per channel in the connector's status.

The bodies follow Meta's documented webhook shapes (written here); the labels expected are
written out by hand and the intake keys worked out with hashlib, not by the code under test.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from sqlalchemy import Engine, select

from connectors.base import ConnectorHealth
from connectors.meta.status import WebhookStats
from inbox.models import Intake, Message
from tests.channels.meta.support import Hooks, body_of, fixture
from tests.support.helpers import normalize

WABA = "102290129340398"
PAGE = "109876543210987"


def whatsapp_change(field: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA, "changes": [{"field": field, "value": value}]}],
    }


def page_messaging(item: dict[str, Any], obj: str = "page") -> dict[str, Any]:
    base = {"sender": {"id": "7208451234567890"}, "recipient": {"id": PAGE}}
    return {
        "object": obj,
        "entry": [{"id": PAGE, "time": 1764504000123, "messaging": [{**base, **item}]}],
    }


def page_feed(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "page",
        "entry": [{"id": PAGE, "changes": [{"field": "feed", "value": value}]}],
    }


# (body, channel, labels): what Meta sends when an app subscribed to more than we read.
UNHANDLED = [
    (
        whatsapp_change(
            "message_template_status_update",
            {"event": "APPROVED", "message_template_id": 1234, "message_template_name": "ack"},
        ),
        "whatsapp",
        ["field message_template_status_update"],
    ),
    (
        whatsapp_change("account_update", {"phone_number": "15550783881", "event": "VERIFIED"}),
        "whatsapp",
        ["field account_update"],
    ),
    (
        whatsapp_change(
            "messages",
            {
                "messaging_product": "whatsapp",
                "metadata": {"phone_number_id": "106540352242922"},
                "errors": [{"code": 131051, "title": "Message type unknown"}],
            },
        ),
        "whatsapp",
        ["messages errors"],
    ),
    (
        page_messaging(
            {"timestamp": 1764504000, "reaction": {"mid": "m_1", "action": "react", "emoji": "x"}}
        ),
        "messenger",
        ["messaging reaction"],
    ),
    (
        page_messaging({"timestamp": 1764504000, "optin": {"type": "notification_messages"}}),
        "messenger",
        ["messaging optin"],
    ),
    (
        page_feed({"item": "comment", "verb": "edited", "comment_id": "123_456", "message": "x"}),
        "messenger",
        ["feed comment edited"],
    ),
    (
        page_feed({"item": "reaction", "verb": "add", "reaction_type": "like"}),
        "messenger",
        ["feed reaction add"],
    ),
    (
        {
            "object": "instagram",
            "entry": [{"id": "17841400000000000", "changes": [{"field": "mentions", "value": {}}]}],
        },
        "instagram",
        ["field mentions"],
    ),
    (
        # A field name nobody documents, from whoever holds the app secret: not echoed.
        whatsapp_change("<script>" + "x" * 100, {}),
        "whatsapp",
        ["field other"],
    ),
]


def kept(engine: Engine) -> list[tuple[str, str, str, Any, bool]]:
    with engine.connect() as conn:
        return [
            (r.channel, r.source_key, r.state, r.envelope, r.acknowledge)
            for r in conn.execute(select(Intake).order_by(Intake.id))
        ]


@pytest.mark.parametrize(("doc", "channel", "labels"), UNHANDLED)
async def test_a_body_with_nothing_we_take_in_is_kept_named_and_counted(
    engine: Engine, doc: dict[str, Any], channel: str, labels: list[str]
) -> None:
    raw = body_of(doc)
    async with Hooks(engine) as hooks:
        status, text = await hooks.post(raw)
        assert status == 200
        assert json.loads(text)["unhandled"] == labels
        # Meta's redelivery of the same bytes adds nothing.
        assert (await hooks.post(raw))[0] == 200
        details = hooks.hooks.health.details["channels"][channel]
        assert details["unhandled_recent"] == labels
    key = "unhandled:" + hashlib.sha256(raw).hexdigest()
    assert kept(engine) == [(channel, key, "unhandled", {"unhandled": labels}, False)]
    # Not a message, not a dead letter: the normalizer never claims it.
    normalize(engine)
    assert kept(engine)[0][2] == "unhandled"
    with engine.connect() as conn:
        assert conn.execute(select(Message.id)).all() == []
    # The status count comes from the store, so a restart does not reset it.
    stats = WebhookStats(ConnectorHealth())
    stats.kept_unhandled(engine)
    counts = {c: f["unhandled_kept"] for c, f in stats.health.details["channels"].items()}
    assert counts == {c: int(c == channel) for c in ("whatsapp", "messenger", "instagram")}


async def test_a_message_beside_an_unhandled_part_goes_in_and_the_body_is_kept_too(
    engine: Engine,
) -> None:
    doc = fixture("ms_text")
    doc["entry"][0]["messaging"].append(
        {
            "sender": {"id": "7208451234567890"},
            "recipient": {"id": PAGE},
            "timestamp": 1764504000,
            "reaction": {"mid": "m_1", "action": "react", "emoji": "x"},
        }
    )
    raw = body_of(doc)
    mid = doc["entry"][0]["messaging"][0]["message"]["mid"]
    async with Hooks(engine) as hooks:
        status, text = await hooks.post(raw)
    assert status == 200
    assert json.loads(text) == {
        "stored": 2,
        "events": 1,
        "reports": 0,
        "unhandled": ["messaging reaction"],
    }
    digest = hashlib.sha256(raw).hexdigest()
    # Stored side by side (in whichever order the two writes land).
    assert sorted((c, k, s) for c, k, s, _e, _a in kept(engine)) == [
        ("messenger", f"mid:{mid}", "pending"),
        ("messenger", f"unhandled:{digest}", "unhandled"),
    ]
    normalize(engine)
    with engine.connect() as conn:
        assert len(conn.execute(select(Message.id)).all()) == 1


async def test_a_plain_message_body_has_nothing_unhandled(engine: Engine) -> None:
    async with Hooks(engine) as hooks:
        status, text = await hooks.post(body_of(fixture("wa_text")))
    assert status == 200 and "unhandled" not in json.loads(text)
    assert [s for _c, _k, s, _e, _a in kept(engine)] == ["pending"]
