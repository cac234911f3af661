"""Intake: the one call every connector makes to store raw input durably before acknowledging it.

`store` writes raw bytes and the delivery record in one transaction and returns only after
the commit. `IntakeWriter` does the same for asyncio servers, batching concurrent
submissions into one commit on a thread of its own, so the event loop never blocks on a
commit (an inline SQLite commit gave the SMTP server a 343 ms p99) and one fsync covers
many messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.sql.dml import Insert, ReturningInsert

from inbox.db import StorageUnavailable, insert_ignore, read, write
from inbox.models import Blob, Checkpoint, Intake, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointUpdate:
    """A connector cursor saved in the same transaction as the input it covers."""

    connector: str
    key: str
    value: dict[str, Any]


@dataclass(frozen=True)
class RawInput:
    connector: str
    channel: str
    # With the channel, identifies this delivery: a redelivery carries the same key.
    source_key: str
    payload: bytes
    envelope: dict[str, Any] = field(default_factory=dict)
    received_at: datetime = field(default_factory=utcnow)
    acknowledge: bool = True
    # "pending": the normalizer files it as a message. "report": a provider's delivery
    # report on something we sent (a Meta status), stored raw like any input so Meta can
    # have its 200, then applied to the outbox by its connector; the normalizer never
    # claims it (it claims only pending rows).
    state: str = "pending"
    # State this input changes (an SMS STOP or START), written in the same transaction only
    # when the input is stored for the first time: a replayed or retried delivery, however
    # validly signed, changes nothing, and a crash cannot store one without the other.
    on_first_store: tuple[CheckpointUpdate, ...] = ()
    # A check made in the transaction that would store the input (a rate limit drawn on
    # the store's buckets): the reason it must not be stored, or None. Refused, the input is
    # not stored and its Stored says why; admitted, whatever the check wrote commits with
    # the input, so a limit is taken if and only if the input is stored.
    admit: Callable[[Connection], str | None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Stored:
    intake_id: int
    duplicate: bool
    # Why `RawInput.admit` refused it (then nothing was stored and intake_id is 0).
    refused: str | None = None


# The envelope key that says why a signed input could not be read (`unreadable_input`).
UNREADABLE = "unreadable"
MAX_WHY = 300


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unreadable_input(
    connector: str,
    channel: str,
    payload: bytes,
    why: str,
    *,
    prefix: str = "unreadable",
    envelope: Mapping[str, Any] | None = None,
) -> RawInput:
    """What every webhook connector stores for input its provider signed and we cannot read.

    Answering it with an error would only bring the same bytes again, and dropping it would
    lose what a customer may have written: so it is stored whole, keyed by its bytes
    (`<prefix>:<sha256>`, so the same bytes again add nothing), and answered as stored. The
    connector's parser then fails on it and the normalizer files it as a dead letter with
    why; `parity deadletters replay` runs today's parser over the same bytes. `why` rides in
    the envelope (bounded: it may quote the input) beside the connector's own facts, which
    its parser may need on a replay (Twilio's `kind`).
    """
    log.warning("%s: signed %s input kept as a dead letter: %s", connector, channel, why[:300])
    return RawInput(
        connector=connector,
        channel=channel,
        source_key=f"{prefix}:{sha256(payload)}",
        payload=payload,
        envelope={**(envelope or {}), UNREADABLE: why[:MAX_WHY]},
    )


def store(
    engine: Engine,
    items: Sequence[RawInput],
    checkpoints: Sequence[CheckpointUpdate] = (),
) -> list[Stored]:
    """Store raw inputs durably, in one transaction. Duplicates are recognised, not added.

    Raises StorageUnavailable when the store refuses writes, so the connector can tell its
    source to retry (SMTP 451, HTTP 503).
    """
    with write(engine) as conn:
        return store_in(conn, items, checkpoints)


def store_in(
    conn: Connection,
    items: Sequence[RawInput],
    checkpoints: Sequence[CheckpointUpdate] = (),
) -> list[Stored]:
    """`store` inside a transaction the caller owns."""
    # Each check runs once, in order, before anything of the batch is written.
    refused = {
        index: reason
        for index, item in enumerate(items)
        if item.admit is not None and (reason := item.admit(conn)) is not None
    }
    if not refused:
        return _store_admitted(conn, items, checkpoints)
    admitted = [item for index, item in enumerate(items) if index not in refused]
    stored = iter(_store_admitted(conn, admitted, checkpoints))
    return [
        Stored(0, False, refused[index]) if index in refused else next(stored)
        for index in range(len(items))
    ]


def _store_admitted(
    conn: Connection,
    items: Sequence[RawInput],
    checkpoints: Sequence[CheckpointUpdate] = (),
) -> list[Stored]:
    results: list[Stored] = []
    if items:
        # Each payload hashed once: the writer thread holds the GIL the event loop needs.
        digests = [sha256(i.payload) for i in items]
        blobs = {
            digest: {
                "sha256": digest,
                "size": len(i.payload),
                "data": i.payload,
                "created_at": i.received_at,
            }
            for digest, i in zip(digests, items, strict=True)
        }
        statements = _statements(conn)
        conn.execute(statements[0], list(blobs.values()))
        # RETURNING names the rows this statement inserted; only the rest (redeliveries)
        # need a lookup. Two statements on the hot path instead of four: intake is what
        # a sender waits on.
        inserted = {
            (row.channel, row.source_key): row.id
            for row in conn.execute(
                statements[1],
                [
                    {
                        "connector": i.connector,
                        "channel": i.channel,
                        "source_key": i.source_key,
                        "raw_sha256": digest,
                        "envelope": i.envelope,
                        "received_at": i.received_at,
                        "state": i.state,
                        "attempts": 0,
                        "acknowledge": i.acknowledge,
                    }
                    for digest, i in zip(digests, items, strict=True)
                ],
            )
        }
        known = _existing(conn, [i for i in items if (i.channel, i.source_key) not in inserted])
        seen: set[int] = set()
        for item in items:
            key = (item.channel, item.source_key)
            if key in inserted:
                intake_id, duplicate = inserted[key], inserted[key] in seen
            else:
                intake_id, duplicate = known[key], True
            seen.add(intake_id)
            results.append(Stored(intake_id, duplicate))
            if not duplicate:
                for cp in item.on_first_store:
                    save_checkpoint(conn, cp)
    for cp in checkpoints:
        save_checkpoint(conn, cp)
    return results


# Per dialect: the blob insert and the intake insert with RETURNING, built once. Building
# them per commit cost the writer thread (and so the event loop, for the GIL) a tenth of
# a webhook's CPU; SQLAlchemy caches their compiled form by the statement object.
_STATEMENTS: dict[str, tuple[Insert, ReturningInsert[int, str, str]]] = {}


def _statements(conn: Connection) -> tuple[Insert, ReturningInsert[int, str, str]]:
    found = _STATEMENTS.get(conn.dialect.name)
    if found is None:
        found = _STATEMENTS[conn.dialect.name] = (
            insert_ignore(conn, Blob, ["sha256"]),
            insert_ignore(conn, Intake, ["channel", "source_key"]).returning(
                Intake.id, Intake.channel, Intake.source_key
            ),
        )
    return found


def _existing(conn: Connection, items: Sequence[RawInput]) -> dict[tuple[str, str], int]:
    by_channel: dict[str, list[str]] = {}
    for item in items:
        by_channel.setdefault(item.channel, []).append(item.source_key)
    found: dict[tuple[str, str], int] = {}
    for channel, keys in by_channel.items():
        for start in range(0, len(keys), 500):
            rows = conn.execute(
                select(Intake.id, Intake.source_key).where(
                    Intake.channel == channel, Intake.source_key.in_(keys[start : start + 500])
                )
            )
            found.update({(channel, row.source_key): row.id for row in rows})
    return found


def save_checkpoint(conn: Connection, cp: CheckpointUpdate) -> None:
    now = utcnow()
    conn.execute(
        insert_ignore(conn, Checkpoint, ["connector", "key"]),
        [{"connector": cp.connector, "key": cp.key, "value": cp.value, "updated_at": now}],
    )
    conn.execute(
        update(Checkpoint)
        .where(Checkpoint.connector == cp.connector, Checkpoint.key == cp.key)
        .values(value=cp.value, updated_at=now)
    )


def load_checkpoint(engine: Engine, connector: str, key: str) -> dict[str, Any] | None:
    with read(engine) as conn:
        value = conn.execute(
            select(Checkpoint.value).where(Checkpoint.connector == connector, Checkpoint.key == key)
        ).scalar_one_or_none()
    return dict(value) if value is not None else None


_Entry = tuple[RawInput, "asyncio.Future[Stored]", asyncio.AbstractEventLoop]


_Item = TypeVar("_Item")


def next_batch(
    waiting: queue.SimpleQueue[list[_Item] | None], max_batch: int
) -> tuple[list[_Item], bool]:
    """(the next group commit's items, whether to stop after it), for a writer thread.

    Waits for the first list, then joins whatever else is already waiting, up to about
    `max_batch` items: under load one commit (one fsync) covers many callers, idle it
    covers one without waiting for more. None in the queue means stop: what came before it
    is still committed, nothing after it is read.
    """
    first = waiting.get()
    if first is None:
        return [], True
    batch = list(first)
    while len(batch) < max_batch:
        try:
            nxt = waiting.get_nowait()
        except queue.Empty:
            return batch, False
        if nxt is None:
            return batch, True
        batch.extend(nxt)
    return batch, False


def commit_batches(
    waiting: queue.SimpleQueue[list[_Item] | None],
    max_batch: int,
    commit: Callable[[list[_Item]], None],
) -> None:
    """A group-commit thread's loop: `commit` each `next_batch` until told to stop."""
    while True:
        batch, stopping = next_batch(waiting, max_batch)
        if batch:
            commit(batch)
        if stopping:
            return


class IntakeWriter:
    """Group commit for asyncio servers: `await submit(item)` returns once it is durable.

    One thread owns the writes. Whatever arrived while the previous commit ran goes into the
    next one, so under load one fsync covers many messages and the loop never waits on disk.
    The submissions of one turn of an event loop reach the thread together, in one hand-over:
    waking the thread at the first of them would commit it alone and make the rest wait for
    the commit after (and each wake-up costs the loop the GIL for a while).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 256,
        on_stored: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.on_stored = on_stored
        self._queue: queue.SimpleQueue[list[_Entry] | None] = queue.SimpleQueue()
        # Per event loop: what its current turn submitted, handed over at the turn's end.
        self._turn: dict[asyncio.AbstractEventLoop, list[_Entry]] = {}
        self._thread: threading.Thread | None = None
        self.pending = 0
        # time.monotonic(), not the loop's clock: the worker's refill reads it from a thread.
        self.last_submit = 0.0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="intake-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            # What a loop's turn submitted and did not hand over yet is written before the end.
            for loop in list(self._turn):
                turn = self._turn.pop(loop, None)
                if turn:
                    self._queue.put(turn)
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def submit(self, item: RawInput) -> Stored:
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Stored] = loop.create_future()
        self.pending += 1
        self.last_submit = time.monotonic()
        turn = self._turn.get(loop)
        if turn is None:
            turn = self._turn[loop] = []
            # Runs after every callback this turn of the loop already has: the submissions
            # they make join this one.
            loop.call_soon(self._hand_over, loop)
        turn.append((item, future, loop))
        try:
            return await future
        finally:
            self.pending -= 1

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        turn = self._turn.pop(loop, None)
        if turn:
            self._queue.put(turn)

    def _run(self) -> None:
        commit_batches(self._queue, self.max_batch, self._commit)

    def _commit(self, batch: list[_Entry]) -> None:
        try:
            results: list[Stored] | BaseException = store(self.engine, [b[0] for b in batch])
        except StorageUnavailable as exc:
            results = exc
        except Exception as exc:  # anything else is still "not stored": the caller must know
            log.exception("intake commit failed")
            results = StorageUnavailable(f"{type(exc).__name__}: {exc}")
        # One wake-up per event loop for the whole batch, not one per message.
        by_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Stored], Stored | BaseException]]
        ] = {}
        for index, (_, future, loop) in enumerate(batch):
            outcome = results if isinstance(results, BaseException) else results[index]
            by_loop.setdefault(loop, []).append((future, outcome))
        for loop, outcomes in by_loop.items():
            loop.call_soon_threadsafe(_settle, outcomes)
        if not isinstance(results, BaseException) and self.on_stored is not None:
            self.on_stored(len(batch))


def _settle(outcomes: list[tuple[asyncio.Future[Stored], Stored | BaseException]]) -> None:
    for future, outcome in outcomes:
        if future.done():  # the session went away meanwhile
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
