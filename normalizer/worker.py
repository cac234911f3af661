"""The normalizer worker: stored input -> Message -> Case, idempotently, in any number of processes.

Each intake row is claimed with a lease, parsed outside any write transaction, then
deduplicated and threaded in a short transaction, with other parsed rows of its batch, that
holds the threading locks of the people and threads it names (normalizer/threadlocks.py),
so two workers never open two cases for one person and never store one message twice,
while workers filing different people's mail do not wait for each other. A worker
that dies leaves its lease to expire; the row is then claimed again, and the unique dedup
key and receipt keys make the second pass change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import DBAPIError, OperationalError

from inbox import audit, i18n, logcontext, notifications, tags, teams, turns
from inbox.channels import MESSAGE_ID_CHANNELS, SENDER_CHECKED_CHANNELS
from inbox.config import StoreSettings
from inbox.csat import Answered, CsatSettings, answer_open, parse_answer
from inbox.db import (
    StorageUnavailable,
    ThreadingLocks,
    insert_ignore,
    is_sqlite,
    read,
    refused,
    write,
)
from inbox.identities import mark_verified
from inbox.merges import MERGED, absorbed_contacts, surviving_case_id
from inbox.models import (
    Attachment,
    Blob,
    Case,
    CaseTurn,
    Checkpoint,
    Contact,
    DeadLetter,
    Identity,
    Intake,
    Message,
    MessageRef,
    utcnow,
)
from inbox.outbox import last_sent_to, report_delivery
from inbox.routing import CaseFacts
from inbox.sla import due_time
from normalizer.ack_plan import AckCase, AckOut, AckRoute, AckRoutes, queue_ack
from normalizer.acks import (
    AckFacts,
    AckSettings,
    Eta,
    compose,
    describe_eta,
    recently_acknowledged,
    status_url,
    withhold_reason,
)
from normalizer.batch import NEXT_CASE_ID, IdentityRow, Reads, Writes
from normalizer.config import NormalizerSettings
from normalizer.eta import estimate
from normalizer.intake import sha256
from normalizer.mailauth import MailAuthSettings, authenticated, greeting_name
from normalizer.memory import Trimmer
from normalizer.message import InboundMessage
from normalizer.parse import Parsers
from normalizer.pool import ParseJob, ParseResult, message_signature, shared_pool
from normalizer.threadlocks import (
    contact_key,
    identity_of,
    keys_at_most,
    lock_groups,
    message_keys,
)
from normalizer.threads import (
    OPEN_STATUSES,
    Candidates,
    CaseView,
    Decision,
    LinkKind,
    decide,
    find_references,
    find_tokens,
    format_reference,
    new_token,
)
from normalizer.voicemail import merge_voicemail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    intake_id: int
    state: str  # done | dead | duplicate | skipped
    message_id: int | None = None
    case_id: int | None = None
    decision: Decision | None = None
    error: str | None = None
    # CPU the parse of this input took in its child process (the budget, if it was killed).
    cpu_seconds: float = 0.0


# Tries of one input's SAVEPOINT, and the SQLSTATEs after which it is tried again: a
# deadlock or serialization failure, a unique key written meanwhile by someone else.
_SAVEPOINT_TRIES = 3
# Transactions that only try their inputs' threading locks before the rest waits for them.
_TRY_ROUNDS = 2
_RETRY_STATES = frozenset({"40P01", "40001", "23505"})


# The inserts of every message, built once: parameters go to execute(), so SQLAlchemy
# neither builds nor keys a statement per row (that was a third of the filing's CPU time).
_INSERT_MESSAGE = insert(Message).returning(Message.id)
_INSERT_CASE = insert(Case)
_INSERT_CONTACT = insert(Contact).returning(Contact.id)
_INSERT_IDENTITY = insert(Identity).returning(Identity.id)
_LAST_CASE_ID = select(func.coalesce(func.max(Case.id), 0))


def _next_case_id(conn: Connection, reads: Reads | None) -> int:
    """The id the next case will have, taken before its row is written.

    PostgreSQL: from the table's own sequence, as the insert would have. SQLite, which has
    no sequence: one past the largest id, as its rowid would be (the table has no
    AUTOINCREMENT); the writer lock is ours until commit, so no one else takes it, and a
    batch asks once and counts on from there.
    """
    if not is_sqlite(conn):
        return int(conn.execute(NEXT_CASE_ID).scalar_one())
    if reads is not None and reads.last_case_id is not None:
        reads.last_case_id += 1
        return reads.last_case_id
    last = int(conn.execute(_LAST_CASE_ID).scalar_one()) + 1
    if reads is not None:
        reads.last_case_id = last
    return last


class _Refused(Exception):
    """An input of an optimistic batch failed: the batch is filed again with savepoints."""


def _sqlstate(exc: DBAPIError) -> str:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "sqlite_errorname", None)
    return str(code or "")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{id(object()):x}"


class Normalizer:
    def __init__(
        self,
        engine: Engine,
        store: StoreSettings,
        settings: NormalizerSettings | None = None,
        *,
        name: str | None = None,
        on_case: Callable[[Outcome], None] | None = None,
        acks: AckSettings | None = None,
        mail_auth: MailAuthSettings | None = None,
        parsers: Parsers,
        ack_routes: AckRoutes | None = None,
        csat: CsatSettings | None = None,
    ) -> None:
        self.engine = engine
        # How long a satisfaction survey takes a bare 1-5 reply (inbox/csat.py).
        self.csat = csat or CsatSettings()
        # channel -> how its new case is acknowledged, for the channels whose connector
        # decides the route (connectors/registry.py `ack_route_table`); the others are
        # acknowledged from [acknowledgements]. Handed over like the parsers.
        self.ack_routes = dict(ack_routes or {})
        # channel -> parser, handed over by the composition root (parity/, from the connector
        # registry): the normalizer names no connector's parser.
        self.parsers = dict(parsers)
        self.store = store
        self.settings = settings or NormalizerSettings()
        self.name = name or worker_id()
        self.on_case = on_case
        self.acks = acks or AckSettings()
        self.mail_auth = mail_auth or MailAuthSettings()

    # --- claiming ---------------------------------------------------------------------------

    def claim(self, limit: int, only: Sequence[int] | None = None) -> list[int]:
        """Lease up to `limit` pending rows to this worker; no row is leased to two at once.

        `only` restricts the claim to those intake ids (an import or a replay normalizing
        exactly what it stored).
        """
        now = utcnow()
        until = now + timedelta(seconds=self.settings.lease_seconds)
        claimable = and_(
            Intake.state == "pending",
            or_(Intake.claimed_until.is_(None), Intake.claimed_until < now),
        )
        if only is not None:
            claimable = and_(claimable, Intake.id.in_(list(only)))
        with write(self.engine) as conn:
            if is_sqlite(conn):
                # One UPDATE under SQLite's single writer lock is atomic.
                subquery = select(Intake.id).where(claimable).order_by(Intake.id).limit(limit)
                rows = conn.execute(
                    update(Intake)
                    .where(Intake.id.in_(subquery.scalar_subquery()))
                    .values(claimed_by=self.name, claimed_until=until, attempts=Intake.attempts + 1)
                    .returning(Intake.id)
                )
                return sorted(r[0] for r in rows)
            ids = list(
                conn.execute(
                    select(Intake.id)
                    .where(claimable)
                    .order_by(Intake.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if ids:
                conn.execute(
                    update(Intake)
                    .where(Intake.id.in_(ids))
                    .values(claimed_by=self.name, claimed_until=until, attempts=Intake.attempts + 1)
                )
            return ids

    def release(self, intake_ids: list[int]) -> None:
        """Give back rows this worker claimed and will not process (it is stopping)."""
        with write(self.engine) as conn:
            conn.execute(
                update(Intake)
                .where(
                    Intake.id.in_(intake_ids),
                    Intake.claimed_by == self.name,
                    Intake.state == "pending",
                )
                .values(claimed_by=None, claimed_until=None, attempts=Intake.attempts - 1)
            )

    def drain(
        self,
        max_rows: int | None = None,
        only: Sequence[int] | None = None,
        *,
        claim: int | None = None,
    ) -> list[Outcome]:
        """Normalize pending input until none is left (or `max_rows`); for the CLI and tests.

        Rows are filed in intake order (an import or a replay keeps its threading order),
        `persist_batch` of them per transaction; each is still parsed in the pool, under the
        budget.
        """
        outcomes: list[Outcome] = []
        while max_rows is None or len(outcomes) < max_rows:
            batch = self.claim(claim or self.settings.batch_size, only)
            if not batch:
                break
            self.process_many(batch, outcomes=outcomes)
        return outcomes

    # --- rows: load, parse in the pool, persist here ------------------------------------------

    def process(self, intake_id: int) -> Outcome:
        return self.process_many([intake_id])[0]

    def process_many(
        self,
        intake_ids: Sequence[int],
        *,
        refill: Callable[[int], list[int]] | None = None,
        outcomes: list[Outcome] | None = None,
    ) -> list[Outcome]:
        """Normalize rows, parsing `workers` of them at once in child processes.

        Each row is persisted here, in this process, as soon as its parse is back, so a slow
        parse holds back no other row. While a slow parse runs and no row is left, `refill`
        is asked for more rows (the daemon claims more): the slow one holds one child only.
        Without `refill` (draining, importing) rows are filed in intake order instead, in
        whole batches of `persist_batch`: a parse that comes back early waits for the rows
        before it.
        Outcomes are appended to `outcomes` as they happen (the caller sees how far a failure
        got); what persisting raises (StorageUnavailable) stops the call.
        """
        done: list[Outcome] = [] if outcomes is None else outcomes
        loaded: dict[int, Any] = {}
        # In order: the parse jobs' keys in intake order, made before any of them is parsed.
        ordered = refill is None
        expected: list[int] = []

        def jobs(ids: Sequence[int]) -> list[ParseJob]:
            found: list[ParseJob] = []
            rows = self._load_many(ids) if ids else {}
            for intake_id in ids:
                with logcontext.bound(intake_id=intake_id):
                    row = self._settle(intake_id, rows.get(intake_id))
                    if isinstance(row, Outcome):
                        done.append(row)
                        continue
                loaded[intake_id] = row
                found.append(
                    ParseJob(
                        intake_id,
                        row.channel,
                        row.data,
                        dict(row.envelope or {}),
                        row.received_at,
                        self.settings.caps(),
                        parsers=self.parsers,
                        budget_s=self.settings.parse_timeout_seconds,
                        # Sender authentication asks DNS: in the child too, so a slow name
                        # server holds one child, never the filing of other people's mail.
                        mail_auth=self.mail_auth,
                        history=not row.acknowledge,
                    )
                )
            expected.extend(sorted(job.key for job in found))
            return found

        more = (lambda n: jobs(refill(n))) if refill is not None else None
        pool = shared_pool(self.settings.workers)
        # Parsing runs in a thread of its own that hands results over as they come; this
        # thread files whatever has arrived, up to persist_batch inputs in one transaction.
        # While a transaction runs, the next results queue up: under load the batches grow,
        # when idle each result is filed at once, and a slow parse holds back no other row.
        arrived: queue.SimpleQueue[ParseResult | BaseException | None] = queue.SimpleQueue()
        stopping = threading.Event()

        def parse() -> None:
            try:
                results = pool.run(jobs(intake_ids), self.settings.parse_timeout_seconds, more)
                try:
                    for result in results:
                        arrived.put(result)
                        if stopping.is_set():
                            break
                finally:
                    # Abandoned early: closing the generator kills the running children.
                    close = getattr(results, "close", None)
                    if close is not None:
                        close()
            except BaseException as exc:
                arrived.put(exc)
            finally:
                arrived.put(None)

        parser = threading.Thread(target=parse, name="parity-parse-feed", daemon=True)
        parser.start()
        try:
            finished = False
            ready: dict[int, ParseResult] = {}
            held: list[ParseResult] = []  # in order, parsed, waiting for a full batch
            position = 0  # in `expected`: the first row not filed yet
            while not finished:
                item = arrived.get()
                while True:
                    if item is None:
                        finished = True
                        break
                    if isinstance(item, BaseException):
                        raise item
                    ready[item.key] = item
                    if not ordered and len(ready) >= self.settings.persist_batch:
                        break
                    try:
                        item = arrived.get_nowait()
                    except queue.Empty:
                        break
                batch: list[ParseResult] = []
                if ordered:
                    while position < len(expected) and expected[position] in ready:
                        held.append(ready.pop(expected[position]))
                        position += 1
                    # Draining is about throughput, not latency: whole batches (one commit
                    # each) while the parse processes work on the rows after them.
                    size = self.settings.persist_batch
                    cut = len(held) if finished else len(held) - len(held) % size
                    batch, held = held[:cut], held[cut:]
                else:
                    batch, ready = list(ready.values()), {}
                for start in range(0, len(batch), self.settings.persist_batch):
                    chunk = batch[start : start + self.settings.persist_batch]
                    self._file_many([(loaded.pop(r.key), r) for r in chunk], done)
        finally:
            stopping.set()
            parser.join()
        return done

    def _load_many(self, intake_ids: Sequence[int]) -> dict[int, Any]:
        """The intake rows with their raw bytes as `data`, in one query."""
        with read(self.engine) as conn:
            rows = conn.execute(
                select(*Intake.__table__.c, Blob.data)
                .join(Blob, Blob.sha256 == Intake.raw_sha256)
                .where(Intake.id.in_(list(intake_ids)))
            ).all()
            conn.rollback()
        return {row.id: row for row in rows}

    def _settle(self, intake_id: int, row: Any) -> Any:
        """The loaded intake row, or the Outcome that settles it now."""
        if row is None:
            return Outcome(intake_id, "skipped")
        intake: Any = row  # a Row: the intake columns plus the raw bytes as `data`
        logcontext.annotate(connector=intake.connector)
        if intake.state != "pending" or intake.claimed_by != self.name:
            return Outcome(intake_id, "skipped")
        if intake.attempts > self.settings.max_attempts:
            # Something other than parsing keeps failing on this input: hand it to a person
            # instead of retrying forever.
            return self._dead_letter(intake, f"gave up after {intake.attempts - 1} attempts")
        return intake

    def _file(self, intake: Any, result: ParseResult) -> Outcome:
        """What the parse gave, stored: a message in a case, or a dead letter with why."""
        done: list[Outcome] = []
        self._file_many([(intake, result)], done)
        return done[0]

    def _file_many(self, items: Sequence[tuple[Any, ParseResult]], done: list[Outcome]) -> None:
        """File parsed inputs, many per transaction, each input's outcome its own.

        Appends each outcome to `done` as its transaction commits. What the store refuses for
        now (StorageUnavailable) stops the call: the rows not filed are tried again when
        their lease expires.
        """
        filed: dict[int, Outcome] = {}
        try:
            self._file_sorted(items, filed)
        finally:
            # In intake order, as a caller filing one row after the other would see them;
            # what was committed before a failure is reported too.
            done.extend(filed[key] for key in sorted(filed))

    def _file_sorted(
        self, items: Sequence[tuple[Any, ParseResult]], filed: dict[int, Outcome]
    ) -> None:
        parsed: list[tuple[Any, ParseResult]] = []
        for intake, result in sorted(items, key=lambda item: item[0].id):
            if result.message is not None:
                parsed.append((intake, result))
                continue
            with logcontext.bound(intake_id=intake.id):
                logcontext.annotate(connector=intake.connector)
                if result.crashed:
                    log.error("parser failed on intake %s: %s", intake.id, result.error)
                filed[intake.id] = self._dead_letter(
                    intake, result.error or "parser gave nothing", cpu=result.cpu_seconds
                )
        keyed = [
            (i, message_keys(r.message), identity_of(r.message))
            for i, (_, r) in enumerate(parsed)
            if r.message
        ]
        for group in lock_groups(keyed):
            chosen = [parsed[i] for i in group]
            outcomes = self._persist_many(chosen, {i: keyed[i][1] for i in group})
            for (intake, result), outcome in zip(chosen, outcomes, strict=True):
                outcome = replace(outcome, cpu_seconds=result.cpu_seconds)
                filed[intake.id] = outcome
                with logcontext.bound(intake_id=intake.id, connector=intake.connector):
                    if outcome.case_id is not None:
                        logcontext.annotate(case=format_reference(outcome.case_id))
                    if self.on_case is not None and outcome.state == "done":
                        self.on_case(outcome)
                    log.debug("intake %s %s", intake.id, outcome.state)

    def _persist_many(
        self, items: Sequence[tuple[Any, ParseResult]], keys: dict[int, frozenset[int]]
    ) -> list[Outcome]:
        """File `items` (with `keys`, their threading lock keys in the same order).

        Each transaction first tries the locks of its inputs without waiting: an input
        whose keys another transaction holds (another worker filing the same person or
        thread) is deferred to the next transaction, with every later input sharing a key
        with it (so one person's messages keep their order), while the rest are filed now.
        After _TRY_ROUNDS such transactions, what is left waits for its locks as before.
        So two batches sharing one person no longer wait for each other as a whole; only
        the inputs they share are filed one after the other.

        Optimistic first: all inputs in the transaction directly, since almost every batch
        stores cleanly and a SAVEPOINT costs two round trips per input. If the store refuses
        one input, the batch is rolled back and filed again with a SAVEPOINT per input: the
        refused one is then dead-lettered alone and the others commit.
        """
        key_list = list(keys.values())
        assert len(key_list) == len(items)
        outcomes: dict[int, Outcome] = {}
        pending = list(range(len(items)))
        for attempt in range(_TRY_ROUNDS + 1):
            chosen = [items[n] for n in pending]
            chosen_keys = [key_list[n] for n in pending]
            wait = attempt == _TRY_ROUNDS
            try:
                filed, deferred = self._persist_group(
                    chosen, chosen_keys, savepoints=False, wait=wait
                )
            except _Refused:
                filed, deferred = self._persist_group(
                    chosen, chosen_keys, savepoints=True, wait=True
                )
            for position, outcome in filed.items():
                outcomes[pending[position]] = outcome
            pending = [pending[position] for position in deferred]
            if not pending:
                break
        return [outcomes[n] for n in range(len(items))]

    def _persist_group(
        self,
        items: Sequence[tuple[Any, ParseResult]],
        keys: Sequence[frozenset[int]],
        *,
        savepoints: bool,
        wait: bool = True,
    ) -> tuple[dict[int, Outcome], list[int]]:
        """One transaction: the inputs it could lock filed (by position), and those deferred."""
        outcomes: dict[int, Outcome] = {}
        messages = [r.message for _, r in items if r.message]
        assert len(messages) == len(items)  # only parsed inputs are filed
        with write(self.engine) as conn:
            if wait:
                # Optimistic: the batch's rows read once, under its locks (normalizer/batch.py).
                # With savepoints, each input reads for itself: a rolled-back input must
                # leave nothing behind that the next one would read.
                reads = self._lock_threading(conn, messages, keys, load=not savepoints)
                chosen = list(range(len(items)))
                deferred: list[int] = []
            else:
                reads, chosen, deferred = self._try_threading(conn, messages, keys)
            writes = Writes()
            # The optimistic batch defers its new rows to multi-row INSERTs; filed again
            # in savepoints, each input writes its own (batch.py Writes.deferring).
            deferring = (
                contextlib.nullcontext() if savepoints else writes.deferring(conn, len(chosen))
            )
            with deferring:
                states: dict[int, str] = {
                    row.id: row.state
                    for row in conn.execute(
                        select(Intake.id, Intake.state).where(
                            Intake.id.in_([items[n][0].id for n in chosen])
                        )
                    )
                }
                for position in chosen:
                    intake, result = items[position]
                    assert result.message is not None
                    with logcontext.bound(intake_id=intake.id):
                        logcontext.annotate(connector=intake.connector)
                        if states.get(intake.id) != "pending":
                            outcomes[position] = Outcome(intake.id, "skipped")
                            continue
                        if savepoints:
                            outcome = self._persist_one(conn, intake, result)
                        else:
                            try:
                                outcome = self._file_in(
                                    conn,
                                    intake,
                                    result.message,
                                    result.auth,
                                    reads,
                                    writes,
                                    signature=result.signature,
                                )
                            except DBAPIError as exc:
                                if refused(exc):
                                    raise
                                raise _Refused from exc
                            except StorageUnavailable:
                                raise  # no audit key, the store away: nothing is this input's fault
                            except Exception as exc:
                                raise _Refused from exc
                        outcomes[position] = outcome
                try:
                    writes.flush(conn)
                except DBAPIError as exc:
                    if refused(exc):
                        raise
                    raise _Refused from exc  # filed again input by input, each in its savepoint
                except StorageUnavailable:
                    raise
                except Exception as exc:
                    # A deferred row the store cannot take (a value it cannot hold) fails
                    # here, in no input's own step: filed again input by input as well.
                    raise _Refused from exc
        return outcomes, deferred

    def _try_threading(
        self,
        conn: Connection,
        messages: Sequence[InboundMessage],
        keys: Sequence[frozenset[int]],
    ) -> tuple[Reads, list[int], list[int]]:
        """Try both phases of the locks of `messages`, never waiting for another's key.

        Returns the batch's reads and the positions of the inputs whose every key (their
        contact's included) was taken, then of those deferred: an input is deferred when
        one of its keys is held elsewhere or is a key of an input deferred before it.
        """
        first = frozenset().union(*keys)
        locks = ThreadingLocks(conn, keys_at_most=keys_at_most(first, messages))
        taken = locks.try_lock(first)
        reads = Reads()
        reads.load_identities(conn, messages)
        full: list[frozenset[int]] = []
        for message, own in zip(messages, keys, strict=True):
            identity = identity_of(message)
            row = reads.identities.get(identity) if identity is not None else None
            full.append(own | {contact_key(row.contact_id)} if row is not None else own)
        contacts = frozenset().union(*full) - first
        if contacts:
            taken |= locks.try_lock(contacts)
        chosen: list[int] = []
        deferred: list[int] = []
        blocked: set[int] = set()
        for position, wanted in enumerate(full):
            if wanted <= taken and blocked.isdisjoint(wanted):
                chosen.append(position)
            else:
                deferred.append(position)
                blocked |= wanted
        reads.load_rest(conn, [messages[n] for n in chosen])
        return reads, chosen, deferred

    def _persist_one(self, conn: Connection, intake: Any, result: ParseResult) -> Outcome:
        """One input in its own SAVEPOINT; retried once after a lost race on a unique key."""
        assert result.message is not None
        for attempt in range(_SAVEPOINT_TRIES):
            try:
                with conn.begin_nested():
                    return self._persist_in(
                        conn, intake, result.message, result.auth, signature=result.signature
                    )
            except DBAPIError as exc:
                if refused(exc):
                    raise  # the store is briefly away: the lease expires, the row is retried
                transient = _sqlstate(exc) in _RETRY_STATES
                if transient and attempt + 1 < _SAVEPOINT_TRIES:
                    # A deadlock between row locks, or a unique key someone else (an agent
                    # linking an identity) wrote first: the next pass reads what they wrote.
                    log.info("intake %s: retrying after %s", intake.id, _sqlstate(exc))
                    continue
                if isinstance(exc, OperationalError):
                    raise
                failure: Exception = exc
            except StorageUnavailable:
                raise  # e.g. no audit key: the input stays pending, never a dead letter
            except Exception as exc:
                failure = exc
            # The store refused this message itself: retrying would fail the same way, so a
            # person gets it now, raw bytes and all, and the rest of the batch commits.
            log.error("storing intake %s failed", intake.id, exc_info=failure)
            error = f"could not store: {type(failure).__name__}: {failure}"
            return self._dead_letter_in(conn, intake, error)
        raise AssertionError("unreachable")  # pragma: no cover

    def _lock_threading(
        self,
        conn: Connection,
        messages: Sequence[InboundMessage],
        keys: Iterable[frozenset[int]],
        *,
        load: bool = False,
    ) -> Reads | None:
        """Both phases of the threading locks of `messages` (normalizer/threadlocks.py).

        With `load`, the rows the locks protect are read for the batch (normalizer/batch.py):
        the identities' read, which the second phase needs anyway, and the rest after it.
        """
        sqlite = is_sqlite(conn)
        first = frozenset().union(*keys)
        # One mode for the whole transaction, decided before the first lock from a bound
        # covering both phases: never shared first and exclusive later.
        locks = ThreadingLocks(conn, keys_at_most=keys_at_most(first, messages))
        locks.lock(first)  # nothing on SQLite: one writer at a time already
        # Second phase, once the identities cannot change under us: their contacts, since
        # two handles of one person read that person's open cases.
        reads = Reads() if load else None
        if reads is not None:
            contacts = reads.load_identities(conn, messages)
        elif sqlite or locks.alone:
            return None
        else:
            identities = {i for i in map(identity_of, messages) if i is not None}
            contacts = set()
            if identities:
                contacts = set(
                    conn.execute(
                        select(Identity.contact_id)
                        .where(tuple_(Identity.kind, Identity.handle).in_(sorted(identities)))
                        .distinct()
                    ).scalars()
                )
        if contacts:
            locks.lock({contact_key(c) for c in contacts})
        if reads is not None:
            reads.load_rest(conn, messages)
        return reads

    def _dead_letter(self, intake: Any, error: str, *, cpu: float = 0.0) -> Outcome:
        with write(self.engine) as conn:
            return replace(self._dead_letter_in(conn, intake, error), cpu_seconds=cpu)

    @staticmethod
    def _dead_letter_in(conn: Connection, intake: Any, error: str) -> Outcome:
        claimed = conn.execute(
            update(Intake)
            .where(Intake.id == intake.id, Intake.state == "pending")
            .values(state="dead", processed_at=utcnow())
        ).rowcount
        previous = conn.execute(
            select(DeadLetter.id).where(
                DeadLetter.intake_id == intake.id, DeadLetter.resolved.is_(False)
            )
        ).scalar()
        if claimed and previous is not None:
            # A replay that failed again: one dead letter per input, with the newest error.
            conn.execute(update(DeadLetter).where(DeadLetter.id == previous).values(error=error))
        elif claimed:
            conn.execute(
                insert(DeadLetter).values(
                    intake_id=intake.id,
                    connector=intake.connector,
                    channel=intake.channel,
                    raw_sha256=intake.raw_sha256,
                    error=error,
                    created_at=utcnow(),
                    replays=0,
                    resolved=False,
                )
            )
        log.warning("intake %s dead-lettered: %s", intake.id, error)
        return Outcome(intake.id, "dead", error=error)

    def _persist(
        self, intake: Any, message: InboundMessage, auth: dict[str, str] | None = None
    ) -> Outcome:
        """One input in a transaction of its own (tests, and callers outside the pool)."""
        with write(self.engine) as conn:
            self._lock_threading(conn, [message], [message_keys(message)])
            state = conn.execute(select(Intake.state).where(Intake.id == intake.id)).scalar_one()
            if state != "pending":
                return Outcome(intake.id, "skipped")
            return self._persist_in(conn, intake, message, auth)

    def _persist_in(
        self,
        conn: Connection,
        intake: Any,
        message: InboundMessage,
        auth: dict[str, str] | None,
        *,
        signature: tuple[bytes, int] | None = None,
    ) -> Outcome:
        """Dedup, thread and store one message in `conn`, under its threading locks."""
        writes = Writes()
        outcome = self._file_in(conn, intake, message, auth, None, writes, signature=signature)
        writes.flush(conn)
        return outcome

    def _file_in(
        self,
        conn: Connection,
        intake: Any,
        message: InboundMessage,
        auth: dict[str, str] | None,
        reads: Reads | None,
        writes: Writes,
        *,
        signature: tuple[bytes, int] | None = None,
    ) -> Outcome:
        """`_persist_in` reading from `reads` (if given) and leaving rows to `writes`."""
        if reads is not None and message.dedup_key in reads.dedup:
            existing: Any = reads.dedup[message.dedup_key]
        else:
            existing = conn.execute(
                select(Message.id, Message.case_id).where(Message.dedup_key == message.dedup_key)
            ).one_or_none()
        if existing is not None:
            existing_id, existing_case = existing
            logcontext.annotate(case=format_reference(existing_case))
            if "voicemail" in message.meta:
                _merge_voicemail(conn, existing_id, message)
            self._receipts(writes, existing_id, intake)
            self._finish(writes, intake.id, existing_id)
            return Outcome(intake.id, "duplicate", existing_id, existing_case)
        # Email whose From is not authenticated proves nothing about who sent it: it is
        # filed under a contact of its own, never under the identity it names.
        verified = message.channel not in SENDER_CHECKED_CHANNELS or authenticated(auth)
        contact_id, identity_id, claimed = self._identity(conn, message, verified, reads, writes)
        # A carrier's STOP keyword is marked automated, and still opts out of surveys.
        plain = not message.automated or parse_answer(message.text) == "stop"
        if verified and plain and not message.meta.get("delivery_report"):
            # A bare 1-5 (or STOP) from someone we asked by text is their answer, not a new
            # case: recorded, and the message filed in the surveyed case, which stays resolved.
            answered = answer_open(
                conn, identity_id, message.text, message.received_at, self.csat.answer_days
            )
            if answered is not None:
                return self._file_answer(
                    conn, intake, message, identity_id, answered, auth, reads, writes
                )
        candidates, tokens = self._candidates(conn, message, claimed, verified, reads)
        decision = decide(
            candidates,
            message.received_at,
            timedelta(days=self.store.threading.reopen_window_days),
        )
        facts = _ack_facts(intake, message, auth)
        # A reason known before the case exists is written with it: no second statement.
        acknowledging = decision.action == "new"
        routed = self.ack_routes.get(facts.channel)
        withheld = withhold_reason(facts, self.acks) if acknowledging and routed is None else None
        case_id = self._apply(conn, decision, message, contact_id, withheld, reads, writes)
        logcontext.annotate(case=format_reference(case_id))
        message_id = self._insert_message(
            conn, case_id, identity_id, intake, message, decision, auth, reads, writes
        )
        # Issue 11: a token answered from the case's own contact verifies the identity;
        # the case's signature learns the text for merge suggestions.
        if verified:  # an unauthenticated message never verifies an identity
            mark_verified(conn, identity_id, tokens)
        report = message.meta.get("delivery_report")
        if report:
            _record_delivery(conn, report)
        else:  # a bounce's boilerplate would make every bounced case look alike
            if signature is None:  # not parsed in the pool (tests, direct callers)
                signature = message_signature(message)
            if signature is not None:
                writes.signature(case_id, signature, new_case=decision.action == "new")
        if message.meta.get("callback_requested"):
            conn.execute(
                update(Case)
                .where(Case.id == case_id, Case.callback_requested_at.is_(None))
                .values(callback_requested_at=message.received_at)
            )
        self._receipts(writes, message_id, intake)
        if acknowledging:
            writes.acknowledgements.append(
                functools.partial(
                    self._acknowledge_later,
                    conn,
                    intake.id,
                    routed,
                    case_id,
                    message_id,
                    facts,
                    withheld,
                    message,
                    auth,
                )
            )
        self._finish(writes, intake.id, message_id)
        return Outcome(intake.id, "done", message_id, case_id, decision)

    def _acknowledge_later(
        self,
        conn: Connection,
        intake_id: int,
        routed: AckRoute | None,
        case_id: int,
        message_id: int,
        facts: AckFacts,
        withheld: str | None,
        message: InboundMessage,
        auth: dict[str, str] | None,
    ) -> None:
        """A new case's acknowledgement, planned when its batch's rows are written (batch.py
        Writes.acknowledgements): still in the transaction that opens the case."""
        with logcontext.bound(intake_id=intake_id, case=format_reference(case_id)):
            if routed is not None:
                self._acknowledge_routed(conn, routed, case_id, facts, message)
            else:
                self._acknowledge(conn, case_id, message_id, facts, withheld, message, auth)

    def _file_answer(
        self,
        conn: Connection,
        intake: Any,
        message: InboundMessage,
        identity_id: int | None,
        answered: Answered,
        auth: dict[str, str] | None,
        reads: Reads | None,
        writes: Writes,
    ) -> Outcome:
        """Store a survey answer in the surveyed case: stored like any message (nothing is
        dropped), never acknowledged, and the case is neither reopened nor followed up."""
        decision = Decision(
            action="join", case_id=answered.case_id, reason="answer to the satisfaction survey"
        )
        logcontext.annotate(case=format_reference(answered.case_id))
        message_id = self._insert_message(
            conn, answered.case_id, identity_id, intake, message, decision, auth, reads, writes
        )
        self._receipts(writes, message_id, intake)
        self._finish(writes, intake.id, message_id)
        return Outcome(intake.id, "done", message_id, answered.case_id, decision)

    # --- pieces of _persist -----------------------------------------------------------------

    def _identity(
        self,
        conn: Connection,
        message: InboundMessage,
        verified: bool = True,
        reads: Reads | None = None,
        writes: Writes | None = None,
    ) -> tuple[int, int | None, int | None]:
        """(contact, identity, the contact the sender's handle belongs to).

        An unverified sender gets a new contact and no identity: it may not change the
        name we know an identity by, nor be joined with that identity's cases later.
        """
        sender = message.sender
        if sender.anonymous or not sender.handle:
            # A withheld number or missing address is nobody in particular: never merged.
            contact_id = self._new_contact(conn, sender.name, None, writes)
            return contact_id, None, None
        key = (sender.kind, sender.handle)
        row: IdentityRow | None
        if reads is not None and key in reads.identities:
            row = reads.identities[key]
        else:
            found = conn.execute(
                select(
                    Identity.id, Identity.contact_id, Identity.display_name, Identity.facts
                ).where(Identity.kind == sender.kind, Identity.handle == sender.handle)
            ).one_or_none()
            row = IdentityRow(*found) if found is not None else None
        if not verified:
            contact_id = self._new_contact(conn, sender.name or sender.handle, reads, writes)
            return contact_id, None, row.contact_id if row is not None else contact_id
        if row is not None:
            changes: dict[str, Any] = {}
            if sender.name and sender.name != row.display_name:
                changes["display_name"] = sender.name
            if sender.facts and sender.facts != row.facts:
                changes["facts"] = {**(row.facts or {}), **sender.facts}
            if changes:
                conn.execute(update(Identity).where(Identity.id == row.id).values(**changes))
                row.display_name = changes.get("display_name", row.display_name)
                row.facts = changes.get("facts", row.facts)
            return row.contact_id, row.id, row.contact_id
        contact_id = self._new_contact(conn, sender.name or sender.handle, reads, writes)
        new_row: dict[str, Any] = {
            "kind": sender.kind,
            "handle": sender.handle,
            "display_name": sender.name,
            "contact_id": contact_id,
            "verified": False,
            "facts": sender.facts,
            "created_at": utcnow(),
        }
        if writes is not None and writes.identity_ids is not None:
            identity_id = writes.identity_ids.take(conn)
            writes.defer(Identity, {"id": identity_id, **new_row})
        else:
            identity_id = conn.execute(_INSERT_IDENTITY, new_row).scalar_one()
        if reads is not None:
            reads.identities[key] = IdentityRow(identity_id, contact_id, sender.name, sender.facts)
        return contact_id, identity_id, contact_id

    @staticmethod
    def _new_contact(
        conn: Connection, name: str, reads: Reads | None = None, writes: Writes | None = None
    ) -> int:
        now = utcnow()
        if writes is not None and writes.contact_ids is not None:
            contact_id = writes.contact_ids.take(conn)
            writes.defer(Contact, {"id": contact_id, "name": name, "created_at": now})
        else:
            contact_id = conn.execute(
                _INSERT_CONTACT, {"name": name, "created_at": now}
            ).scalar_one()
        if reads is not None:
            reads.open_cases[contact_id] = []  # a new contact has no cases yet
        return contact_id

    def _candidates(
        self,
        conn: Connection,
        message: InboundMessage,
        contact_id: int | None,
        verified: bool = True,
        reads: Reads | None = None,
    ) -> tuple[Candidates, frozenset[int]]:
        """The candidates, and the cases whose token the message really carries."""
        sender_contact = (
            None if message.sender.anonymous or not message.sender.handle else contact_id
        )
        linked: list[tuple[LinkKind, CaseView]] = []
        token_case_ids: set[int] = set()
        header_ids = [*message.thread.in_reply_to, *reversed(message.thread.references)]
        for reference, token in find_tokens((message.subject, message.text), header_ids):
            case = self._case_by(conn, Case.reference == reference)
            if case is not None and self._token_of_reference(conn, reference) == token:
                token_case_ids.add(case.id)
                linked.append(("token", case))
        for kind, refs in (
            ("in-reply-to", message.thread.in_reply_to),
            ("references", tuple(reversed(message.thread.references))),
            ("conversation", message.thread.conversation),
        ):
            for ref in refs:
                for case_id in self._ref_cases(conn, ref, reads):
                    case = self._case_by(conn, Case.id == case_id)
                    if case is not None:
                        linked.append((kind, case))  # type: ignore[arg-type]
        for reference in find_references(message.subject, message.text):
            case = self._case_by(conn, Case.reference == reference)
            if case is not None:
                linked.append(("reference", case))
        # Issue 11: a reply from the contact of a case merged into the linked case is trusted
        # like the case's own contact's (the agent joined the threads, not the people).
        trusted = set(token_case_ids)
        if sender_contact is not None and verified:
            for _how, case in linked:
                if sender_contact in absorbed_contacts(conn, case.id):
                    trusted.add(case.id)
        open_cases: list[CaseView] = []
        if sender_contact is not None:
            if reads is not None and sender_contact in reads.open_cases:
                rows: Iterable[Any] = reads.open_cases[sender_contact]
            else:
                rows = conn.execute(
                    select(Case).where(
                        Case.contact_id == sender_contact, Case.status.in_(OPEN_STATUSES)
                    )
                )
            open_cases = [self._view(c) for c in rows]
        candidates = Candidates(
            sender_contact, linked, frozenset(trusted), open_cases, sender_verified=verified
        )
        return candidates, frozenset(token_case_ids)

    @staticmethod
    def _ref_cases(conn: Connection, ref: str, reads: Reads | None) -> list[int]:
        """The cases holding a message with Message-ID (or conversation) `ref`."""
        if reads is not None and ref in reads.refs:
            return list(reads.refs[ref])
        return list(
            conn.execute(
                select(MessageRef.case_id).where(MessageRef.ref == ref).distinct()
            ).scalars()
        )

    def _case_by(self, conn: Connection, condition: Any) -> CaseView | None:
        row = conn.execute(select(Case).where(condition)).one_or_none()
        if row is not None and row.status == MERGED:
            # A merged case's thread continues in the case it was merged into.
            survivor = surviving_case_id(conn, row.id)
            row = conn.execute(select(Case).where(Case.id == survivor)).one()
        return self._view(row) if row is not None else None

    @staticmethod
    def _token_of_reference(conn: Connection, reference: str) -> str | None:
        return conn.execute(
            select(Case.token).where(Case.reference == reference)
        ).scalar_one_or_none()

    @staticmethod
    def _view(row: Any) -> CaseView:
        return CaseView(
            id=row.id,
            reference=row.reference,
            contact_id=row.contact_id,
            status=row.status,
            resolved_at=row.resolved_at,
            last_activity_at=row.last_activity_at,
        )

    @staticmethod
    def _token_of(conn: Connection, case_id: int) -> str:
        return str(conn.execute(select(Case.token).where(Case.id == case_id)).scalar_one())

    def _apply(
        self,
        conn: Connection,
        decision: Decision,
        message: InboundMessage,
        contact_id: int,
        withheld: str | None = None,
        reads: Reads | None = None,
        writes: Writes | None = None,
    ) -> int:
        now = message.received_at
        if decision.action == "new":
            due, rule = due_time(now, message.subject, message.text, self.store.sla)
            # The id first, so the reference (made from it) is written with the row: no
            # second statement, and on PostgreSQL no second row version per new case.
            case_id = _next_case_id(conn, reads)
            language = _case_language(conn, message, contact_id, writes)
            row = dict(
                id=case_id,
                token=new_token(),
                contact_id=contact_id,
                status="new",
                channel=message.channel,
                subject=(message.subject or message.text.strip().split("\n", 1)[0])[:500],
                due_at=due,
                due_rule=rule,
                first_due_at=due,
                side=message.visibility,
                first_inbound_at=now,
                last_activity_at=now,
                created_at=utcnow(),
                claims_reference=decision.claims,
                linked_case_id=decision.linked_case_id,
                followups=0,
                ack_state="withheld" if withheld else None,
                ack_reason=withheld[:256] if withheld else None,
                unverified_from=_unverified_from(message, decision),
                reference=format_reference(case_id),
                language=language,
            )
            if writes is None or not writes.defer(Case, row):
                conn.execute(_INSERT_CASE, row)
            turn = turns.first_row(case_id, now, due, rule)
            if writes is None or not writes.defer(CaseTurn, turn):
                turns.first(conn, case_id, now, due, rule)
            if reads is not None:
                reads.case_changed(contact_id)
            # Content rules may tag a new case and set its fields (issue 22), as they may
            # bring its due time forward: once, when the case opens.
            tags.apply_rules(
                conn, case_id, self.store.sla.rules, f"{message.subject}\n{message.text}"
            )
            # Routing rules (issue 22) put it in a team, once, as it opens; a team that
            # auto-assigns then gives it to a member.
            teams.route_new_case(
                conn,
                case_id,
                self.store.routing,
                CaseFacts(
                    channel=message.channel,
                    language=language,
                    subject=message.subject,
                    text=message.text,
                    addresses=message.recipients,
                ),
            )
            if decision.claims or decision.linked_case_id:
                audit.append(
                    conn,
                    actor="system",
                    action="case.opened",
                    case_id=case_id,
                    after={
                        "reason": decision.reason,
                        "claims": decision.claims,
                        "linked_case_id": decision.linked_case_id,
                    },
                )
            return case_id
        assert decision.case_id is not None
        case_id = decision.case_id
        # The case row is locked from here to commit: messages of two people joining one
        # case (a token, a shared thread) take turns on it. Threading read it unlocked; a
        # reopen decided on a resolved case that another message reopened meanwhile is a join.
        before = conn.execute(
            select(Case.status, Case.resolved_at, Case.contact_id)
            .where(Case.id == decision.case_id)
            .with_for_update()
        ).one()
        if reads is not None:
            reads.case_changed(before.contact_id)
        if decision.action == "reopen" and before.status in OPEN_STATUSES:
            decision = replace(decision, action="join")
        values: dict[str, Any] = {
            "last_activity_at": now,
            "followups": Case.followups + 1,
        }
        if decision.action == "reopen":
            values.update(status="open", resolved_at=None, reopens=Case.reopens + 1)
        elif before.status == "pending_customer":
            values["status"] = "open"  # the customer answered: the ball is with us again
        conn.execute(update(Case).where(Case.id == decision.case_id).values(**values))
        # This message waits for us: its own due time, under the same policy as a new case.
        due, rule = due_time(now, message.subject, message.text, self.store.sla)
        turns.inbound(conn, case_id, now, due, rule, reopened=decision.action == "reopen")
        # The case is locked and its turn is set: its assignee hears of it once per turn.
        notifications.customer_answered(conn, case_id, now)
        if decision.action == "reopen":
            audit.append(
                conn,
                actor="system",
                action="case.reopened",
                case_id=decision.case_id,
                before={
                    "status": before.status,
                    "resolved_at": before.resolved_at.isoformat() if before.resolved_at else None,
                },
                after={"status": "open", "reason": decision.reason},
            )
        return case_id

    def _insert_message(
        self,
        conn: Connection,
        case_id: int,
        identity_id: int | None,
        intake: Any,
        message: InboundMessage,
        decision: Decision,
        auth: dict[str, str] | None,
        reads: Reads | None,
        writes: Writes,
    ) -> int:
        meta = dict(message.meta)
        meta["threading"] = decision.reason
        if decision.claims:
            meta["claims"] = decision.claims
        if decision.related:
            meta["related"] = decision.related
        row = dict(
            case_id=case_id,
            identity_id=identity_id,
            channel=message.channel,
            direction="inbound",
            visibility=message.visibility,
            dedup_key=message.dedup_key,
            external_id=message.external_id,
            from_handle=message.sender.handle,
            from_name=message.sender.name,
            subject=message.subject,
            text=message.text,
            html=message.html,
            html_view=message.html_view,
            sent_at=message.sent_at,
            received_at=message.received_at,
            raw_sha256=intake.raw_sha256,
            thread={
                "in_reply_to": list(message.thread.in_reply_to),
                "references": list(message.thread.references),
                "conversation": list(message.thread.conversation),
            },
            automated=message.automated,
            meta=meta,
            auth=auth,
            language=message.language,
        )
        if writes.message_ids is not None:
            message_id = writes.message_ids.take(conn)
            writes.defer(Message, {"id": message_id, **row})
        else:
            message_id = conn.execute(_INSERT_MESSAGE, row).scalar_one()
        if reads is not None:
            reads.dedup[message.dedup_key] = (message_id, case_id)
        refs = {*message.own_refs, *message.thread.conversation}
        for ref in sorted(refs):
            writes.refs.append({"ref": ref, "case_id": case_id, "message_id": message_id})
            if reads is not None:
                known = reads.refs.setdefault(ref, [])
                if case_id not in known:
                    known.append(case_id)
        for part in message.attachments:
            digest = sha256(part.data)
            conn.execute(
                insert_ignore(conn, Blob, ["sha256"]),
                [
                    {
                        "sha256": digest,
                        "size": len(part.data),
                        "data": part.data,
                        "created_at": utcnow(),
                    }
                ],
            )
            conn.execute(
                insert(Attachment).values(
                    message_id=message_id,
                    sha256=digest,
                    filename=part.filename[:500],
                    content_type=part.content_type[:250],
                    size=len(part.data),
                )
            )
        return message_id

    # --- acknowledgement ---------------------------------------------------------------------

    def _acknowledge(
        self,
        conn: Connection,
        case_id: int,
        message_id: int,
        facts: AckFacts,
        withheld: str | None,
        message: InboundMessage,
        auth: dict[str, str] | None = None,
    ) -> None:
        """Queue the new case's one acknowledgement, or record why there is none.

        Decided in the transaction that opens the case, so a crash can neither lose the
        acknowledgement nor queue it twice. The decision goes to the audit log, except for
        imported history: importing is the operator's one decision for the whole file, and
        the import writes one audit row for it (normalizer/backfill.py).
        """
        if withheld is not None and not facts.acknowledge:
            # Already written on the case when it was opened, and history is audited once
            # per import: queue_ack would write the same two columns again.
            return
        now = utcnow()
        template = self.acks.template(facts.channel)
        if withheld is None:
            withheld = recently_acknowledged(
                last_sent_to(conn, facts.channel, facts.recipient, "ack"), now, self.acks
            )
        if withheld is None and template is None:
            withheld = "no template for the channel"
        if withheld is not None or template is None:
            # Known before the case was written (then already on it), or just now.
            queue_ack(
                conn,
                case_id,
                facts.channel,
                withheld or "no template for the channel",
                eta_at=now,
                now=now,
                limits=None,
                claim=False,
                audit_withheld={} if facts.acknowledge else None,
                audit_head=audit.NEW_CHAIN,
            )
            return
        sender = message.sender
        case = conn.execute(
            select(Case.reference, Case.token, Case.due_at, Case.language).where(Case.id == case_id)
        ).one()
        eta = self._eta(conn, case_id, case.due_at, now)
        content = compose(
            template,
            channel=message.channel,
            reference=case.reference,
            token=case.token,
            public=message.visibility == "public",
            # The greeting names only an authenticated sender, and only by a plain name.
            name=greeting_name(
                sender.name, auth if message.channel in SENDER_CHECKED_CHANNELS else _TRUSTED
            ),
            subject=message.subject,
            eta=eta,
            now=now,
            timezone=self.store.sla.business_hours.timezone,
            other_channels=self.acks.other_channels,
            status_base_url=self.acks.status_base_url,
            language=case.language,
        )
        # The one planner of every channel (normalizer/ack_plan.py): the case was opened
        # in this transaction, so its ack_state is still empty and the claim is ours.
        queue_ack(
            conn,
            case_id,
            message.channel,
            AckOut(
                recipient=sender.handle,
                subject=content.subject,
                body=content.body,
                payload=_reply_payload(message, message_id),
                audit={"eta_basis": eta.basis, "ahead": eta.ahead},
            ),
            eta_at=eta.at,
            now=now,
            limits=self.acks.limits,
            audit_withheld={},
            audit_head=audit.NEW_CHAIN,
        )

    def _acknowledge_routed(
        self,
        conn: Connection,
        route: AckRoute,
        case_id: int,
        facts: AckFacts,
        message: InboundMessage,
    ) -> None:
        """Queue the acknowledgement of a channel whose route its connector declares.

        The route is pure; what it needs of the running connector is read here, in the
        transaction that opens the case, from the connector's checkpoint row, so the
        decision is made once, whichever process runs the worker.
        """
        now = utcnow()
        case = conn.execute(
            select(Case.reference, Case.token, Case.due_at, Case.language).where(Case.id == case_id)
        ).one()
        eta = self._eta(conn, case_id, case.due_at, now)
        state: dict[str, Any] = {}
        if route.state is not None:
            connector, key = route.state
            saved = conn.execute(
                select(Checkpoint.value).where(
                    Checkpoint.connector == connector, Checkpoint.key == key
                )
            ).scalar_one_or_none()
            state = dict(saved or {})
        sender = message.sender
        plan = route.decide(
            AckCase(
                channel=message.channel,
                reference=str(case.reference),
                token=case.token,
                visibility=message.visibility,
                handle="" if sender.anonymous else sender.handle,
                name=sender.name,
                external_id=message.external_id,
                automated=facts.automated,
                acknowledge=facts.acknowledge,
                received_at=message.received_at,
                now=now,
                eta_words=describe_eta(
                    now, eta.at, self.store.sla.business_hours.timezone, case.language
                ),
                language=case.language,
                status_url=status_url(self.acks.status_base_url, str(case.reference), case.token),
            ),
            state,
        )
        queue_ack(
            conn,
            case_id,
            message.channel,
            plan,
            eta_at=eta.at,
            now=now,
            limits=self.acks.limits,
            audit_withheld={"channel": message.channel},
            claim=False,  # opened in this transaction: its ack_state is still empty
            audit_head=audit.NEW_CHAIN,
        )

    def _eta(self, conn: Connection, case_id: int, due_at: datetime, now: datetime) -> Eta:
        return estimate(
            conn, case_id, due_at, now, hours=self.store.sla.business_hours, acks=self.acks
        )

    @staticmethod
    def _receipts(writes: Writes, message_id: int, intake: Any) -> None:
        addresses = intake.envelope.get("rcpt_tos") or [intake.envelope.get("address", "")]
        # Lower-cased before de-duplicating: one receipt per address however it was spelled
        # (the unique key would refuse the second within one statement's rows otherwise).
        for address in dict.fromkeys(str(a).lower() for a in addresses):
            writes.receipts.append(
                {
                    "message_id": message_id,
                    "intake_id": intake.id,
                    "connector": intake.connector,
                    "address": address,
                    "received_at": intake.received_at,
                }
            )

    @staticmethod
    def _finish(writes: Writes, intake_id: int, message_id: int) -> None:
        writes.finished.append(
            {"k_id": intake_id, "message_id": message_id, "processed_at": utcnow()}
        )


def _unverified_from(message: InboundMessage, decision: Decision) -> str | None:
    """Who a new case's sender claims to be, when nothing proved it: an unauthenticated
    mail's From, or the address or number typed into a form (`claims_reachable`), which
    stays a claim until the person confirms it."""
    if decision.unverified:
        return message.sender.handle[:320]
    claimed = message.meta.get("claims_reachable")
    return str(claimed)[:320] if claimed else None


def _case_language(
    conn: Connection, message: InboundMessage, contact_id: int, writes: Writes | None = None
) -> str:
    """The language a new case is answered in: the message's (chosen on the form or
    detected), else the language the contact last wrote in on any case, else English."""
    if message.language:
        return message.language
    if writes is not None and writes.new_contact(contact_id):
        return i18n.DEFAULT  # made in this batch: nothing written before to look at
    known = conn.execute(
        select(Message.language)
        .join(Case, Case.id == Message.case_id)
        .where(
            Case.contact_id == contact_id,
            Message.direction == "inbound",
            Message.language.is_not(None),
        )
        .order_by(Message.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return known or i18n.DEFAULT


def _merge_voicemail(conn: Connection, message_id: int, message: InboundMessage) -> None:
    """The recording and transcription callbacks of one voicemail make one message."""
    stored = conn.execute(select(Message.meta).where(Message.id == message_id)).scalar_one()
    merged = merge_voicemail(stored or {}, message.meta)
    if merged is not None:
        text, meta = merged
        conn.execute(update(Message).where(Message.id == message_id).values(text=text, meta=meta))


def _record_delivery(conn: Connection, report: dict[str, Any]) -> None:
    """A delivery status notification about our own mail: the outbox row it names learns
    whether it arrived (see normalizer/dsn.py)."""
    original, outcome = report.get("original_message_id"), report.get("outcome")
    if not original or not outcome:
        return
    moved = report_delivery(
        conn, message_id_header=original, outcome=outcome, reason=report.get("reason", "")
    )
    if moved:
        log.info("delivery report: outbox %s %s", ",".join(map(str, moved)), outcome)


def _ack_facts(intake: Any, message: InboundMessage, auth: dict[str, str] | None) -> AckFacts:
    return AckFacts(
        channel=message.channel,
        acknowledge=bool(intake.acknowledge),
        automated=message.automated,
        recipient=message.sender.handle,
        anonymous=message.sender.anonymous,
        authenticated=(authenticated(auth) if message.channel in SENDER_CHECKED_CHANNELS else None),
    )


# Other channels' senders are who the platform says (a Twilio number, a platform account):
# their display names still pass the plain-name check before a greeting uses them.
_TRUSTED = {"verdict": "pass"}


def _reply_payload(message: InboundMessage, message_id: int) -> dict[str, Any]:
    """What the channel's connector needs to send a reply that threads with `message`."""
    payload: dict[str, Any] = {
        "message_id": message_id,
        "external_id": message.external_id,
        "visibility": message.visibility,
        # No "to_name": the acknowledgement goes to the bare address. A display name is text
        # the sender chose, and a forged sender would choose it for the victim to read.
    }
    if message.channel in MESSAGE_ID_CHANNELS and message.external_id:
        # RFC 5322 3.6.4: the parent's References plus the parent's Message-ID, bounded.
        payload["in_reply_to"] = message.external_id
        payload["references"] = [*message.thread.references[-19:], message.external_id]
    else:
        payload["conversation"] = list(message.thread.conversation)
    return payload


class WorkerLoop:
    """Runs a Normalizer inside the daemon's event loop, without starving intake.

    Intake answers the sender; normalizing can wait a moment. In one process they share one
    interpreter lock, so every millisecond spent parsing is a millisecond a sender waits.
    While the intake writer is busy the worker waits, for up to `busy_defer_s`: a burst is
    answered at full speed and normalized right after it (the same work, done later).
    Intake that stays busy longer is a sustained load, and then the worker takes a small
    share of the time (it sleeps several times as long as it worked): it keeps filing, but
    more slowly than a saturated SMTP server stores (the 100,000-mail soak on SQLite filed
    about a tenth as fast as it stored, and caught up 24 minutes after the load ended).
    Nothing is lost meanwhile; on PostgreSQL more instances (each `parity run` has a
    worker, and they share the backlog) shorten the wait. When intake is quiet it works in
    chunks, at full speed.
    """

    def __init__(
        self,
        normalizer: Normalizer,
        *,
        intake_busy: Callable[[], bool] = lambda: False,
        idle_poll_s: float = 1.0,
        busy_share: float = 0.15,
        busy_defer_s: float = 10.0,
        idle_chunk: int | None = None,
    ) -> None:
        self.normalizer = normalizer
        self.intake_busy = intake_busy
        self.idle_poll_s = idle_poll_s
        self.busy_share = busy_share
        self.busy_defer_s = busy_defer_s
        self.idle_chunk = idle_chunk
        self._busy_since: float | None = None
        self.wake = asyncio.Event()
        self.processed = 0
        self.last_success: datetime | None = None
        self.last_error: str | None = None
        # Cleared when stopping, so a running chunk claims nothing more.
        self._refilling = threading.Event()
        # Freed heap pages back to the system after work (normalizer/memory.py): without it
        # the threads' malloc arenas hold what each batch freed, and RSS climbs.
        self.trimmer = Trimmer()
        self._trimmed_at = 0  # `processed` when the worker last trimmed

    def notify(self, _count: int = 0) -> None:
        """Called from any thread when new input was stored."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self.wake.set)

    _loop: asyncio.AbstractEventLoop | None = None

    def _deferring(self) -> bool:
        """True while intake is busy and has not been busy for `busy_defer_s` yet."""
        if not self.intake_busy():
            self._busy_since = None
            return False
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        return now - self._busy_since < self.busy_defer_s

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _f: self._refilling.clear())
        try:
            await self._run(stop)
        finally:
            stopping.cancel()

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._deferring():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.05)
                continue
            try:
                batch = await asyncio.to_thread(
                    self.normalizer.claim, self.normalizer.settings.batch_size
                )
            except StorageUnavailable as exc:
                self.last_error = str(exc)
                batch = []
            if not batch:
                if self.processed != self._trimmed_at:
                    # The backlog is done: what its batches freed goes back now, once.
                    self._trimmed_at = self.processed
                    await asyncio.to_thread(self.trimmer.maybe, force=True)
                self.wake.clear()
                await _wait_any(stop, self.wake, self.idle_poll_s)
                continue
            position = 0
            while position < len(batch) and not stop.is_set() and not self._deferring():
                # While intake is busy: one row per trip to a thread, then a pause (below).
                # Otherwise the whole claim in one trip (or `idle_chunk` rows): each trip to
                # a thread and back waits on the scheduler twice, and rows parsed together
                # are filed together, a transaction for many rather than one each.
                size = 1 if self.intake_busy() else self.idle_chunk or len(batch)
                if not stop.is_set():
                    self._refilling.set()
                started = time.perf_counter()
                attempted, error = await asyncio.to_thread(
                    self._process_some, batch[position : position + size]
                )
                position += attempted
                if attempted > (error is not None):
                    self.processed += attempted - (error is not None)
                    self.last_success = utcnow()
                pause = 0.0
                if isinstance(error, StorageUnavailable):
                    self.last_error = str(error)
                    pause = 1.0
                elif error is not None:
                    self.last_error = f"{type(error).__name__}: {error}"
                    log.error("normalizing intake %s failed", batch[position - 1], exc_info=error)
                    pause = 0.5
                if self.intake_busy():
                    spent = time.perf_counter() - started
                    pause = max(pause, spent * (1 - self.busy_share) / self.busy_share)
                if pause:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=pause)
            if position < len(batch):
                # Stopping, or a burst began: hand the rows claimed but not reached back now,
                # rather than leaving them leased to a worker that is gone or waiting.
                with contextlib.suppress(StorageUnavailable):
                    await asyncio.to_thread(self.normalizer.release, batch[position:])

    def _process_some(self, ids: list[int]) -> tuple[int, Exception | None]:
        """Normalize rows, `workers` at a time: how many were tried, and a failure if any.

        While a slow parse runs and these rows are done, more rows are claimed and filed
        meanwhile (unless stopping), so a hostile input holds one parse process, not the
        queue. A failure of the store stops the chunk; its unfiled rows are retried when
        their lease expires.
        """
        outcomes: list[Outcome] = []
        try:
            self.normalizer.process_many(ids, refill=self._refill, outcomes=outcomes)
        except Exception as exc:
            return len(ids), exc
        finally:
            # In this thread, not the event loop's: a trim takes milliseconds.
            if self.trimmer.maybe():
                self._trimmed_at = self.processed
        # Rows claimed by refilling were filed too: they count as processed.
        self.processed += max(0, len(outcomes) - len(ids))
        return len(ids), None

    def _refill(self, count: int) -> list[int]:
        """More rows for the parse processes while this trip's rows are being finished.

        A backlog is claimed a batch at a time, not a row per free process: each claim is a
        write of its own, and rows claimed together are parsed and filed together. A burst of
        intake ends the refilling, so the worker goes back to deferring to it.
        """
        if not self._refilling.is_set() or self.intake_busy():
            return []
        try:
            return self.normalizer.claim(max(count, self.normalizer.settings.batch_size))
        except StorageUnavailable:
            return []

    def backlog(self) -> int:
        with read(self.normalizer.engine) as conn:
            return len(
                conn.execute(select(Intake.id).where(Intake.state == "pending").limit(10000)).all()
            )


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    tasks = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
