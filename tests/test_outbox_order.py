"""A case's messages on a channel go in the order they were queued, however many drainers.

Two drainers (two instances on PostgreSQL, each claiming a batch) could each take one of a
case's replies and send them at once, so the customer read the second first. A claim now
leaves a row while an earlier row of its case on its channel is being sent or is due. A row
waiting out its backoff, or one whose outcome is known or left for an agent, holds nothing
back. Real claims on both stores, for cases the real normalizer opened with their
acknowledgements queued; the replies are outbox rows as the reply path queues them.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, insert, select, update

from inbox.models import Outbox, utcnow
from inbox.outbox import claim
from tests.support.helpers import ingest_and_normalize
from tests.support.outbox_helpers import mail

LEASE = timedelta(minutes=10)


def a_case(engine: Engine, who: str) -> int:
    """A case opened by `who`'s mail, with its acknowledgement queued (the case's first row
    on email); the case's id."""
    ingest_and_normalize(engine, mail(sender=f"{who.title()} <{who}@example.org>"))
    with engine.connect() as conn:
        case_id = conn.execute(
            select(Outbox.case_id).where(Outbox.recipient == f"{who}@example.org")
        ).scalar_one()
    assert case_id is not None
    return case_id


def queue_reply(
    engine: Engine,
    case_id: int | None,
    text: str,
    channel: str = "email",
    recipient: str = "ann@example.org",
    kind: str = "reply",
) -> int:
    """An outbox row due now (`case_id` None and another `kind` for an alert)."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(Outbox)
                .values(
                    case_id=case_id,
                    kind=kind,
                    channel=channel,
                    recipient=recipient,
                    subject="Re: Locked out of my account",
                    body=text,
                    next_attempt_at=utcnow() - timedelta(seconds=1),
                )
                .returning(Outbox.id)
            ).scalar_one()
        )


def first_row(engine: Engine, case_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(Outbox.id).where(Outbox.case_id == case_id).order_by(Outbox.id).limit(1)
            ).scalar_one()
        )


def set_state(engine: Engine, outbox_id: int, **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(update(Outbox).where(Outbox.id == outbox_id).values(**values))


def claimed(engine: Engine, worker: str, limit: int = 20) -> list[int]:
    return [r.id for r in claim(engine, "email", worker, limit=limit, lease=LEASE)]


def test_a_later_reply_waits_while_another_drainer_sends_the_earlier(engine: Engine) -> None:
    ann = a_case(engine, "ann")
    bob = a_case(engine, "bob")
    ack = first_row(engine, ann)
    first = queue_reply(engine, ann, "Try the reset link.")
    second = queue_reply(engine, ann, "Sorry, that link was the old one: use this.")
    bob_ack = first_row(engine, bob)
    # Drainer A takes the oldest row, Ann's acknowledgement, and is sending it.
    assert claimed(engine, "host-a:1", limit=1) == [ack]
    # Drainer B takes Bob's, and none of Ann's: each waits for the one before it.
    assert claimed(engine, "host-b:1") == [bob_ack]
    set_state(engine, ack, state="sent", claimed_by=None, claimed_until=None)
    assert claimed(engine, "host-b:1") == [first]
    assert claimed(engine, "host-a:1") == []  # the second waits for the first's send
    set_state(engine, first, state="sent", claimed_by=None, claimed_until=None)
    assert claimed(engine, "host-a:1") == [second]


def test_one_claim_takes_a_cases_rows_one_at_a_time_in_order(engine: Engine) -> None:
    ann = a_case(engine, "ann")
    ack = first_row(engine, ann)
    replies = [queue_reply(engine, ann, f"Part {n}.") for n in range(3)]
    order = []
    for _ in range(5):
        got = claimed(engine, "host-a:1")
        assert len(got) <= 1
        order += got
        for outbox_id in got:
            set_state(engine, outbox_id, state="sent", claimed_by=None, claimed_until=None)
    assert order == [ack, *replies]


PAST = timedelta(seconds=-1)
LATER = timedelta(minutes=30)


@pytest.mark.parametrize(
    ("state", "due_in", "held"),
    [
        ("queued", PAST, True),  # due: it goes first
        ("sending", PAST, True),  # being sent, by this drainer or another
        ("queued", LATER, False),  # waiting out its backoff: it goes when it can
        ("sent", PAST, False),
        ("delivered", PAST, False),
        ("failed", PAST, False),
        ("unknown", PAST, False),  # left for an agent, maybe for hours
    ],
)
def test_what_an_earlier_row_holds_back(
    engine: Engine, state: str, due_in: timedelta, held: bool
) -> None:
    ann = a_case(engine, "ann")
    ack = first_row(engine, ann)
    set_state(
        engine,
        ack,
        state=state,
        next_attempt_at=utcnow() + due_in,
        claimed_by="host-z:9" if state == "sending" else None,
        claimed_until=utcnow() + LEASE if state == "sending" else None,
    )
    reply = queue_reply(engine, ann, "Try the reset link.")
    expected = [] if held else [reply]
    if state == "queued" and held:
        expected = [ack]  # the earlier row itself is taken, the later one left
    assert claimed(engine, "host-a:1") == expected


def test_only_the_same_case_on_the_same_channel_is_held(engine: Engine) -> None:
    ann = a_case(engine, "ann")
    bob = a_case(engine, "bob")
    ack = first_row(engine, ann)
    set_state(engine, ack, state="sending", claimed_by="host-z:9", claimed_until=utcnow() + LEASE)
    # An earlier row of Ann's case on another channel does not hold her email.
    sms = queue_reply(engine, ann, "Texted too.", channel="sms", recipient="+14155550101")
    bob_reply = queue_reply(engine, bob, "Bob's answer.", recipient="bob@example.org")
    set_state(engine, first_row(engine, bob), state="sent")
    # A row of no case (an alert, a digest) is never held.
    alert = queue_reply(
        engine, None, "Parity breach", recipient="manager@example.org", kind="alert"
    )
    assert claimed(engine, "host-a:1") == [bob_reply, alert]
    assert [r.id for r in claim(engine, "sms", "host-a:1", limit=5, lease=LEASE)] == [sms]
