"""WorkerLoop: the normalizer inside the daemon's event loop, on both databases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlalchemy import event, select

from connectors.registry import parser_table
from inbox.config import StoreSettings
from inbox.models import Intake
from normalizer.worker import Normalizer, WorkerLoop
from tests.support.dns_server import test_mail_auth
from tests.support.helpers import ingest, normalize


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):
        while not condition():  # noqa: ASYNC110 - a plain counter, nothing to await on
            await asyncio.sleep(0.01)


def mail(n: int) -> bytes:
    return (
        f"From: Person {n} <p{n}@example.org>\r\n"
        "To: help@support.example.com\r\n"
        f"Subject: Question {n}\r\n"
        f"Message-ID: <loop-{n}@example.org>\r\n"
        "\r\n"
        "Hello.\r\n"
    ).encode()


async def test_a_stopping_worker_gives_back_the_rows_it_did_not_reach(engine):
    for n in range(30):
        ingest(engine, mail(n), connector="smtp")
    # Intake busy for good (no deferring left) and a 1% share: after each row the worker
    # pauses 99 times as long.
    loop = WorkerLoop(
        Normalizer(
            engine,
            StoreSettings(),
            mail_auth=test_mail_auth(),
            name="stopping-worker",
            parsers=parser_table(),
        ),
        intake_busy=lambda: True,
        busy_share=0.01,
        busy_defer_s=0,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(lambda: loop.processed >= 1)
    stop.set()
    await asyncio.wait_for(task, timeout=60)
    with engine.connect() as conn:
        rows = conn.execute(select(Intake.state, Intake.claimed_by, Intake.attempts)).all()
    done = [r for r in rows if r.state == "done"]
    waiting = [r for r in rows if r.state == "pending"]
    assert len(done) == loop.processed and len(done) + len(waiting) == 30
    assert waiting and all((r.claimed_by, r.attempts) == (None, 0) for r in waiting)
    # Another worker takes them at once: no lease to wait out.
    assert len(normalize(engine)) == len(waiting)


async def test_an_idle_worker_drains_everything_in_chunks(engine):
    for n in range(25):
        ingest(engine, mail(n), connector="smtp")
    loop = WorkerLoop(
        Normalizer(engine, StoreSettings(), mail_auth=test_mail_auth(), parsers=parser_table()),
        idle_chunk=10,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(lambda: loop.processed >= 25)
    stop.set()
    await asyncio.wait_for(task, timeout=60)
    with engine.connect() as conn:
        assert set(conn.execute(select(Intake.state)).scalars()) == {"done"}


async def test_a_burst_is_answered_first_and_normalized_right_after(engine):
    for n in range(20):
        ingest(engine, mail(n), connector="smtp")
    burst_until = time.monotonic() + 0.6
    loop = WorkerLoop(
        Normalizer(engine, StoreSettings(), mail_auth=test_mail_auth(), parsers=parser_table()),
        intake_busy=lambda: time.monotonic() < burst_until,
        busy_defer_s=30,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await asyncio.sleep(0.4)
    assert loop.processed == 0  # deferred while intake is busy
    await until(lambda: loop.processed >= 20)
    assert time.monotonic() >= burst_until
    stop.set()
    await asyncio.wait_for(task, timeout=60)


async def test_sustained_intake_still_gets_a_share_after_the_deferral(engine):
    for n in range(5):
        ingest(engine, mail(n), connector="smtp")
    started = time.monotonic()
    loop = WorkerLoop(
        Normalizer(engine, StoreSettings(), mail_auth=test_mail_auth(), parsers=parser_table()),
        intake_busy=lambda: True,
        busy_defer_s=0.3,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(lambda: loop.processed >= 5)
    assert time.monotonic() - started >= 0.3
    stop.set()
    await asyncio.wait_for(task, timeout=60)


async def test_a_backlog_is_claimed_a_batch_at_a_time_not_a_row_per_free_process(engine):
    """Each claim is a write of its own: 120 rows waiting are taken in a handful of claims
    (batches of `batch_size`, 50), not one or two rows each time a parse process is free."""
    for n in range(120):
        ingest(engine, mail(n), connector="smtp")
    claims: list[str] = []

    def count_claims(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith("UPDATE INTAKE SET CLAIMED_BY"):
            claims.append(statement)

    event.listen(engine, "before_cursor_execute", count_claims)
    try:
        loop = WorkerLoop(
            Normalizer(engine, StoreSettings(), mail_auth=test_mail_auth(), parsers=parser_table())
        )
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: loop.processed >= 120)
        stop.set()
        await asyncio.wait_for(task, timeout=60)
    finally:
        event.remove(engine, "before_cursor_execute", count_claims)
    with engine.connect() as conn:
        assert set(conn.execute(select(Intake.state)).scalars()) == {"done"}
    # 120 rows in batches of 50: three claims that found rows, and the empty ones that end
    # each run; a row per free process would be some sixty.
    assert 3 <= len(claims) <= 10
