"""Meta's webhook over HTTP, on SQLite and PostgreSQL: the subscription check, signatures
checked before anything else, store-then-200, redelivery, a store that refuses, statuses.

Bodies are signed here with the hmac module, as Meta signs them, not by the code under test."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Engine, func, select, update

from inbox.db import StorageUnavailable, write
from inbox.models import Blob, Intake, Outbox
from inbox.outbox import enqueue
from normalizer.intake import RawInput, Stored
from tests.channels.meta.support import (
    VERIFY_TOKEN,
    Hooks,
    body_of,
    fixture,
    fixture_text,
    sign,
)

MESSAGES = [
    "wa_text", "wa_image", "wa_voice", "wa_video", "wa_document", "wa_sticker", "wa_location",
    "wa_contacts", "wa_interactive", "wa_list_reply", "wa_button", "wa_reaction",
    "ms_text", "ms_attachment", "ms_quick_reply", "ms_postback", "ms_feed_comment",
    "ig_text", "ig_story_reply", "ig_story_mention", "ig_comment",
]  # fmt: skip


def count(engine: Engine, model: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


async def test_the_subscription_check_echoes_the_challenge_only_for_our_token(
    engine: Engine,
) -> None:
    async with Hooks(engine) as hooks:
        good = {
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        }
        response = await hooks.client.get("/meta/webhook", params=good)
        assert (response.status, await response.text()) == (200, "1158201444")
        for wrong in (
            {**good, "hub.verify_token": VERIFY_TOKEN + "x"},
            {**good, "hub.verify_token": ""},
            {**good, "hub.mode": "unsubscribe"},
            {"hub.challenge": "1158201444"},
        ):
            response = await hooks.client.get("/meta/webhook", params=wrong)
            assert response.status == 403
            assert "1158201444" not in await response.text()


async def test_bad_or_missing_signature_is_403_and_nothing_is_stored(engine: Engine) -> None:
    body = body_of(fixture("wa_text"))
    async with Hooks(engine) as hooks:
        assert (await hooks.post(body, signature=""))[0] == 403
        assert (await hooks.post(body, signature="sha256=" + "0" * 64))[0] == 403
        # Signed with another app's secret.
        assert (await hooks.post(body, signature=sign(body, "another-app-secret")))[0] == 403
        # The old SHA-1 header's scheme is not accepted as SHA-256.
        assert (await hooks.post(body, signature=sign(body).replace("sha256", "sha1")))[0] == 403
        # A changed body under a good signature.
        changed = body.replace(b"hacked", b"hacker")
        assert (await hooks.post(changed, signature=sign(body)))[0] == 403
        # Not JSON at all, unsigned: refused for the signature, not read.
        assert (await hooks.post(b"\xff\xfe garbage", signature=""))[0] == 403
        assert hooks.hooks.stats.failures == 6
    assert count(engine, Intake) == 0
    assert count(engine, Blob) == 0


async def test_each_message_type_is_stored_once_however_often_it_comes(engine: Engine) -> None:
    async with Hooks(engine) as hooks:
        for name in MESSAGES:
            body = body_of(fixture(name))
            for attempt in range(3):
                status, text = await hooks.post(body)
                assert status == 200, (name, text)
                # The answer says what this delivery added: the first one, then nothing.
                assert f'"stored": {1 if attempt == 0 else 0}' in text, (name, text)
        # Pretty-printed (other bytes, so another blob) yet the same events: still nothing new.
        for name in ("wa_text", "ms_text", "ig_comment"):
            body = fixture_text(name).encode()
            assert (await hooks.post(body))[0] == 200
    assert count(engine, Intake) == len(MESSAGES)
    for channel, prefix in (("whatsapp", "wa_"), ("messenger", "ms_"), ("instagram", "ig_")):
        expected = sum(name.startswith(prefix) for name in MESSAGES)
        assert count(engine, Intake, Intake.channel == channel) == expected


async def test_echoes_are_kept_unhandled_and_reports_are_stored_as_reports(
    engine: Engine,
) -> None:
    async with Hooks(engine) as hooks:
        for name in ("ms_echo", "ms_delivery", "wa_status_sent", "wa_status_read"):
            assert (await hooks.post(body_of(fixture(name))))[0] == 200
        await hooks.hooks.settled()
    # Our own page's echo is no message, but kept raw as unhandled (never dropped
    # silently); each report is stored raw, and applied (nothing to move).
    with engine.connect() as conn:
        rows = conn.execute(
            select(Intake.channel, Intake.source_key, Intake.state).order_by(Intake.id)
        ).all()
    sid = "wamid.HBgLMTYzMTU1NTExODEVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"
    echo = hashlib.sha256(body_of(fixture("ms_echo"))).hexdigest()
    assert [tuple(r) for r in rows] == [
        ("messenger", f"unhandled:{echo}", "unhandled"),
        ("messenger", "status:m_SentByUs0001:delivered", "applied"),
        ("whatsapp", f"status:{sid}:sent", "applied"),
        ("whatsapp", f"status:{sid}:read", "applied"),
    ]


async def test_a_store_that_refuses_gets_503_and_meta_retries(engine: Engine) -> None:
    refusals = 1

    async def flaky(item: RawInput) -> Stored:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise StorageUnavailable("database is locked")
        from tests.channels.meta.support import stored_in_thread

        return await stored_in_thread(engine, item)

    body = body_of(fixture("ms_text"))
    async with Hooks(engine, submit=flaky) as hooks:
        status, _ = await hooks.post(body)
        assert status == 503
        assert count(engine, Intake) == 0
        # Meta's retry of the same body.
        assert (await hooks.post(body))[0] == 200
    assert count(engine, Intake) == 1


async def test_status_webhooks_move_outbox_rows(engine: Engine) -> None:
    sid = "wamid.HBgLMTYzMTU1NTExODEVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"
    with write(engine) as conn:
        ids = [
            enqueue(
                conn,
                case_id=None,
                kind="reply",
                channel="whatsapp",
                recipient="+16315551181",
                body="x",
            )
            for _ in range(2)
        ]
        conn.execute(
            update(Outbox).where(Outbox.id == ids[0]).values(state="sent", provider_id=sid)
        )
        conn.execute(
            update(Outbox)
            .where(Outbox.id == ids[1])
            .values(state="sent", provider_id="m_SentByUs0001", channel="messenger")
        )

    def state(row_id: int) -> tuple[str, str | None]:
        with engine.connect() as conn:
            row = conn.execute(
                select(Outbox.state, Outbox.last_error).where(Outbox.id == row_id)
            ).one()
        return row.state, row.last_error

    async with Hooks(engine) as hooks:
        assert (await hooks.post(body_of(fixture("wa_status_sent"))))[0] == 200
        await hooks.hooks.settled()
        assert state(ids[0]) == ("sent", None)
        assert (await hooks.post(body_of(fixture("wa_status_failed"))))[0] == 200
        await hooks.hooks.settled()
        assert state(ids[0]) == (
            "undelivered",
            "WhatsApp error 131026: Message undeliverable (Message Undeliverable.)",
        )
        assert (await hooks.post(body_of(fixture("ms_delivery"))))[0] == 200
        await hooks.hooks.settled()
        assert state(ids[1]) == ("delivered", None)
        stats = hooks.hooks.health.details["channels"]
        assert stats["whatsapp"]["last_webhook_received"]
        assert stats["messenger"]["last_webhook_received"]
