"""A claimed batch's sending lease is each row's own: a row begins its send with its lease
at most RENEW_EVERY_S old.

A drainer claims up to `batch_size` rows under one lease. Without a restart, the last row of
a batch had only what the sends before it left of the lease, so a sender bounded per row
(X's wait for media processing, checked against `[outbox] lease_seconds`) was not bounded
per batch, and another process could take the row over while it was still being sent. The
rows still waiting are renewed together, once a second at most, not one statement per row.

The sends go through the real SMTP relay sender to a local sink; the drainer's clock is the
test's, and a send is made to "take long" by moving it (and by putting the leases of the
rows after it in the past, which is what a slow send does to them), without any sleeping.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from connectors.outbox import RENEW_EVERY_S, ChannelSender
from inbox.models import Outbox, utcnow
from inbox.outbox import Claimed
from tests.support.helpers import ingest_and_normalize
from tests.support.outbox_helpers import drainer_for, mail
from tests.support.sink import Sink

LEASE_S = 600


def queue_acks(engine: Engine, people: int) -> list[int]:
    """One acknowledgement queued per person writing in: the outbox rows' ids, in order."""
    for n in range(people):
        ingest_and_normalize(engine, mail(sender=f"Person {n} <person{n}@example.org>"))
    with engine.connect() as conn:
        return list(conn.execute(select(Outbox.id).order_by(Outbox.id)).scalars())


class Clock:
    """The drainer's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Witness:
    """Wraps the real sender: notes each row's lease as its send begins, moves the clock by
    `step` seconds a send, and after the first send applies `after_first` to the store and
    moves the clock by a whole lease (what a long first send does)."""

    def __init__(
        self,
        engine: Engine,
        sender: ChannelSender,
        after_first: Any,
        clock: Clock,
        step: float = 0.0,
    ) -> None:
        self.engine, self.sender, self.after_first = engine, sender, after_first
        self.clock, self.step = clock, step
        self.leases: dict[int, Any] = {}
        self.sent: list[int] = []

    def send(self, row: Claimed) -> str | None:
        with self.engine.connect() as conn:
            self.leases[row.id] = conn.execute(
                select(Outbox.claimed_until).where(Outbox.id == row.id)
            ).scalar_one()
        answer = self.sender.send(row)
        self.sent.append(row.id)
        self.clock.now += self.step
        if len(self.sent) == 1 and self.after_first is not None:
            with self.engine.begin() as conn:
                self.after_first(conn)
            self.clock.now += LEASE_S
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sender, name)


def test_each_row_of_a_batch_starts_its_send_with_a_whole_lease(engine: Engine, sink: Sink) -> None:
    ids = queue_acks(engine, 3)
    assert len(ids) == 3
    drainer = drainer_for(engine, sink, lease_seconds=LEASE_S, batch_size=10)
    started = utcnow()

    def later_rows_run_out(conn: Any) -> None:
        # The first send took the whole lease: the other rows' leases are in the past.
        conn.execute(
            update(Outbox)
            .where(Outbox.id.in_(ids[1:]))
            .values(claimed_until=utcnow() - timedelta(seconds=1))
        )

    clock = Clock()
    drainer.clock = clock
    witness = Witness(engine, drainer.sender, later_rows_run_out, clock)
    drainer.sender = witness
    assert drainer.drain_once().sent == 3
    assert witness.sent == ids
    for outbox_id in ids[1:]:
        # Renewed as its send began: a whole lease ahead, not the past one left by the first.
        assert witness.leases[outbox_id] >= started + timedelta(seconds=LEASE_S)
    assert len(sink.received) == 3


def test_a_row_taken_over_while_waiting_its_turn_is_not_sent_again(
    engine: Engine, sink: Sink
) -> None:
    ids = queue_acks(engine, 3)
    drainer = drainer_for(engine, sink, lease_seconds=LEASE_S, batch_size=10)

    def another_process_took_the_second(conn: Any) -> None:
        # The second row's lease ran out and another instance claimed it meanwhile.
        conn.execute(
            update(Outbox)
            .where(Outbox.id == ids[1])
            .values(claimed_by="other-host:1", claimed_until=utcnow() + timedelta(minutes=5))
        )

    clock = Clock()
    drainer.clock = clock
    witness = Witness(engine, drainer.sender, another_process_took_the_second, clock)
    drainer.sender = witness
    report = drainer.drain_once()
    assert witness.sent == [ids[0], ids[2]]
    assert report.sent == 2
    assert len(sink.received) == 2
    with engine.connect() as conn:
        second = conn.execute(select(Outbox).where(Outbox.id == ids[1])).one()
    # Left to its new owner, untouched.
    assert (second.state, second.claimed_by) == ("sending", "other-host:1")


RENEWAL = re.compile(r"^\s*UPDATE outbox SET claimed_until", re.IGNORECASE)


@pytest.mark.parametrize(
    ("step", "rows", "expected_renewals"),
    [
        # Quick sends: the whole batch goes on the claim's lease, without one more statement.
        (0.0, 5, 0),
        # 0.4 s a send: the fourth row begins 1.2 s after the claim and renews the three left.
        (0.4, 6, 1),
        # A second or more a send: each row after the first renews those left.
        (1.0, 4, 3),
        (2.5, 3, 2),
    ],
)
def test_the_rows_waiting_are_renewed_together_at_most_once_a_second(
    engine: Engine, sink: Sink, step: float, rows: int, expected_renewals: int
) -> None:
    assert RENEW_EVERY_S == 1.0  # the table above is worked out for a second
    ids = queue_acks(engine, rows)
    drainer = drainer_for(engine, sink, lease_seconds=LEASE_S, batch_size=10)
    clock = Clock()
    drainer.clock = clock
    witness = Witness(engine, drainer.sender, None, clock, step)
    drainer.sender = witness
    renewals: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if RENEWAL.match(statement):
            renewals.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        assert drainer.drain_once().sent == rows
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert witness.sent == ids
    assert len(renewals) == expected_renewals
    assert len(sink.received) == rows
