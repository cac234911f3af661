"""A store written by a version before 0009 (one audit chain, one lock) still verifies after
migrating, its exported checkpoints still hold, and new chains are sealed onto it."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text, update

from inbox import audit, migrate
from inbox.db import make_engine, write
from inbox.models import AuditLog
from tests.support.inbox_helpers import bulk_cases
from tests.support.stores import store_at


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database migrated only to 0008, as the version before this one left it."""
    with store_at(request.param, tmp_path, "0008") as url:
        yield url


def _old_hmac(prev: str, at: datetime, actor: str, action: str, after: dict[str, Any]) -> str:
    """The HMAC as the version before 0009 computed it, written out here independently."""
    body = json.dumps(
        [prev, at.isoformat(timespec="microseconds"), actor, action, None, None, after],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    key = os.environ[audit.KEY_ENV].encode()
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def _write_old_rows(engine, count: int) -> list[tuple[int, str]]:
    """Rows as the old version stored them: no chain, no seq, one chain in id order."""
    prev = audit.GENESIS
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    written = []
    with engine.begin() as conn:
        for i in range(count):
            at = start + timedelta(minutes=i)
            after = {"status": "open", "n": i}
            digest = _old_hmac(prev, at, f"agent{i}", "account.changed", after)
            row_id = conn.execute(
                text(
                    "INSERT INTO audit_log (at, actor, action, case_id, before, after, "
                    "prev_hmac, hmac) VALUES (:at, :actor, 'account.changed', NULL, NULL, "
                    ":after, :prev, :hmac) RETURNING id"
                ),
                {
                    "at": at.replace(tzinfo=None),
                    "actor": f"agent{i}",
                    "after": json.dumps(after),
                    "prev": prev,
                    "hmac": digest,
                },
            ).scalar_one()
            written.append((int(row_id), digest))
            prev = digest
    return written


def test_rows_of_an_older_version_verify_after_migrating(old_store):
    engine = make_engine(old_store)
    try:
        old = _write_old_rows(engine, 5)
        old_checkpoint = {"id": old[-1][0], "hmac": old[-1][1], "at": None}
        migrate.upgrade(engine)
        with engine.connect() as conn:
            result = audit.verify(conn, old_checkpoint)
        assert result.ok, result.problem
        assert result.rows == 5 and result.newest_id == old[-1][0]

        (case,) = bulk_cases(engine, 1)
        with write(engine) as conn:
            new_id = audit.append(conn, actor="agent", action="case.status", case_id=case)
            audit.append(conn, actor="admin", action="account.changed")
        with write(engine) as conn:
            sealed = audit.checkpoint(conn)
        with engine.connect() as conn:
            first_seal = conn.execute(text("SELECT prev_hmac FROM audit_seals")).scalar_one()
            assert first_seal == old[-1][1]  # the first seal links the older chain's end
            assert audit.verify(conn, sealed).ok
            assert audit.verify(conn, old_checkpoint).ok
        assert new_id > old[-1][0]

        # An older row edited is still named ...
        with engine.begin() as conn:
            conn.execute(update(AuditLog).where(AuditLog.id == old[1][0]).values(actor="eve"))
        with engine.connect() as conn:
            edited = audit.verify(conn)
        assert not edited.ok and edited.first_bad_id == old[1][0]
        with engine.begin() as conn:
            conn.execute(update(AuditLog).where(AuditLog.id == old[1][0]).values(actor="agent1"))
        # ... and the older chain cut short at its end is caught by the seal that links it.
        with engine.begin() as conn:
            conn.execute(delete(AuditLog).where(AuditLog.id == old[-1][0]))
        with engine.connect() as conn:
            cut = audit.verify(conn)
            cut_old = audit.verify(conn, old_checkpoint)
        assert not cut.ok and "seal" in (cut.problem or "")
        assert not cut_old.ok
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_seals")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_row_older_than_the_chains_that_names_an_erased_person_is_re_attested(old_store):
    """A row of the single chain of before 0009 naming a person: erased, its HMAC kept, so the
    older chain's checkpoint and the seal that links it still hold."""
    from inbox import erasure
    from tests.support.helpers import ingest_and_normalize

    address = "ottilie.brandvold@example.net"
    engine = make_engine(old_store)
    try:
        at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
        after = {"identity": address, "n": 7}
        digest = _old_hmac(audit.GENESIS, at, "admin", "identity.linked", after)
        with engine.begin() as conn:
            row_id = conn.execute(
                text(
                    "INSERT INTO audit_log (at, actor, action, case_id, before, after, "
                    "prev_hmac, hmac) VALUES (:at, 'admin', 'identity.linked', NULL, NULL, "
                    ":after, :prev, :hmac) RETURNING id"
                ),
                {"at": at.replace(tzinfo=None), "after": json.dumps(after),
                 "prev": audit.GENESIS, "hmac": digest},
            ).scalar_one()  # fmt: skip
        old_checkpoint = {"id": row_id, "hmac": digest, "at": None}
        migrate.upgrade(engine)
        mail = (
            f"From: Ottilie <{address}>\r\nTo: help@support.example.com\r\n"
            "Subject: locked out\r\nMessage-ID: <ob1@example.net>\r\n\r\nI cannot log in.\r\n"
        ).encode()
        ingest_and_normalize(engine, mail)
        with engine.begin() as conn:
            sealed = audit.checkpoint(conn)
            contact_id = erasure.find_contact(conn, address)
        result = erasure.erase_contact(engine, contact_id, actor="test")
        assert result.audit_rows_before_0020 == 0
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT form, hmac, after FROM audit_log WHERE id = :id"), {"id": row_id}
            ).one()
            assert audit.verify(conn, old_checkpoint).ok
            assert audit.verify(conn, sealed).ok
        stored = row.after if isinstance(row.after, dict) else json.loads(row.after)
        assert row.form == 3 and row.hmac == digest
        assert address not in json.dumps(stored) and stored["n"] == 7
    finally:
        engine.dispose()
