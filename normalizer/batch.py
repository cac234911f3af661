"""What one filing transaction reads up front and writes at its end, set-based.

Filing a message one statement at a time cost about thirteen statements per message, and
building and sending each was most of the filing's time (docs/benchmarks/normalize.md).
A batch of parsed inputs is filed in one transaction that holds the threading locks of
every key its messages name (normalizer/threadlocks.py): their dedup keys, their senders'
identities, the Message-IDs and conversations they name. Nobody else can write those rows
until the transaction ends, so they are read once for the whole batch (`Reads`) and only
this transaction's own writes change them afterwards, which `Reads` follows as they are
made. Rows nothing in the transaction reads back (receipts, the intake rows' final state,
message refs, which `Reads` answers for, and the merge-suggestion signatures) are written
once per batch at its end (`Writes`).

SQLite has one writer at a time (BEGIN IMMEDIATE), so the same reasoning holds there with
no locks at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, event, func, insert, select, text, tuple_, update

from inbox.db import insert_ignore, is_sqlite
from inbox.models import (
    Case,
    CaseTurn,
    Contact,
    Identity,
    Intake,
    Message,
    MessageRef,
    Receipt,
)
from inbox.suggestions import PendingSignature, fold_signature, index_signatures
from normalizer.message import InboundMessage
from normalizer.threadlocks import identity_of
from normalizer.threads import OPEN_STATUSES


@dataclass
class IdentityRow:
    """The columns of an identity that filing reads and may change."""

    id: int
    contact_id: int
    display_name: str | None
    facts: dict[str, Any] | None


def looked_up_refs(message: InboundMessage) -> set[str]:
    """The Message-IDs and conversations whose cases threading looks up for `message`."""
    thread = message.thread
    return {*thread.in_reply_to, *thread.references, *thread.conversation}


@dataclass
class Reads:
    """Rows read once for a batch, kept current with the batch's own writes.

    Each map holds an entry for every key of the batch (None or empty when the store has
    none), so a key that is missing was not read up front and is looked up in the store.
    """

    dedup: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    identities: dict[tuple[str, str], IdentityRow | None] = field(default_factory=dict)
    refs: dict[str, list[int]] = field(default_factory=dict)
    # contact -> its open cases (rows of `cases`), while this batch has not changed them.
    open_cases: dict[int, list[Any]] = field(default_factory=dict)
    # SQLite: the id of the last case this batch opened (normalizer/worker.py _next_case_id).
    last_case_id: int | None = None

    @classmethod
    def load(cls, conn: Connection, messages: Sequence[InboundMessage]) -> Reads:
        reads = cls()
        reads.load_identities(conn, messages)
        reads.load_rest(conn, messages)
        return reads

    def load_identities(self, conn: Connection, messages: Sequence[InboundMessage]) -> set[int]:
        """The senders' identities; returns their contacts (the second phase's lock keys)."""
        wanted = sorted({i for i in map(identity_of, messages) if i is not None})
        self.identities = dict.fromkeys(wanted)
        contacts: set[int] = set()
        for chunk in _chunks(wanted):
            for row in conn.execute(
                select(
                    Identity.kind,
                    Identity.handle,
                    Identity.id,
                    Identity.contact_id,
                    Identity.display_name,
                    Identity.facts,
                ).where(tuple_(Identity.kind, Identity.handle).in_(chunk))
            ):
                self.identities[(row.kind, row.handle)] = IdentityRow(
                    row.id, row.contact_id, row.display_name, row.facts
                )
                contacts.add(row.contact_id)
        return contacts

    def load_rest(self, conn: Connection, messages: Sequence[InboundMessage]) -> None:
        """Dedup keys, named refs and the open cases of the known senders' contacts."""
        keys = sorted({m.dedup_key for m in messages})
        self.dedup = dict.fromkeys(keys)
        for chunk in _chunks(keys):
            for row in conn.execute(
                select(Message.dedup_key, Message.id, Message.case_id).where(
                    Message.dedup_key.in_(chunk)
                )
            ):
                self.dedup[row.dedup_key] = (row.id, row.case_id)
        refs = sorted(set().union(*map(looked_up_refs, messages)))
        self.refs = {ref: [] for ref in refs}
        for chunk in _chunks(refs):
            for ref, case_id in conn.execute(
                select(MessageRef.ref, MessageRef.case_id)
                .where(MessageRef.ref.in_(chunk))
                .distinct()
                .order_by(MessageRef.ref, MessageRef.case_id)
            ):
                self.refs[ref].append(case_id)
        contacts = sorted({r.contact_id for r in self.identities.values() if r is not None})
        self.open_cases = {c: [] for c in contacts}
        for chunk in _chunks(contacts):
            for case in conn.execute(
                select(Case)
                .where(Case.contact_id.in_(chunk), Case.status.in_(OPEN_STATUSES))
                .order_by(Case.id)
            ):
                self.open_cases[case.contact_id].append(case)

    def case_changed(self, contact_id: int) -> None:
        """A case of `contact_id` was opened or changed: its open cases are read again."""
        self.open_cases.pop(contact_id, None)


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    # Bounded IN lists: SQLite allows 32,766 parameters, and long lists plan poorly.
    for start in range(0, len(items), size):
        yield items[start : start + size]


_NEXT_IDS = text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)")
# PostgreSQL: the id of the next case, from its sequence (normalizer/worker.py). Handed out
# one at a time, unlike the ids above: a case's reference is made from it, and a reference
# skipped would show.
NEXT_CASE_ID = text("SELECT nextval(pg_get_serial_sequence('cases', 'id'))")
# Statements that read only sequences: they need no deferred row written before them.
_SEQUENCE_READS = (_NEXT_IDS, NEXT_CASE_ID)


class Ids:
    """Ids of one table handed out before their rows are written (see `Writes.deferring`).

    PostgreSQL: from the table's own sequence, `block` at a time in one statement (an id
    taken and not used is a gap, as a rolled-back insert leaves). SQLite, which has no
    sequence: one past the largest id, as its rowid would be (the tables have no
    AUTOINCREMENT); the writer lock is ours until commit, so no one else takes them.
    """

    def __init__(self, model: Any, block: int) -> None:
        self.model, self.table, self.block = model, str(model.__tablename__), max(1, block)
        self.free: list[int] = []
        self.last: int | None = None
        # Every id handed out in this batch: a contact among them has no history yet.
        self.handed: set[int] = set()

    def take(self, conn: Connection) -> int:
        taken = self._take(conn)
        self.handed.add(taken)
        return taken

    def _take(self, conn: Connection) -> int:
        if is_sqlite(conn):
            if self.last is None:
                last = select(func.coalesce(func.max(self.model.id), 0))
                self.last = int(conn.execute(last).scalar_one())
            self.last += 1
            return self.last
        if not self.free:
            self.free = list(
                conn.execute(_NEXT_IDS, {"table": self.table, "n": self.block}).scalars()
            )
            self.free.reverse()
        return self.free.pop()


# New rows a batch defers, in the order their foreign keys need (contacts before the
# identities and cases naming them, those before their messages).
_DEFERRED = (Contact, Identity, Case, CaseTurn, Message)


@dataclass
class Writes:
    """Rows written at the end of a batch (or of one input, in its savepoint)."""

    receipts: list[dict[str, Any]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    refs: list[dict[str, Any]] = field(default_factory=list)
    signatures: dict[int, PendingSignature] = field(default_factory=dict)
    # New cases' acknowledgements, planned once every row of the batch is written: planning
    # reads and writes (the case's ack columns, the outbox, the audit chain), and run between
    # two inputs each of those statements would write the deferred rows so far, a few rows
    # at a time instead of one INSERT per table for the batch.
    acknowledgements: list[Callable[[], None]] = field(default_factory=list)
    # While deferring: new contacts, cases and messages, ids already given, rows not written.
    new_rows: dict[Any, list[dict[str, Any]]] | None = None
    contact_ids: Ids | None = None
    identity_ids: Ids | None = None
    message_ids: Ids | None = None
    _writing: bool = False

    @contextmanager
    def deferring(self, conn: Connection, expected: int) -> Iterator[None]:
        """New contacts, cases and messages written as one multi-row INSERT each.

        Filing a new message wrote its contact, its case and itself one statement each,
        and building and sending a statement costs more than the row (bench/import_mbox.py
        profile: 4 statements per message were half the filing's CPU). Inside this block
        their ids are handed out first (`Ids`) and their rows kept; they are written
        before any other statement runs on `conn` (so every read, update, foreign key and
        audit row sees them exactly as if they had been written at once) and at the end.
        For the optimistic batch only: a failure rolls the whole transaction back, and the
        batch is filed again input by input, in savepoints, without deferring.
        """
        self.new_rows = {model: [] for model in _DEFERRED}
        self.contact_ids = Ids(Contact, expected)
        self.identity_ids = Ids(Identity, expected)
        self.message_ids = Ids(Message, expected)

        def before(_conn: Any, statement: Any, *_rest: Any) -> None:
            if not any(statement is reads for reads in _SEQUENCE_READS):
                self.write_new(conn)

        event.listen(conn, "before_execute", before)
        try:
            yield
            self.write_new(conn)
        finally:
            event.remove(conn, "before_execute", before)
            self.new_rows = None
            self.contact_ids = self.identity_ids = self.message_ids = None

    def new_contact(self, contact_id: int) -> bool:
        """Whether this batch made the contact (so it has no earlier messages to read)."""
        return self.contact_ids is not None and contact_id in self.contact_ids.handed

    def defer(self, model: Any, row: dict[str, Any]) -> bool:
        """Keep `row` for later if deferring (True), else the caller writes it now (False)."""
        if self.new_rows is None:
            return False
        self.new_rows[model].append(row)
        return True

    def write_new(self, conn: Connection) -> None:
        if self.new_rows is None or self._writing or not any(self.new_rows.values()):
            return
        self._writing = True  # its own INSERTs run the same hook
        try:
            for model in _DEFERRED:
                rows, self.new_rows[model] = self.new_rows[model], []
                if rows:
                    conn.execute(insert(model), rows)
        finally:
            self._writing = False

    def signature(self, case_id: int, sig: tuple[bytes, int], *, new_case: bool) -> None:
        fold_signature(self.signatures, case_id, sig, new_case=new_case)

    def flush(self, conn: Connection) -> None:
        self.write_new(conn)
        if self.refs:
            conn.execute(insert(MessageRef), self.refs)
        if self.receipts:
            conn.execute(
                insert_ignore(conn, Receipt, ["message_id", "intake_id", "address"]),
                self.receipts,
            )
        index_signatures(conn, self.signatures)
        if self.finished:
            conn.execute(_FINISH, self.finished)
        # In filing order, so two new cases of one person are throttled as if filed apart.
        for acknowledge in self.acknowledgements:
            acknowledge()
        self.clear()

    def clear(self) -> None:
        self.receipts, self.finished, self.refs, self.signatures = [], [], [], {}
        self.acknowledgements = []


# One UPDATE for every intake row a batch settled, each with its own values.
_FINISH = (
    update(Intake)
    .where(Intake.id == bindparam("k_id"))
    .values(
        state="done", message_id=bindparam("message_id"), processed_at=bindparam("processed_at")
    )
)
