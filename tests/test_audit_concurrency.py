"""Audit writers on different cases run at the same time; chains and seals stay whole.

Real threads (and on PostgreSQL real processes) append to the chains of a handful of cases
while a sealer seals; afterwards every chain is contiguous, every row is where its writer
put it, and the log verifies against the last seal.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from inbox import audit
from inbox.db import make_engine, write
from inbox.models import AuditChain, AuditLog, AuditSealHead
from tests.support.inbox_helpers import bulk_cases


def _write_some(
    url: str, cases: list[int | None], transactions: int, seed: int
) -> Counter[int | None]:
    """One writer: `transactions` transactions of one to three rows on random cases. The
    rows it wrote, per case, counted here and not read back from the store."""
    pick = random.Random(seed)
    engine = make_engine(url, busy_timeout_ms=30000)
    wrote: Counter[int | None] = Counter()
    try:
        for n in range(transactions):
            with write(engine) as conn:
                for case in sorted(
                    {pick.choice(cases) for _ in range(pick.randint(1, 3))}, key=lambda c: c or 0
                ):
                    audit.append(
                        conn,
                        actor=f"writer{seed}",
                        action="case.note",
                        case_id=case,
                        after={"n": n},
                    )
                    wrote[case] += 1
    finally:
        engine.dispose()
    return wrote


def _check_chains(engine, wrote: Counter[int | None]) -> None:
    with engine.connect() as conn:
        rows = list(conn.execute(select(AuditLog).order_by(AuditLog.chain, AuditLog.seq)))
        heads = {h.chain: h for h in conn.execute(select(AuditChain))}
    found = Counter(r.case_id for r in rows)
    assert found == wrote
    for case, count in wrote.items():
        chain = audit.chain_of(case)
        seqs = [r.seq for r in rows if r.chain == chain]
        assert seqs == list(range(1, count + 1))
        assert heads[chain].seq == count


def _sealer(url: str, stop: threading.Event, seals: list[dict[str, Any]]) -> None:
    engine = make_engine(url, busy_timeout_ms=30000)
    try:
        while not stop.is_set():
            with write(engine) as conn:
                seals.append(audit.checkpoint(conn))
            stop.wait(0.05)
    finally:
        engine.dispose()


def test_threads_append_and_seal_at_once(engine, db_url):
    cases: list[int | None] = [*bulk_cases(engine, 5), None]
    stop = threading.Event()
    seals: list[dict[str, Any]] = []
    sealer = threading.Thread(target=_sealer, args=(db_url, stop, seals))
    sealer.start()
    results: list[Counter[int | None]] = [Counter() for _ in range(6)]

    def run(i: int) -> None:
        results[i] = _write_some(db_url, cases, 25, seed=i)

    writers = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    sealer.join()
    wrote = sum(results, Counter())
    assert sum(wrote.values()) >= 6 * 25
    _check_chains(engine, wrote)
    with write(engine) as conn:
        final = audit.checkpoint(conn)
    with engine.connect() as conn:
        sealed = {
            h.chain: h.seq
            for h in conn.execute(
                select(AuditSealHead.chain, AuditSealHead.seq).order_by(AuditSealHead.seal_id)
            )
        }
    # After the writers are done, the seals together cover every chain to its end.
    assert sealed == {audit.chain_of(c): n for c, n in wrote.items()}
    assert len(seals) >= 1
    with engine.connect() as conn:
        result = audit.verify(conn, final)
        assert result.ok, result.problem
        assert all(audit.verify(conn, s).ok for s in seals[-3:])


def test_processes_append_at_once_on_postgresql(engine, db_url):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time; the threads test covers it")
    cases: list[int | None] = [*bulk_cases(engine, 3), None]
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(_write_some, [(db_url, cases, 30, seed) for seed in range(4)])
    wrote = sum(results, Counter())
    _check_chains(engine, wrote)
    with engine.connect() as conn:
        assert audit.verify(conn).ok


def _pg_only(engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises all writers by design (BEGIN IMMEDIATE)")


def test_writers_on_different_cases_do_not_wait_for_each_other(engine):
    _pg_only(engine)
    first, second = bulk_cases(engine, 2)
    with engine.connect() as held:
        held.begin()
        audit.append(held, actor="a", action="case.note", case_id=first)
        # Held open: the head of case `first` is locked until this transaction ends. A writer
        # on another case commits meanwhile; with the old global lock it waited for us.
        with engine.connect() as other:
            other.begin()
            other.execute(text("SET LOCAL lock_timeout = '3s'"))
            audit.append(other, actor="b", action="case.note", case_id=second)
            audit.append(other, actor="b", action="account.changed", case_id=None)
            other.commit()
        # A writer on the same case must wait (and here gives up after 200 ms).
        with engine.connect() as same:
            same.begin()
            same.execute(text("SET LOCAL lock_timeout = '200ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                audit.append(same, actor="c", action="case.note", case_id=first)
            same.rollback()
        held.commit()
    with engine.connect() as conn:
        assert audit.verify(conn).ok
        assert conn.execute(select(AuditLog.actor).order_by(AuditLog.id)).scalars().all() == [
            "a",
            "b",
            "b",
        ]


def test_sealing_skips_a_chain_being_written_and_takes_it_next_time(engine):
    _pg_only(engine)
    first, second = bulk_cases(engine, 2)
    with write(engine) as conn:
        audit.append(conn, actor="a", action="case.note", case_id=first)
        audit.append(conn, actor="a", action="case.note", case_id=second)
    with engine.connect() as held:
        held.begin()
        audit.append(held, actor="a", action="case.note", case_id=first)
        with engine.connect() as sealer:
            sealer.begin()
            sealer.execute(text("SET LOCAL lock_timeout = '3s'"))
            one = audit.checkpoint(sealer)
            sealer.commit()
        held.commit()
    with write(engine) as conn:
        two = audit.checkpoint(conn)
    with engine.connect() as conn:
        heads = {
            s: [
                (h.chain, h.seq)
                for h in conn.execute(
                    select(AuditSealHead)
                    .where(AuditSealHead.seal_id == s)
                    .order_by(AuditSealHead.chain)
                )
            ]
            for s in (one["id"], two["id"])
        }
        assert audit.verify(conn, two).ok
    assert heads[one["id"]] == [(second, 1)]  # `first` was being written: left for later
    assert heads[two["id"]] == [(first, 2)]


def test_two_first_writers_of_a_case_both_land_in_order(engine):
    """The first row of a case has no head to lock: two first writers race on creating it,
    and the loser (which read "no head" before the winner committed) goes after it."""
    _pg_only(engine)
    (case,) = bulk_cases(engine, 1)
    landed: list[int] = []
    with engine.connect() as winner:
        winner.begin()
        won = audit.append(winner, actor="a", action="case.opened", case_id=case)

        def loser() -> None:
            with write(engine) as conn:
                # What claim-next's statement read before the winner's head existed.
                landed.append(
                    audit.append(
                        conn, actor="b", action="case.claimed", case_id=case, head=(None, None)
                    )
                )

        late = threading.Thread(target=loser)
        late.start()
        late.join(0.5)
        assert late.is_alive()  # waiting on the winner's uncommitted head
        winner.commit()
        late.join()
    with engine.connect() as conn:
        rows = list(conn.execute(select(AuditLog).order_by(AuditLog.seq)))
        assert audit.verify(conn).ok
    assert [(r.id, r.seq) for r in rows] == [(won, 1), (landed[0], 2)]
    assert landed[0] > won
