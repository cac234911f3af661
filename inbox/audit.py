"""The append-only audit log, chained with an HMAC keyed by a secret from the environment.

Each row's HMAC covers its own fields and the previous row's HMAC, so editing or deleting a
row breaks every HMAC after it; an exported checkpoint of the newest HMAC also reveals a log
cut short at the end.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, ScalarSelect, bindparam, func, insert, literal, select, text

from inbox.db import StorageUnavailable, is_sqlite
from inbox.models import AuditLog, utcnow

KEY_ENV = "PARITY_AUDIT_KEY"
GENESIS = "0" * 64
_AUDIT_LOCK = 7365012002
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


def row_hmac(
    prev: str,
    at: datetime,
    actor: str,
    action: str,
    case_id: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    key: bytes | None = None,
) -> str:
    body = json.dumps(
        [prev, at.isoformat(timespec="microseconds"), actor, action, case_id, before, after],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return _hmac.new(key or _key(), body.encode(), hashlib.sha256).hexdigest()


def _newest() -> ScalarSelect[str]:
    """The chain's newest HMAC, or GENESIS for an empty log."""
    newest = select(AuditLog.hmac).order_by(AuditLog.id.desc()).limit(1).scalar_subquery()
    return select(func.coalesce(newest, GENESIS)).scalar_subquery()


def lock_and_newest_sql() -> str:
    """PostgreSQL: SQL that takes the chain's lock and gives the newest HMAC this statement saw.

    For a caller that folds the chain's lock into a statement of its own (claim-next does,
    to save two round trips); pass the value to `append(..., newest=...)`. The HMAC may be
    stale: a statement reads from a snapshot taken when it began, before it waited for the
    lock, so `append` checks it under the lock. The lock's subquery is in FROM, where
    PostgreSQL runs it although no column of it is read (a volatile call is never pulled up).
    Only constants are formatted in.
    """
    newest = f"coalesce((SELECT hmac FROM audit_log ORDER BY id DESC LIMIT 1), '{GENESIS}')"  # noqa: S608
    lock = f"(SELECT pg_advisory_xact_lock({_AUDIT_LOCK})) AS chain_lock"
    return f"(SELECT {newest} FROM {lock})"  # noqa: S608


def append(
    conn: Connection,
    *,
    actor: str,
    action: str,
    case_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    newest: str | None = None,
) -> int:
    """Append one row inside the caller's transaction; rows are chained in commit order.

    `newest` is what `lock_and_newest_sql()` gave earlier in this transaction: the lock is
    then held already, and the last HMAC is not read in a round trip of its own.
    """
    if is_sqlite(conn):
        newest = None  # its writer lock, held since BEGIN IMMEDIATE, is the chain's lock
    elif newest is not None:
        row_id = _append_if_newest(conn, newest, actor, action, case_id, before, after)
        if isinstance(row_id, int):
            return row_id
        newest = row_id  # another append committed while we waited for the lock
    else:
        conn.execute(text(f"SELECT pg_advisory_xact_lock({_AUDIT_LOCK})"))
    prev = newest or (
        conn.execute(
            select(AuditLog.hmac).order_by(AuditLog.id.desc()).limit(1)
        ).scalar_one_or_none()
        or GENESIS
    )
    at = utcnow()
    digest = row_hmac(prev, at, actor, action, case_id, before, after)
    return int(
        conn.execute(
            insert(AuditLog)
            .values(
                at=at,
                actor=actor,
                action=action,
                case_id=case_id,
                before=before,
                after=after,
                prev_hmac=prev,
                hmac=digest,
            )
            .returning(AuditLog.id)
        ).scalar_one()
    )


def _append_if_newest(
    conn: Connection,
    prev: str,
    actor: str,
    action: str,
    case_id: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> int | str:
    """Insert the row chained to `prev` if `prev` is still the newest HMAC: the row's id.

    Otherwise insert nothing and return the newest HMAC. Both are read in this statement's
    snapshot, which began after this transaction took the chain's lock: every append holds
    that lock until it commits, so the snapshot holds the chain's true end and nobody can
    append before our commit.
    """
    at = utcnow()
    digest = row_hmac(prev, at, actor, action, case_id, before, after)
    values = {
        "at": literal(at, AuditLog.at.type),
        "actor": literal(actor, AuditLog.actor.type),
        "action": literal(action, AuditLog.action.type),
        "case_id": literal(case_id, AuditLog.case_id.type),
        "before": bindparam("before", before, type_=AuditLog.before.type),
        "after": bindparam("after", after, type_=AuditLog.after.type),
        "prev_hmac": literal(prev, AuditLog.prev_hmac.type),
        "hmac": literal(digest, AuditLog.hmac.type),
    }
    inserted = (
        insert(AuditLog)
        .from_select(list(values), select(*values.values()).where(_newest() == prev))
        .returning(AuditLog.id)
        .cte("inserted")
    )
    row = conn.execute(select(select(inserted.c.id).scalar_subquery(), _newest())).one()
    return int(row[0]) if row[0] is not None else str(row[1])


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


def verify(conn: Connection, checkpoint: dict[str, Any] | None = None) -> Verification:
    """Recompute the chain from the first row; name the first row that does not match.

    With a checkpoint (an exported {"id", "hmac"} of an earlier newest row), also report a
    log cut short: that row must still exist with the same HMAC.
    """
    prev = GENESIS
    count = 0
    last_id: int | None = None
    result: Verification | None = None
    rows = conn.execute(select(AuditLog).order_by(AuditLog.id)).yield_per(1000)
    for row in rows:
        count += 1
        expected = row_hmac(prev, row.at, row.actor, row.action, row.case_id, row.before, row.after)
        if result is None:
            if row.prev_hmac != prev:
                result = Verification(
                    count,
                    row.id,
                    row.hmac,
                    row.id,
                    f"row {row.id} does not follow the row before it "
                    "(a row before it was deleted or changed)",
                )
            elif row.hmac != expected:
                result = Verification(
                    count,
                    row.id,
                    row.hmac,
                    row.id,
                    f"row {row.id} was changed after it was written",
                )
        prev = row.hmac
        last_id = row.id
    if result is not None:
        return Verification(count, last_id, prev, result.first_bad_id, result.problem)
    if checkpoint is not None and int(checkpoint.get("id", 0)) > 0:
        cp_id, cp_hmac = int(checkpoint["id"]), str(checkpoint["hmac"])
        found = conn.execute(select(AuditLog.hmac).where(AuditLog.id == cp_id)).scalar_one_or_none()
        if found is None:
            return Verification(
                count,
                last_id,
                prev,
                cp_id,
                f"the log was cut short: checkpoint row {cp_id} is missing "
                f"(the log now ends at row {last_id})",
            )
        if found != cp_hmac:
            return Verification(
                count, last_id, prev, cp_id, f"row {cp_id} does not match the checkpoint"
            )
    return Verification(count, last_id, prev)


def checkpoint(conn: Connection) -> dict[str, Any]:
    """The newest row's id and HMAC, to export and keep somewhere the database can't reach."""
    row = conn.execute(
        select(AuditLog.id, AuditLog.hmac, AuditLog.at).order_by(AuditLog.id.desc()).limit(1)
    ).one_or_none()
    if row is None:
        return {"id": 0, "hmac": GENESIS, "at": None}
    return {"id": row.id, "hmac": row.hmac, "at": row.at.isoformat()}
