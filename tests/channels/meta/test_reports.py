"""What Meta signs is kept, on SQLite and PostgreSQL: a body that cannot be read becomes a
dead letter with its bytes (replayable), and a delivery report is stored raw before Meta gets
its 200, then applied to the outbox, in any order, any number of times, never backwards.

Bodies are signed here with the hmac module, as Meta signs them; the intake keys expected
are worked out here from the bytes (hashlib), not by the code under test."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from connectors.meta.media import MetaMedia
from inbox.db import write
from inbox.models import AuditLog, Case, DeadLetter, Intake, Message, Outbox
from normalizer.deadletters import replay
from tests.channels.meta.support import Hooks, body_of, fixture, settings
from tests.channels.meta.test_outbox import deliver
from tests.channels.meta.test_webhooks import count
from tests.support.helpers import normalize, normalizer

WAMID = "wamid.HBgLMTYzMTU1NTExODEVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"


def status_body(state: str, wamid: str = WAMID) -> bytes:
    """A WhatsApp status webhook for `wamid`, from the fixture of that state."""
    doc = fixture(f"wa_status_{state}")
    doc["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] = wamid
    return body_of(doc)


def unreadable_key(raw: bytes) -> str:
    return "unreadable:" + hashlib.sha256(raw).hexdigest()


def two_entries(second: Any) -> bytes:
    doc = fixture("wa_text")
    doc["entry"].append(second)
    return body_of(doc)


UNREADABLE = [
    (b"this is not json", "whatsapp", "not JSON"),
    (b"\xff\xfe\x00garbage", "whatsapp", "not JSON"),
    (b'[{"object": "page"}]', "whatsapp", "not a JSON object"),
    (b'{"object":"user","entry":[{"id":"1","changes":[]}]}', "whatsapp", "'user' is not one"),
    (b'{"object":"whatsapp_business_account"}', "whatsapp", "has no entries"),
    (b'{"object":"page","entry":[]}', "messenger", "has no entries"),
    (b'{"object":"instagram","entry":"many"}', "instagram", "has no entries"),
    (b'{"object":"page","entry":[{"id":"1","time":2}]}', "messenger", "neither changes nor"),
    (b'{"object":"page","entry":[7]}', "messenger", "entry 0 has neither changes nor"),
    # Nested past any parser's depth: the stdlib raised RecursionError here (a 500).
    (b'{"object":"page","entry":' + b"[" * 100_000, "whatsapp", "not JSON"),
]


@pytest.mark.parametrize(("raw", "channel", "why"), UNREADABLE)
async def test_a_signed_unreadable_body_is_a_dead_letter_with_its_bytes(
    engine: Engine, raw: bytes, channel: str, why: str
) -> None:
    async with Hooks(engine) as hooks:
        status, text = await hooks.post(raw)
        # Stored, so 200: Meta would only send the same bytes again.
        assert status == 200, text
        assert json.loads(text)["stored"] == 1
        assert why in json.loads(text)["unreadable"]
        assert (await hooks.post(raw))[0] == 200  # redelivered: nothing new
    with engine.connect() as conn:
        (row,) = conn.execute(select(Intake)).all()
    assert (row.connector, row.channel, row.source_key) == ("meta", channel, unreadable_key(raw))
    outcomes = normalize(engine)
    assert [o.state for o in outcomes] == ["dead"]
    with engine.connect() as conn:
        (letter,) = conn.execute(select(DeadLetter)).all()
    assert why in letter.error and letter.channel == channel
    assert letter.raw_sha256 == hashlib.sha256(raw).hexdigest()
    # The replay runs today's parser again: still unreadable, one letter, counted.
    result = replay(engine, normalizer(engine), letter.id)
    assert result.outcome == "still failing" and why in (result.error or "")
    with engine.connect() as conn:
        assert conn.execute(select(DeadLetter.replays)).scalars().all() == [1]
    assert count(engine, Message) == 0


async def test_readable_events_go_in_beside_the_unreadable_part(engine: Engine) -> None:
    raw = two_entries("not an entry")
    async with Hooks(engine) as hooks:
        status, text = await hooks.post(raw)
    assert status == 200 and json.loads(text)["stored"] == 2
    outcomes = sorted(o.state for o in normalize(engine))
    assert outcomes == ["dead", "done"]
    with engine.connect() as conn:
        error = conn.execute(select(DeadLetter.error)).scalar_one()
        text_of = conn.execute(select(Message.text)).scalar_one()
    assert error == "Meta webhook entry 1 has neither changes nor messaging"
    assert "hacked" in text_of


def without_ids() -> list[tuple[bytes, str]]:
    """Bodies with a message Meta would never send without its id, beside a good one."""
    wa = fixture("wa_text")
    good = wa["entry"][0]["changes"][0]["value"]["messages"][0]
    nameless = {k: v for k, v in good.items() if k != "id"}
    wa["entry"][0]["changes"][0]["value"]["messages"] = [good, nameless]
    ms = fixture("ms_text")
    item = ms["entry"][0]["messaging"][0]
    ms["entry"][0]["messaging"] = [
        item,
        {**item, "message": {k: v for k, v in item["message"].items() if k != "mid"}},
    ]
    return [
        (body_of(wa), "Meta webhook entry 0 change 0 message 1 has no id"),
        (body_of(ms), "Meta webhook entry 0 messaging 1 is a message without its mid"),
    ]


async def test_a_message_without_its_id_is_kept_beside_the_others(engine: Engine) -> None:
    bodies = without_ids()
    async with Hooks(engine) as hooks:
        for raw, _ in bodies:
            status, text = await hooks.post(raw)
            assert status == 200 and json.loads(text)["stored"] == 2, text
    outcomes = sorted(o.state for o in normalize(engine))
    assert outcomes == ["dead", "dead", "done", "done"]
    with engine.connect() as conn:
        letters = conn.execute(
            select(DeadLetter.error, DeadLetter.raw_sha256).order_by(DeadLetter.id)
        ).all()
    assert [tuple(letter) for letter in letters] == [
        (why, hashlib.sha256(raw).hexdigest()) for raw, why in bodies
    ]


def test_a_body_kept_as_unreadable_that_reads_now_files_its_one_event(engine: Engine) -> None:
    """What a replay after a parser fix finds: the stored body now reads; its one event is
    filed, once, and a body of two events says it cannot be filed as one."""
    from normalizer.intake import RawInput, store

    one = body_of(fixture("wa_text"))
    doc = fixture("wa_text")
    message = doc["entry"][0]["changes"][0]["value"]["messages"][0]
    doc["entry"][0]["changes"][0]["value"]["messages"] = [message, {**message, "id": "wamid.2"}]
    two = body_of(doc)
    store(
        engine,
        [
            RawInput("meta", "whatsapp", unreadable_key(raw), raw, {"unreadable": "old parser"})
            for raw in (one, two)
        ],
    )
    outcomes = normalize(engine)
    assert [o.state for o in outcomes] == ["done", "dead"]
    with engine.connect() as conn:
        assert conn.execute(select(Message.external_id)).scalars().all() == [message["id"]]
        error = conn.execute(select(DeadLetter.error)).scalar_one()
    assert error.startswith("Meta webhook body is readable now, with 2 events")


# --- delivery reports ---------------------------------------------------------------------


def sent_ack(engine: Engine, wamid: str = WAMID) -> int:
    """A WhatsApp case whose acknowledgement went out as `wamid`; the outbox row's id."""
    deliver(engine, "wa_text")
    with write(engine) as conn:
        row_id = conn.execute(select(Outbox.id).where(Outbox.kind == "ack")).scalar_one()
        conn.execute(
            update(Outbox).where(Outbox.id == row_id).values(state="sent", provider_id=wamid)
        )
    return int(row_id)


def outbox_row(engine: Engine, row_id: int) -> tuple[str, str | None, str | None]:
    with engine.connect() as conn:
        row = conn.execute(select(Outbox).where(Outbox.id == row_id)).one()
    return row.state, (row.payload or {}).get("status"), row.last_error


async def test_reports_in_any_order_never_move_a_row_back(engine: Engine) -> None:
    row_id = sent_ack(engine)
    # Meta does not promise the order: read before delivered, a late "sent", redeliveries.
    expected = [
        ("read", ("delivered", "read", None)),
        ("delivered", ("delivered", "read", None)),
        ("sent", ("delivered", "read", None)),
        ("read", ("delivered", "read", None)),
    ]
    async with Hooks(engine) as hooks:
        for state, want in expected:
            assert (await hooks.post(status_body(state)))[0] == 200
            await hooks.hooks.settled()
            assert outbox_row(engine, row_id) == want, state
        # Three distinct reports were stored once each, however often they came.
        with engine.connect() as conn:
            keys = conn.execute(
                select(Intake.source_key, Intake.state)
                .where(Intake.source_key.like("status:%"))
                .order_by(Intake.id)
            ).all()
        assert [tuple(k) for k in keys] == [
            (f"status:{WAMID}:read", "applied"),
            (f"status:{WAMID}:delivered", "applied"),
            (f"status:{WAMID}:sent", "applied"),
        ]
    with engine.connect() as conn:
        ack_state = conn.execute(select(Case.ack_state)).scalar_one()
        audited = (
            conn.execute(
                select(AuditLog.action).where(AuditLog.action.like("ack.%")).order_by(AuditLog.id)
            )
            .scalars()
            .all()
        )
    # The row moved once (sent -> delivered), audited once; read is Meta's word on it.
    assert ack_state == "delivered"
    assert audited.count("ack.delivered") == 1


async def test_a_failure_is_shown_on_the_row_and_the_case(engine: Engine) -> None:
    row_id = sent_ack(engine)
    async with Hooks(engine) as hooks:
        for state in ("delivered", "failed", "read", "delivered"):
            assert (await hooks.post(status_body(state)))[0] == 200
            await hooks.hooks.settled()
    error = "WhatsApp error 131026: Message undeliverable (Message Undeliverable.)"
    # Failed is final: the read and delivered after it change nothing.
    assert outbox_row(engine, row_id) == ("undelivered", "failed", error)
    with engine.connect() as conn:
        case = conn.execute(select(Case.ack_state, Case.ack_reason)).one()
    assert tuple(case) == ("undelivered", error)


async def test_a_report_is_stored_before_the_200_and_applied_later_if_need_be(
    engine: Engine,
) -> None:
    """The process dies between Meta's 200 and applying the report: the stored report is
    applied by the connector's next pass, once."""
    row_id = sent_ack(engine)
    async with Hooks(engine) as hooks:
        hooks.hooks.apply_soon = lambda: None  # type: ignore[method-assign]
        assert (await hooks.post(status_body("delivered")))[0] == 200
    with engine.connect() as conn:
        state = conn.execute(
            select(Intake.state).where(Intake.source_key == f"status:{WAMID}:delivered")
        ).scalar_one()
    assert state == "report"
    assert outbox_row(engine, row_id) == ("sent", None, None)
    media = MetaMedia(engine, settings(), {})
    media.pass_once()
    media.pass_once()
    assert outbox_row(engine, row_id) == ("delivered", "delivered", None)
    with engine.connect() as conn:
        assert (
            conn.execute(
                select(Intake.state).where(Intake.source_key == f"status:{WAMID}:delivered")
            ).scalar_one()
            == "applied"
        )
    # Reports are never filed as messages: the normalizer finds nothing to do.
    assert normalize(engine) == []


async def test_a_report_on_a_message_we_never_sent_changes_nothing(engine: Engine) -> None:
    row_id = sent_ack(engine)
    async with Hooks(engine) as hooks:
        assert (await hooks.post(status_body("failed", wamid="wamid.SOMEONEELSE")))[0] == 200
        await hooks.hooks.settled()
    assert outbox_row(engine, row_id) == ("sent", None, None)
