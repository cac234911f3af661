"""`parity backup` and `parity restore` on both stores, taken while intake runs; the doctor's
backup age."""

from __future__ import annotations

import hashlib
import io
import secrets
import tarfile
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, text

from inbox import migrate
from inbox.db import make_engine
from inbox.models import AuditLog, Blob, Case, Intake, Message, utcnow
from parity import backup
from parity.doctor import BACKUP_STALE_HOURS, backup_findings
from tests.conftest import PG_ADMIN_URL
from tests.support.helpers import ingest, normalize
from tests.support.inbox_helpers import mail


@pytest.fixture
def empty_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A store of the same kind with nothing in it, not even the schema."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    name = f"parity_restore_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


class RunningIntake:
    """Mail stored and normalized, one after another, until stopped: intake that runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stop = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                n = self.sent
                ingest(
                    self.engine, mail(f"p{n}@example.org", f"Question {n}", "Hi", msgid=f"b{n}@x")
                )
                normalize(self.engine)
                self.sent += 1
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> RunningIntake:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


def _rows(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {
            "intake": [tuple(r) for r in conn.execute(select(Intake.id, Intake.source_key))],
            "messages": [tuple(r) for r in conn.execute(select(Message.id, Message.case_id))],
            "cases": [tuple(r) for r in conn.execute(select(Case.id, Case.reference))],
            "blobs": [tuple(r) for r in conn.execute(select(Blob.sha256))],
            "audit": [tuple(r) for r in conn.execute(select(AuditLog.id, AuditLog.hmac))],
        }


def test_a_backup_taken_while_intake_runs_restores_whole_and_verified(
    engine, db_url, empty_url, tmp_path
):
    for n in range(5):  # some history before the snapshot
        ingest(engine, mail(f"a{n}@example.org", f"Before {n}", "Hi", msgid=f"a{n}@x"))
    normalize(engine)
    file = tmp_path / "parity.backup"
    with RunningIntake(engine) as running:
        while running.sent < 3 and running.error is None:
            threading.Event().wait(0.05)
        manifest = backup.backup(engine, db_url, file, seal=True)
        during = running.sent
        while running.sent < during + 3 and running.error is None:
            threading.Event().wait(0.05)
    assert running.error is None, running.error
    source = _rows(engine)

    target = make_engine(empty_url)
    restored = backup.restore(target, empty_url, file)
    assert restored.verification.ok, restored.verification.problem
    assert restored.revision == manifest["schema_revision"] == migrate.head()
    assert manifest["audit_checkpoint"]["id"] > 0
    copy = _rows(target)
    # A snapshot: a prefix of what the running store went on to hold, never a mixture. Every
    # restored row is the source's row, whole; intake after the snapshot is not in it.
    for table, rows in copy.items():
        assert set(rows) <= set(source[table]), table
    assert 5 + 3 <= len(copy["intake"]) < len(source["intake"])
    # Every message of the copy has its case, every intake row its message or state.
    with target.connect() as conn:
        orphans = conn.execute(
            select(Message.id).where(Message.case_id.not_in(select(Case.id)))
        ).all()
    assert orphans == []
    target.dispose()


def test_restore_refuses_a_store_in_use_a_damaged_file_and_the_other_store(
    engine, db_url, empty_url, tmp_path
):
    ingest(engine, mail("ann@example.org", "Locked out", "Hi", msgid="r1@x"))
    normalize(engine)
    file = tmp_path / "parity.backup"
    backup.backup(engine, db_url, file, seal=True)
    # Over a store in use: never.
    with pytest.raises(backup.BackupError, match="not empty"):
        backup.restore(engine, db_url, file)
    # A damaged copy: a byte of the data changed.
    manifest = backup.read_manifest(file)
    damaged = tmp_path / "damaged.backup"
    with tarfile.open(file) as original, tarfile.open(damaged, "w") as out:
        for member in original.getmembers():
            data = original.extractfile(member)
            assert data is not None
            raw = bytearray(data.read())
            if member.name == manifest["data"]:
                raw[len(raw) // 2] ^= 0xFF
            out.addfile(member, io.BytesIO(bytes(raw)))
    target = make_engine(empty_url)
    with pytest.raises(backup.BackupError, match="does not match its manifest"):
        backup.restore(target, empty_url, damaged)
    other = "postgresql" if db_url.startswith("sqlite") else "sqlite"
    foreign = f"sqlite:///{tmp_path / 'x.db'}" if other == "sqlite" else PG_ADMIN_URL
    with pytest.raises(backup.BackupError, match="backup and the store is"):
        backup.restore(make_engine(foreign), foreign, file)
    target.dispose()


def test_the_store_records_its_newest_backup_for_the_doctor(engine, db_url, tmp_path):
    assert backup.last_backup(engine) is None
    file = tmp_path / "nightly.backup"
    before = utcnow()
    backup.backup(engine, db_url, file, seal=True)
    record = backup.last_backup(engine)
    assert record is not None and record["file"] == "nightly.backup"
    assert record["bytes"] == file.stat().st_size
    assert 0 <= backup.backup_age_hours(record, utcnow()) <= (utcnow() - before).total_seconds()
    with tarfile.open(file) as archive:
        names = archive.getnames()
        data = archive.extractfile(names[1])
        assert data is not None
        digest = hashlib.sha256(data.read()).hexdigest()
    assert names[0] == "manifest.json"
    assert digest == backup.read_manifest(file)["data_sha256"]


def test_doctor_backup_findings():
    now = utcnow()
    fresh = {"taken_at": (now - timedelta(hours=3)).isoformat(), "file": "a"}
    stale = {"taken_at": (now - timedelta(hours=BACKUP_STALE_HOURS + 1)).isoformat(), "file": "b"}
    table = [
        (None, ["no backup recorded"]),
        (fresh, []),
        (stale, [f"is {BACKUP_STALE_HOURS + 1:.0f} h old"]),
    ]
    for record, expected in table:
        findings = backup_findings(record, now)
        assert len(findings) == len(expected)
        for finding, text_ in zip(findings, expected, strict=True):
            assert text_ in finding.problem and not finding.fatal
