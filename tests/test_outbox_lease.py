"""A claimed batch's sending lease is each row's own: it restarts as the row's send begins.

A drainer claims up to `batch_size` rows under one lease. Without a restart, the last row of
a batch had only what the sends before it left of the lease, so a sender bounded per row
(X's wait for media processing, checked against `[outbox] lease_seconds`) was not bounded
per batch, and another process could take the row over while it was still being sent.

The sends go through the real SMTP relay sender to a local sink; the first send is made to
"take long" by moving the clock of the rows after it (their leases put in the past), which
is what a slow send does to them, without any sleeping.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from connectors.outbox import ChannelSender
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


class Witness:
    """Wraps the real sender: notes each row's lease as its send begins, and after the
    first send applies `after_first` to the store (what a long first send does)."""

    def __init__(self, engine: Engine, sender: ChannelSender, after_first: Any) -> None:
        self.engine, self.sender, self.after_first = engine, sender, after_first
        self.leases: dict[int, Any] = {}
        self.sent: list[int] = []

    def send(self, row: Claimed) -> str | None:
        with self.engine.connect() as conn:
            self.leases[row.id] = conn.execute(
                select(Outbox.claimed_until).where(Outbox.id == row.id)
            ).scalar_one()
        answer = self.sender.send(row)
        self.sent.append(row.id)
        if len(self.sent) == 1:
            with self.engine.begin() as conn:
                self.after_first(conn)
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

    witness = Witness(engine, drainer.sender, later_rows_run_out)
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

    witness = Witness(engine, drainer.sender, another_process_took_the_second)
    drainer.sender = witness
    report = drainer.drain_once()
    assert witness.sent == [ids[0], ids[2]]
    assert report.sent == 2
    assert len(sink.received) == 2
    with engine.connect() as conn:
        second = conn.execute(select(Outbox).where(Outbox.id == ids[1])).one()
    # Left to its new owner, untouched.
    assert (second.state, second.claimed_by) == ("sending", "other-host:1")
