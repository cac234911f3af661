"""The append-only audit log, chained with an HMAC keyed by a secret from the environment.

Every case has a chain of its own (rows about no case share chain 0): each row's HMAC covers
its own fields, its chain, its position in the chain and the previous row's HMAC in that
chain, so editing, deleting or reordering a row breaks its chain from that row on. A writer
locks only the head of the chain it appends to, so agents working on different cases never
wait for each other. Seals chain the heads of all chains into checkpoints; an exported seal
reveals a log cut short. Rows written before migration 0009 form one chain in id order, which
the first seal links to. The design and its proof: docs/architecture/audit.md.

Rows written since migration 0020 are of form 2: their HMAC covers a keyed digest of each
value in before/after instead of the value, so erasing a person can replace a value by its
digest (`erase_values`) and the row, its chain and the seals still verify. A form-1 row that
names an erased person is checked first, then erased and re-attested (form 3, `attest_hmac`):
its stored HMAC stays, so its chain and the seals still link, and a second HMAC covers what is
left of it. docs/architecture/audit.md#erasure gives the proof sketch.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import sqlite

from inbox.db import StorageUnavailable, is_sqlite
from inbox.models import AuditChain, AuditLog, AuditSeal, AuditSealHead, utcnow

KEY_ENV = "PARITY_AUDIT_KEY"
GENESIS = "0" * 64
# Only the sealer takes it: one seal at a time keeps the seals one chain. Writers never do.
_SEAL_LOCK = 7365012003
# The chain of rows that concern no case; case ids start at 1.
NO_CASE = 0
# The key of a development install that set `[audit] allow_unkeyed = true`. It is public (it
# is in this source), so such a chain detects accidents but not a forger.
UNKEYED = b"parity-audit-key-not-configured"
MISSING = (
    f"{KEY_ENV} is not set: the audit log would be chained with a key anyone can read in "
    f"Parity's source. Set {KEY_ENV} to a long random value (for example the output of "
    "`openssl rand -hex 32`) in the environment, or, on a development machine only, set "
    "`allow_unkeyed = true` under [audit] in the settings."
)


class AuditKeyMissing(StorageUnavailable):
    """No audit key, and the settings did not allow the development constant.

    A StorageUnavailable: a write that must be audited cannot happen until the key is set,
    so a worker leaves its input pending (never a dead letter) and a webhook gets "retry".
    """


# Set once at start-up from `[audit] allow_unkeyed` (`permit`). Module state, because every
# store function appends to the chain and none of them is handed the settings.
_unkeyed_allowed = False


def permit(allow_unkeyed: bool) -> None:
    """Start-up: raise AuditKeyMissing unless a key is set or the settings allow none.

    Every process that writes audit rows calls this before its first write; `_key` refuses
    as well, so a forgotten call fails loudly instead of silently using the public key.
    """
    global _unkeyed_allowed
    if not key_configured() and not allow_unkeyed:
        raise AuditKeyMissing(MISSING)
    _unkeyed_allowed = allow_unkeyed


def _key() -> bytes:
    value = os.environ.get(KEY_ENV, "")
    if value:
        return value.encode()
    if _unkeyed_allowed:
        return UNKEYED
    raise AuditKeyMissing(MISSING)


def key_configured() -> bool:
    return bool(os.environ.get(KEY_ENV))


# Form 2 (migration 0020): a value in before/after may be replaced by {ERASED: its digest}.
FORM_PLAIN = 1
FORM_DIGESTED = 2
# A form-1 row erased after migration 0027: its HMAC, checked at erasure, is kept for the
# chain's links, and `attest` covers the row as it is now (its values digested).
FORM_REATTESTED = 3
ERASED = "$erased"


def value_digest(value: Any, key: bytes | None = None) -> str:
    """The keyed digest of one JSON value (a leaf of before/after).

    Keyed, so a digest of a phone number or an address cannot be reversed by trying every
    number; domain-separated from row HMACs by its prefix."""
    body = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return _hmac.new(key or _key(), b"leaf\x00" + body.encode(), hashlib.sha256).hexdigest()


def is_erased(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(ERASED), str)


def digested(value: Any, key: bytes) -> Any:
    """What a form-2 HMAC covers for a JSON tree: its shape (keys, list order) with every
    leaf replaced by its digest; an erased leaf already is one, so erasing changes nothing."""
    if is_erased(value):
        return {ERASED: value[ERASED]}
    if isinstance(value, dict):
        return {str(k): digested(v, key) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [digested(v, key) for v in value]
    return {ERASED: value_digest(value, key)}


def erase_values(value: Any, erase: Any, key: bytes | None = None, *, path: str = "") -> Any:
    """`value` with every leaf for which `erase(path, leaf)` holds replaced by its digest
    marker; `path` is the dotted key path ("after.text"). Marker leaves are left alone."""
    if is_erased(value):
        return value
    if isinstance(value, dict):
        return {
            k: erase_values(v, erase, key, path=f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [erase_values(v, erase, key, path=path) for v in value]
    if value is not None and erase(path, value):
        return {ERASED: value_digest(value, key or _key())}
    return value


def _signed(fields: list[Any], secret: bytes) -> str:
    """The HMAC of a row's fields as canonical JSON (sorted keys, no spaces)."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return _hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()


def row_hmac(
    prev: str,
    at: datetime,
    actor: str,
    action: str,
    case_id: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    key: bytes | None = None,
    *,
    chain: int | None = None,
    seq: int | None = None,
    form: int = FORM_PLAIN,
) -> str:
    """The HMAC of one row. Rows of a chain (chain and seq given) also cover both, so a row
    cannot be moved to another chain or position; older rows (neither) are as before 0009.
    Form 2 covers the digests of before/after's values and the form itself (so a row cannot
    be passed off as the other form); form 1 the values, as before 0020."""
    secret = key or _key()
    if form == FORM_DIGESTED:
        before = digested(before, secret) if before is not None else None
        after = digested(after, secret) if after is not None else None
    fields: list[Any] = [
        prev,
        at.isoformat(timespec="microseconds"),
        actor,
        action,
        case_id,
        before,
        after,
    ]
    if chain is not None or seq is not None:
        fields += [chain, seq]
    if form != FORM_PLAIN:
        fields.append({"form": form})
    return _signed(fields, secret)


def attest_hmac(
    prev: str,
    row_hmac_: str,
    at: datetime,
    actor: str,
    action: str,
    case_id: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    key: bytes | None = None,
    *,
    chain: int | None = None,
    seq: int | None = None,
) -> str:
    """The attestation of a re-attested row (form 3): every field as it is stored, its values
    digested as in form 2, with the link and the row's kept HMAC, under its own domain."""
    secret = key or _key()
    fields: list[Any] = [
        "attest",
        prev,
        row_hmac_,
        at.isoformat(timespec="microseconds"),
        actor,
        action,
        case_id,
        digested(before, secret) if before is not None else None,
        digested(after, secret) if after is not None else None,
        chain,
        seq,
        {"form": FORM_REATTESTED},
    ]
    return _signed(fields, secret)


def row_valid(row: Any, prev: str) -> bool:
    """Whether a stored audit row (following `prev` in its chain) is as it was written, or,
    for form 3, as it was re-attested when a value in it was erased."""
    chain_seq = {"chain": row.chain, "seq": row.seq} if row.chain is not None else {}
    if row.form == FORM_REATTESTED:
        expected = attest_hmac(
            prev, row.hmac, row.at, row.actor, row.action, row.case_id, row.before, row.after,
            chain=row.chain, seq=row.seq,
        )  # fmt: skip
        return row.attest is not None and _hmac.compare_digest(row.attest, expected)
    if row.form not in (FORM_PLAIN, FORM_DIGESTED):
        return False
    recomputed = row_hmac(
        prev, row.at, row.actor, row.action, row.case_id, row.before, row.after,
        form=row.form, **chain_seq,
    )  # fmt: skip
    return bool(row.hmac == recomputed)


def chain_of(case_id: int | None) -> int:
    return NO_CASE if case_id is None else case_id


def _lock_head(conn: Connection, chain: int) -> tuple[int, str]:
    """Lock the head of `chain` until this transaction ends: (its seq, its HMAC); (0,
    GENESIS) for a chain with no row yet.

    On PostgreSQL FOR UPDATE waits for a writer of the same chain to commit and then reads
    the head it left (READ COMMITTED re-reads a row it had to wait for), so the head read is
    the chain's true end. Writers of other chains lock other rows and never wait. SQLite
    has one writer at a time (BEGIN IMMEDIATE), so a plain read is the true end there.
    """
    query = _HEAD_SQLITE if is_sqlite(conn) else _HEAD_PG
    head = conn.execute(query, {"chain": chain}).one_or_none()
    return (0, GENESIS) if head is None else (int(head.seq), str(head.hmac))


# Built once: every audit row runs these, and building a statement (and its cache key) per
# row cost more than running it (a profile of filing live mail on SQLite: 1.7 ms an append).
_HEAD_SQLITE = select(AuditChain.seq, AuditChain.hmac).where(AuditChain.chain == bindparam("chain"))
_HEAD_PG = _HEAD_SQLITE.with_for_update()
_LOG = cast(Table, AuditLog.__table__)
_INSERT_ROW = insert(_LOG).returning(_LOG.c.id)
_chains = sqlite.insert(cast(Table, AuditChain.__table__)).values(
    chain=bindparam("chain"),
    seq=bindparam("seq"),
    hmac=bindparam("hmac"),
    row_id=bindparam("row_id"),
    sealed_seq=0,
)
# SQLite: the head moved (or made, for a chain's first row) in one statement.
_MOVE_HEAD_SQLITE = _chains.on_conflict_do_update(
    index_elements=["chain"],
    set_={
        "seq": _chains.excluded.seq,
        "hmac": _chains.excluded.hmac,
        "row_id": _chains.excluded.row_id,
    },
)


def head_sql(case_id: str, when: str = "true") -> str:
    """PostgreSQL: a LATERAL subquery that locks the audit chain head of the case whose id
    is the SQL expression `case_id`, if the SQL condition `when` holds. It gives
    `audit_seq` and `audit_hmac` (NULL when the case has no audit row yet), to pass to
    `append(..., head=...)`: claim-next folds the lock into its own statement to save a
    round trip. A locking read in READ COMMITTED returns the newest committed head even if
    it had to wait for it. Only the caller's SQL expressions are formatted in.
    """
    return (
        "(SELECT seq AS audit_seq, hmac AS audit_hmac FROM audit_chains "  # noqa: S608
        f"WHERE chain = {case_id} AND {when} FOR UPDATE)"
    )


# PostgreSQL: move the chain's head and insert the row in one statement. The head moves only
# if it is still where the writer read it (`prev_seq`): that holds whenever the writer
# locked an existing head; for a chain that had none, two first writers may race, and the
# loser inserts nothing and reads again. The row's id is drawn here, after the head is
# held, so ids rise along a chain.
_APPEND_PG = text(
    """
WITH ids AS (SELECT nextval(pg_get_serial_sequence('audit_log', 'id')) AS id),
moved AS (
    INSERT INTO audit_chains (chain, seq, hmac, row_id, sealed_seq)
    SELECT CAST(:chain AS bigint), CAST(:seq AS bigint), CAST(:hmac AS varchar), id, 0
    FROM ids
    ON CONFLICT (chain) DO UPDATE
        SET seq = excluded.seq, hmac = excluded.hmac, row_id = excluded.row_id
        WHERE audit_chains.seq = CAST(:prev_seq AS bigint)
    RETURNING row_id
)
INSERT INTO audit_log (id, at, actor, action, case_id, before, after, prev_hmac, hmac,
                       chain, seq, form)
SELECT row_id, CAST(:at AS timestamp), CAST(:actor AS varchar), CAST(:action AS varchar),
       CAST(:case_id AS bigint), CAST(:before AS json), CAST(:after AS json),
       CAST(:prev_hmac AS varchar), CAST(:hmac AS varchar), CAST(:chain AS bigint),
       CAST(:seq AS bigint), CAST(:form AS smallint)
FROM moved
RETURNING id"""
).bindparams(
    bindparam("at", type_=AuditLog.at.type),
    bindparam("before", type_=AuditLog.before.type),
    bindparam("after", type_=AuditLog.after.type),
)


# The head of a chain no row was appended to yet: a case opened in the caller's transaction
# (`append(..., head=NEW_CHAIN)`). A guess, like `head_sql`'s: should a row of the chain have
# been appended meanwhile, the head has moved, the guess loses, and the head is read.
NEW_CHAIN: tuple[int, str] = (0, GENESIS)


def append(
    conn: Connection,
    *,
    actor: str,
    action: str,
    case_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    head: tuple[int | None, str | None] | None = None,
) -> int:
    """Append one row to its case's chain inside the caller's transaction: the row's id.

    Two round trips on PostgreSQL: lock and read the chain's head, then move the head and
    insert the row in one statement; one when `head` is what `head_sql` gave earlier in
    this transaction. The head stays locked until the caller commits, so a caller that can
    should append last.
    """
    chain = chain_of(case_id)
    sqlite = is_sqlite(conn)
    for _ in range(3):
        if head is None or sqlite:
            seq, prev = _lock_head(conn, chain)
        else:
            seq, prev = head[0] or 0, head[1] or GENESIS
            head = None  # if the guess loses a race, the next try reads the head itself
        at = utcnow()
        digest = row_hmac(
            prev,
            at,
            actor,
            action,
            case_id,
            before,
            after,
            chain=chain,
            seq=seq + 1,
            form=FORM_DIGESTED,
        )
        values = {
            "at": at,
            "actor": actor,
            "action": action,
            "case_id": case_id,
            "before": before,
            "after": after,
            "prev_hmac": prev,
            "hmac": digest,
            "chain": chain,
            "seq": seq + 1,
            "form": FORM_DIGESTED,
        }
        if sqlite:  # one writer at a time (BEGIN IMMEDIATE): nobody can move the head meanwhile
            row_id = int(conn.execute(_INSERT_ROW, values).scalar_one())
            conn.execute(
                _MOVE_HEAD_SQLITE,
                {"chain": chain, "seq": seq + 1, "hmac": digest, "row_id": row_id},
            )
            return row_id
        moved = conn.execute(_APPEND_PG, {**values, "prev_seq": seq}).scalar_one_or_none()
        if moved is not None:
            return int(moved)
    raise RuntimeError(f"audit chain {chain}: its head kept moving under a locked writer")


# --- seals ----------------------------------------------------------------------------------


def _heads_digest(heads: list[tuple[int, int, int, str]] | Any) -> tuple[int, str]:
    """(count, SHA-256) of a seal's heads in chain order; the seal's HMAC covers both."""
    digest = hashlib.sha256()
    count = 0
    for chain, seq, row_id, head_hmac in heads:
        digest.update(f"{chain},{seq},{row_id},{head_hmac}\n".encode())
        count += 1
    return count, digest.hexdigest()


def seal_hmac(
    prev: str, at: datetime, heads: int, heads_digest: str, key: bytes | None = None
) -> str:
    body = json.dumps(
        ["seal", prev, at.isoformat(timespec="microseconds"), heads, heads_digest],
        separators=(",", ":"),
    )
    return _hmac.new(key or _key(), body.encode(), hashlib.sha256).hexdigest()


def _legacy_head(conn: Connection) -> str:
    """The newest HMAC of the rows written before 0009 (one chain in id order), or GENESIS."""
    found = conn.execute(
        select(AuditLog.hmac).where(AuditLog.chain.is_(None)).order_by(AuditLog.id.desc()).limit(1)
    ).scalar_one_or_none()
    return found or GENESIS


def seal(conn: Connection) -> AuditSeal | Any:
    """Seal the heads of every chain that moved since the last seal; the newest seal.

    Call inside a write transaction. A chain whose head a running writer holds right now is
    left for the next seal (SKIP LOCKED), so sealing never waits for, or blocks, agents on
    other cases; it covers every chain committed before it began but for those. Nothing
    moved and a seal exists: no new seal, the newest one is returned.
    """
    if not is_sqlite(conn):
        conn.execute(text(f"SELECT pg_advisory_xact_lock({_SEAL_LOCK})"))
    newest = conn.execute(select(AuditSeal).order_by(AuditSeal.id.desc()).limit(1)).one_or_none()
    moved = conn.execute(
        select(AuditChain.chain).where(AuditChain.seq > AuditChain.sealed_seq).limit(1)
    ).first()
    if newest is not None and moved is None:
        return newest
    prev = newest.hmac if newest is not None else _legacy_head(conn)
    at = utcnow()
    seal_id = int(
        conn.execute(
            insert(AuditSeal)
            .values(at=at, heads=0, prev_hmac=prev, hmac="")
            .returning(AuditSeal.id)
        ).scalar_one()
    )
    if is_sqlite(conn):
        conn.execute(
            text(
                "INSERT INTO audit_seal_heads (seal_id, chain, seq, row_id, hmac) "
                "SELECT :seal, chain, seq, row_id, hmac FROM audit_chains "
                "WHERE seq > sealed_seq"
            ),
            {"seal": seal_id},
        )
        conn.execute(text("UPDATE audit_chains SET sealed_seq = seq WHERE seq > sealed_seq"))
    else:
        conn.execute(
            text(
                """
WITH picked AS (
    SELECT chain FROM audit_chains WHERE seq > sealed_seq FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE audit_chains c SET sealed_seq = c.seq FROM picked WHERE c.chain = picked.chain
    RETURNING c.chain, c.seq, c.row_id, c.hmac
)
INSERT INTO audit_seal_heads (seal_id, chain, seq, row_id, hmac)
SELECT :seal, chain, seq, row_id, hmac FROM moved"""
            ),
            {"seal": seal_id},
        )
    heads = conn.execute(
        select(AuditSealHead.chain, AuditSealHead.seq, AuditSealHead.row_id, AuditSealHead.hmac)
        .where(AuditSealHead.seal_id == seal_id)
        .order_by(AuditSealHead.chain)
    )
    count, digest = _heads_digest(heads)
    conn.execute(
        update(AuditSeal)
        .where(AuditSeal.id == seal_id)
        .values(heads=count, hmac=seal_hmac(prev, at, count, digest))
    )
    return conn.execute(select(AuditSeal).where(AuditSeal.id == seal_id)).one()


@dataclass(frozen=True)
class Verification:
    rows: int
    newest_id: int | None
    newest_hmac: str
    # The first row whose stored HMAC or chain link does not match, and why.
    first_bad_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class _Findings:
    """What verify has found so far: the problem of the lowest row id wins."""

    rows: int = 0
    newest_id: int | None = None
    bad_id: int | None = None
    problem: str | None = None

    def saw(self, row_id: int) -> None:
        self.rows += 1
        self.newest_id = row_id if self.newest_id is None else max(self.newest_id, row_id)

    def bad(self, row_id: int, problem: str) -> None:
        if self.bad_id is None or row_id < self.bad_id:
            self.bad_id, self.problem = row_id, problem


def _changed(row_id: int) -> str:
    return f"row {row_id} was changed after it was written"


def _not_following(row_id: int) -> str:
    return (
        f"row {row_id} does not follow the row before it (a row before it was deleted or changed)"
    )


def _verify_legacy(conn: Connection, found: _Findings) -> str:
    """The rows written before 0009: one chain in id order, as then. Its newest HMAC."""
    prev = GENESIS
    rows = conn.execute(
        select(AuditLog).where(AuditLog.chain.is_(None)).order_by(AuditLog.id)
    ).yield_per(1000)
    for row in rows:
        found.saw(row.id)
        if row.prev_hmac != prev:
            found.bad(row.id, _not_following(row.id))
        elif row.seq is not None or not row_valid(row, prev):
            found.bad(row.id, _changed(row.id))
        prev = row.hmac
    return prev


def _verify_chains(conn: Connection, found: _Findings) -> None:
    """Every case's chain in seq order: contiguous positions, links, ids rising, HMACs."""
    chain: int | None = None
    prev, seq, last_id, broken = GENESIS, 0, 0, False
    rows = conn.execute(
        select(AuditLog).where(AuditLog.chain.is_not(None)).order_by(AuditLog.chain, AuditLog.seq)
    ).yield_per(1000)
    for row in rows:
        found.saw(row.id)
        if row.chain != chain:
            chain, prev, seq, last_id, broken = row.chain, GENESIS, 0, 0, False
        if not broken:
            if row.seq != seq + 1 or row.prev_hmac != prev:
                found.bad(row.id, _not_following(row.id))
                broken = True
            elif row.id < last_id:
                # Ids are drawn under the chain's lock, so they rise along a chain: a row
                # with a smaller id than its predecessor had its id swapped with another's.
                found.bad(row.id, f"row {row.id} is out of order: rows were reordered")
                broken = True
            elif not row_valid(row, prev) or row.chain != chain_of(row.case_id):
                found.bad(row.id, _changed(row.id))
                broken = True
        prev, seq, last_id = row.hmac, int(row.seq or 0), row.id


def _verify_seals(conn: Connection, found: _Findings, legacy_head: str) -> tuple[int, str]:
    """Every seal: linked to the one before (the first to the older rows' newest HMAC), its
    HMAC over its heads, and every head still in the log. (newest seal id, its HMAC)."""
    found_row = AuditLog.__table__.alias("found_row")
    rows = conn.execute(
        select(
            AuditSeal.id,
            AuditSeal.at,
            AuditSeal.heads,
            AuditSeal.prev_hmac,
            AuditSeal.hmac,
            AuditSealHead.chain,
            AuditSealHead.seq,
            AuditSealHead.row_id,
            AuditSealHead.hmac.label("head_hmac"),
            found_row.c.id.label("found_id"),
            found_row.c.hmac.label("found_hmac"),
        )
        .outerjoin(AuditSealHead, AuditSealHead.seal_id == AuditSeal.id)
        .outerjoin(
            found_row,
            (found_row.c.chain == AuditSealHead.chain) & (found_row.c.seq == AuditSealHead.seq),
        )
        .order_by(AuditSeal.id, AuditSealHead.chain)
    ).yield_per(1000)
    prev, seal_id = legacy_head, 0
    current: Any = None
    heads: list[tuple[int, int, int, str]] = []

    def close() -> None:
        count, digest = _heads_digest(heads)
        if current.prev_hmac != prev:
            found.bad(
                _first_row(heads),
                f"seal {current.id} does not follow the seal before it "
                "(a seal, or a row written before the first seal, was deleted or changed)",
            )
        elif count != current.heads or current.hmac != seal_hmac(
            current.prev_hmac, current.at, count, digest
        ):
            found.bad(_first_row(heads), f"seal {current.id} was changed after it was written")

    for row in rows:
        if current is None or row.id != current.id:
            if current is not None:
                close()
                prev, seal_id = current.hmac, current.id
            current, heads = row, []
        if row.chain is None:
            continue  # a seal of no heads (the first, when nothing was written yet)
        heads.append((row.chain, row.seq, row.row_id, row.head_hmac))
        if row.found_id is None:
            found.bad(
                row.row_id,
                f"the log was cut short: row {row.row_id}, sealed by seal {row.id}, is missing",
            )
        elif row.found_id != row.row_id or row.found_hmac != row.head_hmac:
            found.bad(row.row_id, f"row {row.row_id} does not match seal {row.id}")
    if current is not None:
        close()
        prev, seal_id = current.hmac, current.id
    return seal_id, prev


def _first_row(heads: list[tuple[int, int, int, str]]) -> int:
    return min((row_id for _, _, row_id, _ in heads), default=0)


def verify(conn: Connection, checkpoint: dict[str, Any] | None = None) -> Verification:
    """Recompute every chain and seal; name the lowest row that does not match.

    With a checkpoint (an exported {"id", "hmac"} of a seal, or of a row from before 0009),
    also report a log cut short: that seal or row must still exist with the same HMAC.
    """
    found = _Findings()
    legacy_head = _verify_legacy(conn, found)
    _verify_chains(conn, found)
    _, newest_hmac = _verify_seals(conn, found, legacy_head)
    if found.problem is None and checkpoint is not None and int(checkpoint.get("id", 0)) > 0:
        _check_checkpoint(conn, checkpoint, found)
    return Verification(found.rows, found.newest_id, newest_hmac, found.bad_id, found.problem)


def _check_checkpoint(conn: Connection, checkpoint: dict[str, Any], found: _Findings) -> None:
    cp_id, cp_hmac = int(checkpoint["id"]), str(checkpoint["hmac"])
    if checkpoint.get("kind") == "seal":
        stored = conn.execute(
            select(AuditSeal.hmac).where(AuditSeal.id == cp_id)
        ).scalar_one_or_none()
        newest = conn.execute(select(func.max(AuditSeal.id))).scalar_one_or_none()
        if stored is None:
            found.bad(
                cp_id,
                f"the log was cut short: checkpoint seal {cp_id} is missing "
                f"(the newest seal is {newest}, the log now ends at row {found.newest_id})",
            )
        elif stored != cp_hmac:
            found.bad(cp_id, f"seal {cp_id} does not match the checkpoint")
        return
    # A checkpoint exported before 0009 names a row.
    stored = conn.execute(select(AuditLog.hmac).where(AuditLog.id == cp_id)).scalar_one_or_none()
    if stored is None:
        found.bad(
            cp_id,
            f"the log was cut short: checkpoint row {cp_id} is missing "
            f"(the log now ends at row {found.newest_id})",
        )
    elif stored != cp_hmac:
        found.bad(cp_id, f"row {cp_id} does not match the checkpoint")


def checkpoint(conn: Connection, *, seal_now: bool = True) -> dict[str, Any]:
    """The newest seal's id and HMAC, to export and keep where the database can't reach.

    `seal_now` (needs the key and a write transaction) seals first, so the checkpoint covers
    every chain committed by now; without it, the newest seal as it stands (`parity run`
    seals every `[audit] seal_interval_s`). No seal yet and none made: id 0, which
    `verify` takes as no checkpoint at all.
    """
    newest = (
        seal(conn)
        if seal_now
        else conn.execute(select(AuditSeal).order_by(AuditSeal.id.desc()).limit(1)).one_or_none()
    )
    if newest is None:
        return {"kind": "seal", "id": 0, "hmac": GENESIS, "at": None}
    return {"kind": "seal", "id": newest.id, "hmac": newest.hmac, "at": newest.at.isoformat()}
