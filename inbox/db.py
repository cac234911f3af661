"""Engines and transactions for SQLite (the embedded default) and PostgreSQL.

SQLite runs in WAL mode with full sync, so a commit is durable when it returns, and every
write transaction starts with BEGIN IMMEDIATE: a deferred transaction that upgrades to a
write lock can fail with "database is locked" after doing its work, which would turn a
brief wait into a lost retry.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.dml import Insert

from inbox.secrets import Secret


class StorageUnavailable(Exception):
    """The store refused a write for now (locked, read-only, gone): the source should retry."""


# [database] sqlite_cache_mb's default (SQLite's own), for engines made without settings.
SQLITE_CACHE_MB = 2


def make_engine(
    url: str | Secret,
    *,
    busy_timeout_ms: int = 5000,
    keepalive_s: int = 30,
    pool_size: int = 5,
    sqlite_cache_mb: int = SQLITE_CACHE_MB,
) -> Engine:
    raw = url.reveal() if isinstance(url, Secret) else url
    parsed = make_url(raw)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=10,
        )
        _sqlite_pragmas(engine, busy_timeout_ms, sqlite_cache_mb)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # libpq keepalives: a host that vanished releases its advisory locks in about
        # keepalive_s * 2 seconds instead of the kernel's two hours.
        connect_args: dict[str, Any] = {
            "keepalives": 1,
            "keepalives_idle": keepalive_s,
            "keepalives_interval": max(1, keepalive_s // 3),
            "keepalives_count": 3,
            "connect_timeout": 10,
            "application_name": f"parity-{os.getpid()}",
            # The advisory lock lives in the server's backend: only the server's own
            # keepalives notice that a poller's host vanished and end that backend (and
            # its lock). Client keepalives above only let us notice a vanished server.
            "options": (
                f"-c tcp_keepalives_idle={keepalive_s} "
                f"-c tcp_keepalives_interval={max(1, keepalive_s // 3)} "
                "-c tcp_keepalives_count=3"
            ),
        }
        return create_engine(
            parsed,
            connect_args=connect_args,
            pool_size=pool_size,
            max_overflow=10,
            pool_pre_ping=True,
        )
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def _sqlite_pragmas(engine: Engine, busy_timeout_ms: int, cache_mb: int) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see module doc).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # Negative: KiB rather than pages ([database] sqlite_cache_mb).
        cursor.execute(f"PRAGMA cache_size=-{int(cache_mb) * 1024}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")  # a WAL reader: a snapshot that blocks no writer
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


# Execution option of connections that only read (see `read`).
_READ_ONLY = "parity_read_only"


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A connection for reading only.

    On SQLite every other transaction begins IMMEDIATE and so holds the write lock; a
    listing of the queue done that way would make intake wait behind it (and answer 451
    after the busy timeout). A read transaction begins deferred instead, and WAL lets it
    run beside the writer. On PostgreSQL this is a plain connection.
    """
    with engine.connect() as conn:
        conn.execution_options(**{_READ_ONLY: True})
        yield conn


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def insert_ignore(conn: Connection, table: Any, index: Sequence[str]) -> Insert:
    # `table` is a Table or a mapped class; both dialects' insert() accept either.
    """INSERT ... ON CONFLICT (index) DO NOTHING, for either dialect. Its result's rowcount
    is the number of rows it added (a skipped conflict is not one), on both stores."""
    statement: Insert
    if is_sqlite(conn):
        statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(index))
    else:
        statement = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(index))
    # SQLAlchemy does not keep the driver's rowcount of an INSERT on PostgreSQL (it reported
    # -1, "unknown", which a caller's `if rowcount` took for added); the server's own count
    # ("INSERT 0 n") counts only the rows written. tests/test_insert_ignore.py.
    return statement.execution_options(preserve_rowcount=True)


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction; storage refusals surface as StorageUnavailable."""
    try:
        with engine.begin() as conn:
            yield conn
    except OperationalError as exc:
        raise StorageUnavailable(str(exc.orig)) from exc
    except DBAPIError as exc:
        if _is_refusal(exc):
            raise StorageUnavailable(str(exc.orig)) from exc
        raise


def refused(exc: DBAPIError) -> bool:
    """True when `exc` is the store refusing writes for now (write() raises StorageUnavailable)."""
    return (isinstance(exc, OperationalError) and not _transient(exc)) or _is_refusal(exc)


def _transient(exc: DBAPIError) -> bool:
    # PostgreSQL: deadlock detected, serialization failure. One attempt lost; the next wins.
    return (getattr(exc.orig, "sqlstate", None) or "") in {"40P01", "40001"}


def _is_refusal(exc: DBAPIError) -> bool:
    # PostgreSQL: insufficient privilege, read-only transaction, admin shutdown, cannot connect.
    code = getattr(exc.orig, "sqlstate", None) or ""
    return code in {"42501", "25006", "57P01", "57P02", "57P03", "08006", "08001", "08003"}


# The lock of threading as a whole. Every threading transaction takes it once, first, in one
# mode chosen up front for the whole transaction: shared when the keys it may lock (both
# phases together) stay within THREADING_KEYS_MAX, exclusive (alone, no other key) past it, so
# the number of locks one transaction can make the server keep is bounded. It is never taken
# shared and then exclusive: two transactions doing that would each wait for the other's
# shared hold. Its number is the one the global lock of earlier versions took exclusively:
# during a rolling upgrade an old node still excludes every new one, and the other way round.
THREADING_LOCK = 7365012001
# Keys one threading transaction locks one by one at most; past it, the exclusive lock above.
# PostgreSQL's lock table holds max_locks_per_transaction (64) times max_connections entries
# for all sessions together: a few hundred per transaction is well inside it.
THREADING_KEYS_MAX = 256

# How one key is taken: waited for shared, waited for exclusive, or tried exclusive.
LockMode = Literal["shared", "exclusive", "try"]


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit key for an advisory lock, from the parts that name the thing.

    BLAKE2b rather than Python's hash(): the key must be the same in every process and on
    every node (hash() of a str is salted per process). 64 bits make two different things
    sharing a key (which would only make one wait for the other) practically never happen.
    """
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8, person=b"parity-thread")
    return int.from_bytes(digest.digest(), "big", signed=True)


def lock_plan(
    keys: Iterable[int], *, alone: bool, first: bool, wait: bool
) -> list[tuple[int, LockMode]]:
    """The locks one call takes, in the order taken, each with its one mode.

    `alone`: the transaction holds threading exclusively (decided once, see THREADING_LOCK),
    so it takes no key of its own. `first`: the transaction's first call, which takes
    THREADING_LOCK before anything else. The keys come sorted: with THREADING_LOCK first and
    each phase's keys in ascending order (identities before contacts, phases never
    interleaved), every transaction takes its locks in one global order, so none can hold
    a lock another waits for while waiting for one that other holds.
    """
    plan: list[tuple[int, LockMode]] = []
    if first:
        plan.append((THREADING_LOCK, "exclusive" if alone else "shared"))
    if not alone:
        mode: LockMode = "exclusive" if wait else "try"
        plan.extend((k, mode) for k in sorted(set(keys) - {THREADING_LOCK}))
    return plan


# One round trip for a whole plan. A function scan yields the arrays' elements in order and
# the target list is evaluated row by row, so the locks are taken in the order given. A
# waited lock returns void, which is never NULL: its row says true.
_TAKE = text(
    "SELECT k, CASE m"
    " WHEN 'shared' THEN pg_advisory_xact_lock_shared(k) IS NOT NULL"
    " WHEN 'exclusive' THEN pg_advisory_xact_lock(k) IS NOT NULL"
    " ELSE pg_try_advisory_xact_lock(k) END"
    " FROM unnest(CAST(:keys AS bigint[]), CAST(:modes AS text[])) AS t(k, m)"
)


class ThreadingLocks:
    """The threading locks of one transaction (docs/architecture/threading.md).

    Two messages that could open a case for the same person share a key and so run one
    after the other; messages of different people run at once. `keys_at_most` bounds every
    key the transaction will lock over all its phases (identities, then contacts), and
    decides once whether it holds threading shared with its own keys or exclusively and
    alone. A later phase may therefore never need more than was planned: past the bound it
    still takes its keys one by one rather than upgrading.

    SQLite already serialises writers (BEGIN IMMEDIATE): nothing to take there, and every
    key counts as taken.
    """

    def __init__(self, conn: Connection, *, keys_at_most: int) -> None:
        self.conn = conn
        self.alone = keys_at_most > THREADING_KEYS_MAX
        self._started = False

    def lock(self, keys: Iterable[int]) -> None:
        """Wait for each of `keys` (all of threading, if this transaction holds it alone)."""
        self._take(keys, wait=True)

    def try_lock(self, keys: Iterable[int]) -> frozenset[int]:
        """Take those of `keys` that are free now, without waiting for any; the keys taken.

        THREADING_LOCK itself is still waited for (held exclusively only while one
        oversized batch is filed). A transaction that only ever tries its keys never waits
        for another's, so it cannot take part in a deadlock through them. What it could not
        take, the caller files in a later transaction (normalizer/worker.py
        `_persist_many`). A key taken is held until the transaction ends (xact locks cannot
        be given back one by one): at worst another input waits a little.
        """
        return self._take(keys, wait=False)

    def _take(self, keys: Iterable[int], *, wait: bool) -> frozenset[int]:
        wanted = frozenset(keys) - {THREADING_LOCK}
        if is_sqlite(self.conn):
            return wanted
        plan = lock_plan(wanted, alone=self.alone, first=not self._started, wait=wait)
        self._started = True
        if self.alone:
            if plan:
                self.conn.execute(_TAKE, {"keys": [k for k, _ in plan], "modes": ["exclusive"]})
            return wanted  # threading is ours alone: every key with it
        if not plan:
            return frozenset()
        rows = self.conn.execute(
            _TAKE, {"keys": [k for k, _ in plan], "modes": [m for _, m in plan]}
        ).all()
        return frozenset(int(k) for k, ok in rows if ok and k != THREADING_LOCK)


def lock_for_threading(conn: Connection, keys: Iterable[int] = ()) -> None:
    """A transaction's only threading locks: `keys`, taken in one call (see ThreadingLocks)."""
    wanted = frozenset(keys)
    ThreadingLocks(conn, keys_at_most=len(wanted)).lock(wanted)
