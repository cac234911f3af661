"""A replayed Twilio keyword changes nothing, on SQLite and PostgreSQL (issue 16, attack 5).

An attacker who captured a validly signed START can post it again after the customer texted
STOP: the signature still verifies (Twilio signs the URL and the parameters, not a time), so
the replay must be recognised by its MessageSid, already stored, and change no opt-out state.
The outbound path then still refuses to text the number."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Engine, func, select

from connectors.config import OutboxSettings
from connectors.twilio.intake import CONNECTOR, keyword_updates, opted_out
from connectors.twilio.outbox import TwilioDrainer, TwilioSmsSender, make_client
from inbox.models import Checkpoint, Intake, Outbox, utcnow
from inbox.outbox import enqueue
from inbox.secrets import Secret
from normalizer.intake import RawInput, store
from tests.channels.twilio.twilio_support import (
    ACCOUNT,
    TOKEN,
    Hooks,
    fake_twilio,
    fixture,
    settings,
)

SID1 = "SM" + "a1" * 16
SID2 = "SM" + "b2" * 16


def keyword_post(sid: str, body: str) -> dict[str, str]:
    sms = fixture("sms")
    return {**sms, "MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "Body": body}


def intake_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Intake)).scalar_one())


def optout_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(Checkpoint.key, Checkpoint.value).where(Checkpoint.connector == CONNECTOR)
            )
        )


async def test_a_replayed_start_after_stop_leaves_the_number_opted_out(engine: Engine) -> None:
    start, stop = keyword_post(SID1, "START"), keyword_post(SID2, "Stop")
    number = start["From"]
    with fake_twilio() as fake:
        async with Hooks(engine) as hooks:
            assert (await hooks.post("/twilio/sms", start))[0] == 200
            assert opted_out(engine, number) is False
            assert (await hooks.post("/twilio/sms", stop))[0] == 200
            assert opted_out(engine, number) is True
            # The captured START, byte for byte and signature and all, posted again: Twilio
            # would get 200 (it is stored), and the number stays opted out.
            for _ in range(2):
                assert (await hooks.post("/twilio/sms", start))[0] == 200
            assert opted_out(engine, number) is True
            assert intake_count(engine) == 2

            with engine.begin() as conn:
                enqueue(
                    conn,
                    case_id=None,
                    kind="reply",
                    channel="sms",
                    recipient=number,
                    body="An agent's answer",
                )
            section = settings(api_base_url=fake.base_url)
            sender = TwilioSmsSender(
                "sms", section, make_client(section, ACCOUNT, Secret(TOKEN)), engine
            )
            drainer = TwilioDrainer(engine, sender, OutboxSettings(), worker="test")
            await asyncio.to_thread(drainer.drain_once)
    assert fake.received == []
    with engine.connect() as conn:
        [row] = list(conn.execute(select(Outbox)))
    assert row.state == "failed" and "opted out" in (row.last_error or "")


def test_one_batch_with_a_replay_in_it_applies_each_sid_once(engine: Engine) -> None:
    """The group commit stores a batch in one transaction: a duplicate inside it, after a
    later STOP, must not win either."""
    now = utcnow()

    def raw(sid: str, body: str) -> RawInput:
        params = keyword_post(sid, body)
        return RawInput(
            connector=CONNECTOR,
            channel="sms",
            source_key=f"sms:{sid}",
            payload=f"MessageSid={sid}&Body={body}".encode(),
            on_first_store=keyword_updates(params, now),
        )

    results = store(engine, [raw(SID1, "start"), raw(SID2, "STOP"), raw(SID1, "start")])
    assert [r.duplicate for r in results] == [False, False, True]
    number = fixture("sms")["From"]
    assert opted_out(engine, number) is True
    # A later batch replaying both changes nothing either.
    store(engine, [raw(SID2, "STOP"), raw(SID1, "start")])
    assert opted_out(engine, number) is True
    assert [r.key for r in optout_rows(engine)] == [f"optout:{number}"]


def test_keyword_updates_only_for_stop_and_start_from_a_real_number() -> None:
    now = utcnow()
    cases = [
        ({"From": "+14155550123", "Body": "STOP"}, True),
        ({"From": "+14155550123", "Body": " unsubscribe. "}, True),
        ({"From": "+14155550123", "Body": "Start"}, False),
        ({"From": "+14155550123", "Body": "HELP"}, None),
        ({"From": "+14155550123", "Body": "please stop texting me"}, None),
        ({"From": "anonymous", "Body": "STOP"}, None),
    ]
    for params, expected in cases:
        updates = keyword_updates(params, now)
        if expected is None:
            assert updates == (), params
        else:
            [update] = updates
            assert update.key == f"optout:{params['From']}"
            assert update.value["opted_out"] is expected, params
