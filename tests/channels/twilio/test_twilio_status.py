"""Twilio's status callbacks, on SQLite and PostgreSQL: stored raw (intake state "report")
before Twilio gets its 200, applied to the outbox after it, in any order and any number of
times, never moving a row back; one without its id is a dead letter; one a crash left
unapplied is applied on the connector's next pass.

Callbacks are signed with Twilio's own RequestValidator (twilio_support.sign); the intake
keys and outcomes expected are written out here by hand."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import Engine, select, update

from connectors.twilio.status import apply_left
from inbox.db import StorageUnavailable, write
from inbox.models import AuditLog, Case, DeadLetter, Intake, Outbox
from inbox.outbox import enqueue
from normalizer.intake import RawInput, Stored, store
from tests.channels.twilio.twilio_support import Hooks, fixture, stored_in_thread
from tests.support.helpers import normalize

SID = "SM0123456789abcdef0123456789abcdef"
SENT = {"state": "sent", "provider_id": SID}


def sent_row(engine: Engine, *, kind: str = "reply", case_id: int | None = None) -> int:
    with write(engine) as conn:
        row_id = enqueue(
            conn, case_id=case_id, kind=kind, channel="sms", recipient="+14155550123", body="x"
        )
        conn.execute(
            update(Outbox).where(Outbox.id == row_id).values(state="sent", provider_id=SID)
        )
    return row_id


def callback(state: str, error: str = "") -> dict[str, str]:
    params = fixture("status", sid=SID)
    params.update(MessageStatus=state, SmsStatus=state, ErrorCode=error)
    return params


def outbox(engine: Engine, row_id: int) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(select(Outbox.state, Outbox.last_error).where(Outbox.id == row_id)).one()
    return row.state, row.last_error


def intake(engine: Engine) -> list[tuple[str, str, bool]]:
    with engine.connect() as conn:
        return [
            (r.source_key, r.state, r.acknowledge)
            for r in conn.execute(select(Intake).order_by(Intake.id))
        ]


# (callbacks in the order Twilio sent them, the row's outbox state and error after them all)
ORDERS = [
    (["queued", "sent", "delivered"], ("delivered", None)),
    (["delivered", "sent", "queued"], ("delivered", None)),  # late ones move nothing back
    (["sent", "undelivered:30003"], ("undelivered", "Twilio error 30003")),
    (["undelivered:30003", "delivered"], ("undelivered", "Twilio error 30003")),
    (["failed:30008", "sent"], ("undelivered", "Twilio error 30008")),
    (["delivered", "delivered", "delivered"], ("delivered", None)),  # retries add nothing
    (["read"], ("sent", None)),  # a state SMS does not have: kept, moves nothing
]


@pytest.mark.parametrize(("states", "expected"), ORDERS)
async def test_callbacks_are_stored_then_applied_never_backwards(
    engine: Engine, states: list[str], expected: tuple[str, str | None]
) -> None:
    row_id = sent_row(engine)
    async with Hooks(engine) as hooks:
        for entry in states:
            state, _, error = entry.partition(":")
            assert (await hooks.post("/twilio/status", callback(state, error)))[0] == 200
            await hooks.settled()
    assert outbox(engine, row_id) == expected
    keys = list(dict.fromkeys(f"status:{SID}:{s.partition(':')[0]}" for s in states))
    assert intake(engine) == [(key, "applied", False) for key in keys]


async def test_a_callback_is_stored_before_the_answer_and_applied_after_it(
    engine: Engine,
) -> None:
    row_id = sent_row(engine)
    seen: list[tuple[str, str]] = []

    async def submit(item: RawInput) -> Stored:
        stored = await stored_in_thread(engine, item)
        # At the moment intake answers, the report is kept, and the row not moved yet.
        seen.append((intake(engine)[0][1], outbox(engine, row_id)[0]))
        return stored

    async with Hooks(engine) as hooks:
        hooks.hooks.submit = submit
        assert (await hooks.post("/twilio/status", callback("delivered")))[0] == 200
        await hooks.settled()
    assert seen == [("report", "sent")]
    assert outbox(engine, row_id) == ("delivered", None)


async def test_a_store_that_refuses_gets_503_and_nothing_moves(engine: Engine) -> None:
    row_id = sent_row(engine)

    async def refuse(item: RawInput) -> Stored:
        raise StorageUnavailable("database is locked")

    async with Hooks(engine) as hooks:
        hooks.hooks.submit = refuse
        assert (await hooks.post("/twilio/status", callback("delivered")))[0] == 503
        await hooks.settled()
    assert intake(engine) == []
    assert outbox(engine, row_id) == ("sent", None)


async def test_an_acknowledgement_report_is_shown_on_its_case_and_audited(
    engine: Engine,
) -> None:
    deliver_case = fixture("sms")
    async with Hooks(engine) as hooks:
        assert (await hooks.post("/twilio/sms", deliver_case))[0] == 200
    normalize(engine)
    with write(engine) as conn:
        ack = conn.execute(select(Outbox.id, Outbox.case_id).where(Outbox.kind == "ack")).one()
        conn.execute(
            update(Outbox).where(Outbox.id == ack.id).values(state="sent", provider_id=SID)
        )
    async with Hooks(engine) as hooks:
        assert (await hooks.post("/twilio/status", callback("undelivered", "30005")))[0] == 200
        await hooks.settled()
    with engine.connect() as conn:
        case = conn.execute(select(Case.ack_state, Case.ack_reason).where(Case.id == ack.case_id))
        assert tuple(case.one()) == ("undelivered", "Twilio error 30005")
        actions = conn.execute(select(AuditLog.action).where(AuditLog.case_id == ack.case_id))
        assert "ack.undelivered" in [a for (a,) in actions]


async def test_a_callback_without_its_id_is_a_dead_letter(engine: Engine) -> None:
    params = callback("delivered")
    del params["MessageSid"], params["SmsSid"]
    async with Hooks(engine) as hooks:
        assert (await hooks.post("/twilio/status", params))[0] == 200
    raw = urlencode(params).encode()
    key = "unkeyed:status:" + hashlib.sha256(raw).hexdigest()
    assert intake(engine) == [(key, "pending", True)]
    normalize(engine)
    with engine.connect() as conn:
        letter = conn.execute(select(DeadLetter.connector, DeadLetter.error)).one()
    assert letter.connector == "twilio" and "MessageSid" in letter.error


def test_a_report_a_crash_left_is_applied_on_the_next_pass(engine: Engine) -> None:
    row_id = sent_row(engine)
    raw = urlencode(callback("delivered")).encode()
    report: dict[str, Any] = {"acknowledge": False, "state": "report"}
    store(engine, [RawInput("twilio", "sms", f"status:{SID}:delivered", raw, **report)])
    assert apply_left(engine) == 1
    assert outbox(engine, row_id) == ("delivered", None)
    assert apply_left(engine) == 0
