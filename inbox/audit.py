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

from sqlalchemy import Connection, insert, select, text

from inbox.db import is_sqlite
from inbox.models import AuditLog, utcnow

KEY_ENV = "PARITY_AUDIT_KEY"
GENESIS = "0" * 64
_AUDIT_LOCK = 7365012002


def _key() -> bytes:
    value = os.environ.get(KEY_ENV, "")
    # Without a configured key the chain still detects accidents but not a forger who has
    # read this source; `parity doctor` says so.
    return value.encode() if value else b"parity-audit-key-not-configured"


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


def append(
    conn: Connection,
    *,
    actor: str,
    action: str,
    case_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> int:
    """Append one row inside the caller's transaction; rows are chained in commit order."""
    if not is_sqlite(conn):
        conn.execute(text(f"SELECT pg_advisory_xact_lock({_AUDIT_LOCK})"))
    prev = (
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
