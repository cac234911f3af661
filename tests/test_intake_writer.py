"""IntakeWriter: group commit for asyncio servers, on both databases."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, select

from inbox.db import make_engine
from inbox.models import Blob, Intake
from normalizer.intake import IntakeWriter, RawInput, Stored, store


def item(key: str, payload: bytes = b"same bytes") -> RawInput:
    return RawInput(connector="smtp", channel="email", source_key=key, payload=payload)


async def test_one_commit_of_new_repeated_and_known_inputs(db_url):
    engine = make_engine(db_url)
    try:
        (known,) = store(engine, [item("known")])
        writer = IntakeWriter(engine)
        writer.start()
        try:
            # Submitted together, so they share commits: a new key twice, a known key, others.
            results = await asyncio.gather(
                writer.submit(item("a")),
                writer.submit(item("a")),
                writer.submit(item("known")),
                writer.submit(item("b", b"other bytes")),
                *(writer.submit(item(f"n{i}", b"n%d" % i)) for i in range(20)),
            )
        finally:
            await asyncio.to_thread(writer.stop)
        a1, a2, k, b = results[:4]
        assert a1.intake_id == a2.intake_id and {a1.duplicate, a2.duplicate} == {False, True}
        assert (k.intake_id, k.duplicate) == (known.intake_id, True)
        assert not b.duplicate and len({r.intake_id for r in results}) == 23
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(Intake)).scalar_one() == 23
            # Content-addressed: "known" and "a" share one blob.
            assert conn.execute(select(func.count()).select_from(Blob)).scalar_one() == 22
    finally:
        engine.dispose()


async def test_the_submissions_of_one_turn_of_the_loop_share_one_commit(db_url):
    """Handed to the writer together: a thread woken at the first would commit it alone,
    and the rest would wait for the commit after (a bench measured 18 a commit at 32 in
    flight before, 31 after)."""
    engine = make_engine(db_url)
    commits: list[int] = []
    try:
        writer = IntakeWriter(engine, on_stored=commits.append)
        writer.start()

        async def request(key: str) -> Stored:
            # A request's own work before it submits (reading, checking, parsing) lets
            # other threads run, as here: the writer thread is awake meanwhile.
            time.sleep(0.002)  # noqa: ASYNC251 (blocking on purpose: the GIL is released)
            return await writer.submit(item(key, key.encode()))

        try:
            for round_ in range(3):
                # gather starts every request in the same turn of the loop.
                results = await asyncio.gather(*(request(f"r{round_}-{i}") for i in range(24)))
                assert not any(r.duplicate for r in results)
        finally:
            await asyncio.to_thread(writer.stop)
        assert commits == [24, 24, 24]
    finally:
        engine.dispose()


async def test_an_admission_check_runs_in_the_storing_transaction(db_url):
    """`RawInput.admit`: a refused input is not stored and says why; what an admitting
    check writes commits with its input, in the same group commit as the others."""
    from dataclasses import replace

    from sqlalchemy import insert

    from inbox.models import Checkpoint, utcnow

    engine = make_engine(db_url)
    calls: list[str] = []

    def admit(key: str, reason: str | None):
        def check(conn) -> str | None:
            calls.append(key)
            if reason is None:
                conn.execute(
                    insert(Checkpoint).values(
                        connector="test", key=key, value={}, updated_at=utcnow()
                    )
                )
            return reason

        return check

    try:
        writer = IntakeWriter(engine)
        writer.start()
        try:
            results = await asyncio.gather(
                writer.submit(replace(item("in", b"in"), admit=admit("in", None))),
                writer.submit(replace(item("out", b"out"), admit=admit("out", "rate limit"))),
                writer.submit(item("plain", b"plain")),
            )
        finally:
            await asyncio.to_thread(writer.stop)
        admitted, refused, plain = results
        assert admitted.refused is None and admitted.intake_id and not admitted.duplicate
        assert (refused.refused, refused.intake_id) == ("rate limit", 0)
        assert plain.refused is None and plain.intake_id
        assert sorted(calls) == ["in", "out"]  # each check once
        with engine.connect() as conn:
            keys = set(conn.execute(select(Intake.source_key)).scalars())
            written = set(conn.execute(select(Checkpoint.key)).scalars())
            blobs = set(conn.execute(select(Blob.data)).scalars())
        assert keys == {"in", "plain"} and written == {"in"}
        assert b"out" not in blobs
    finally:
        engine.dispose()
