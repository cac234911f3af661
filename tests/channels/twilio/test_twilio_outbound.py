"""SMS out, on SQLite and PostgreSQL: acknowledgements of texts and calls go from the outbox
through the real twilio.rest.Client to a local fake Twilio API; the tests assert on what the
fake received. Status callbacks update the row; STOP is honoured; a row left "sending" by a
crash is looked up at the fake before anything is sent again."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from connectors.config import OutboxSettings
from connectors.twilio.outbox import TwilioDrainer, TwilioSmsSender, make_client
from inbox.models import Case, Outbox, utcnow
from inbox.outbox import enqueue
from inbox.secrets import Secret
from tests.channels.twilio.twilio_support import (
    ACCOUNT,
    OUR_NUMBER,
    PUBLIC,
    TOKEN,
    FakeTwilio,
    Hooks,
    fake_twilio,
    fixture,
    settings,
)
from tests.support.helpers import normalize


def drainer(engine: Engine, fake: FakeTwilio, channel: str = "sms") -> TwilioDrainer:
    section = settings(api_base_url=fake.base_url)
    client = make_client(section, ACCOUNT, Secret(TOKEN))
    return TwilioDrainer(
        engine,
        TwilioSmsSender(channel, section, client, engine),
        OutboxSettings(),
        worker="test",
    )


def rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Outbox).order_by(Outbox.id)))


async def test_sms_ack_goes_through_twilio_and_status_callbacks_update_it(engine: Engine) -> None:
    sms = fixture("sms")
    with fake_twilio() as fake:
        async with Hooks(engine) as hooks:
            for _ in range(3):
                await hooks.post("/twilio/sms", sms)
            normalize(engine)
            [row] = rows(engine)
            assert (row.kind, row.channel, row.recipient) == ("ack", "sms", sms["From"])
            with engine.connect() as conn:
                reference = conn.execute(select(Case.reference)).scalar_one()
            assert reference in row.body
            report = await asyncio.to_thread(drainer(engine, fake).drain_once)
            assert report.sent == 1
            assert fake.received == [
                {
                    "To": sms["From"],
                    "From": OUR_NUMBER,
                    "Body": row.body,
                    "StatusCallback": PUBLIC + "/twilio/status",
                }
            ]
            [sent] = rows(engine)
            assert sent.state == "sent" and sent.provider_id == fake.messages[0]["sid"]
            sid = fake.messages[0]["sid"]
            for status in ("queued", "sent", "delivered", "delivered"):
                params = fixture("status", sid=sid)
                params.update(MessageStatus=status, SmsStatus=status)
                assert (await hooks.post("/twilio/status", params))[0] == 200
            await hooks.settled()
            assert rows(engine)[0].state == "delivered"
        # A second pass sends nothing more.
        await asyncio.to_thread(drainer(engine, fake).drain_once)
        assert len(fake.received) == 1


async def test_a_call_is_acknowledged_by_text_and_failures_are_recorded(engine: Engine) -> None:
    call = fixture("voice")
    with fake_twilio() as fake:
        async with Hooks(engine) as hooks:
            await hooks.post("/twilio/voice", call)
            normalize(engine)
            [row] = rows(engine)
            assert (row.channel, row.recipient) == ("voice", call["From"])
            await asyncio.to_thread(drainer(engine, fake, "voice").drain_once)
            assert [r["To"] for r in fake.received] == [call["From"]]
            params = fixture("status", sid=fake.messages[0]["sid"])
            params.update(MessageStatus="undelivered", SmsStatus="undelivered", ErrorCode="30003")
            await hooks.post("/twilio/status", params)
            await hooks.settled()
        [row] = rows(engine)
        assert row.state == "undelivered" and "30003" in (row.last_error or "")


async def test_nothing_is_ever_sent_to_a_number_that_said_stop(engine: Engine) -> None:
    sms = fixture("sms")
    with fake_twilio() as fake:
        async with Hooks(engine) as hooks:
            await hooks.post("/twilio/sms", {**sms, "Body": "STOP"})
            normalize(engine)
            assert rows(engine) == []  # a keyword is never acknowledged
            with engine.begin() as conn:
                enqueue(
                    conn,
                    case_id=None,
                    kind="reply",
                    channel="sms",
                    recipient=sms["From"],
                    body="An agent's answer",
                )
            await asyncio.to_thread(drainer(engine, fake).drain_once)
            assert fake.received == []
            assert rows(engine)[0].state == "failed"
            assert "opted out" in (rows(engine)[0].last_error or "")
            # START: texts may go again.
            await hooks.post("/twilio/sms", {**sms, "MessageSid": "SM" + "9" * 32, "Body": "START"})
            with engine.begin() as conn:
                enqueue(
                    conn,
                    case_id=None,
                    kind="reply",
                    channel="sms",
                    recipient=sms["From"],
                    body="Welcome back",
                )
            await asyncio.to_thread(drainer(engine, fake).drain_once)
            assert [r["Body"] for r in fake.received] == ["Welcome back"]


def _crash_while_sending(engine: Engine, body: str) -> int:
    """A row as a process that died mid-send leaves it: "sending", its lease run out."""
    with engine.begin() as conn:
        outbox_id = enqueue(
            conn, case_id=None, kind="reply", channel="sms", recipient="+14155550123", body=body
        )
        conn.execute(
            update(Outbox)
            .where(Outbox.id == outbox_id)
            .values(
                state="sending", claimed_by="dead", claimed_until=utcnow() - timedelta(minutes=1)
            )
        )
    return outbox_id


def test_a_row_left_sending_is_looked_up_before_any_retry(engine: Engine) -> None:
    with fake_twilio() as fake:
        # It did reach Twilio before the crash: found by the list, never sent again.
        client = make_client(settings(api_base_url=fake.base_url), ACCOUNT, Secret(TOKEN))
        reached = client.messages.create(to="+14155550123", from_=OUR_NUMBER, body="Reached")
        first = _crash_while_sending(engine, "Reached")
        # It did not: sent once, now.
        second = _crash_while_sending(engine, "Lost in the crash")
        drainer(engine, fake).drain_once()
        by_id = {r.id: r for r in rows(engine)}
        assert by_id[first].state == "sent" and by_id[first].provider_id == reached.sid
        assert by_id[second].state == "sent"
        assert [r["Body"] for r in fake.received] == ["Reached", "Lost in the crash"]


async def test_mms_media_are_fetched_with_the_account_credentials_once(engine: Engine) -> None:
    from connectors.twilio.intake import MediaFetcher
    from inbox.models import Attachment, Blob

    with fake_twilio() as fake:
        params = fixture("mms", api=fake.base_url)
        jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
        pdf = b"%PDF-1.7\n" + b"receipt " * 100
        fake.media["ME11111111111111111111111111111111"] = ("image/jpeg", jpeg)
        fake.media["ME22222222222222222222222222222222"] = ("application/pdf", pdf)
        async with Hooks(engine) as hooks:
            for _ in range(3):
                assert (await hooks.post("/twilio/sms", params))[0] == 200
        normalize(engine)
        # Wrong credentials: nothing stored, tried again later.
        wrong = MediaFetcher(engine, ACCOUNT, Secret("not-the-token"))
        assert await asyncio.to_thread(wrong.fetch_once) == 0
        fetcher = MediaFetcher(engine, ACCOUNT, Secret(TOKEN))
        # Not before the failure's backoff is over; an hour later, past any.
        assert await asyncio.to_thread(fetcher.fetch_once) == 0
        later = utcnow() + timedelta(hours=1)
        assert await asyncio.to_thread(fetcher.fetch_once, later) == 2
        assert await asyncio.to_thread(fetcher.fetch_once, later) == 0
    with engine.connect() as conn:
        got = list(
            conn.execute(
                select(Attachment.content_type, Blob.data)
                .join(Blob, Blob.sha256 == Attachment.sha256)
                .order_by(Attachment.id)
            )
        )
    assert [(c, bytes(d)) for c, d in got] == [("image/jpeg", jpeg), ("application/pdf", pdf)]
