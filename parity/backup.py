"""`parity backup FILE` and `parity restore FILE`: one file holding a consistent copy of the
store, the schema revision it was taken at, and an audit checkpoint taken with it.

The file is a tar archive of two members:
- `manifest.json`: the format, the kind of store, the schema revision, the time, the audit
  checkpoint (a seal's id and HMAC) and the SHA-256 of the data member;
- `store.sqlite` (SQLite's online backup API: a consistent snapshot while writers go on) or
  `store.pgdump` (pg_dump's custom format through the installed client: one snapshot
  transaction).

The checkpoint is sealed before the snapshot is taken, so the snapshot holds the seal; a
restore verifies the restored audit log against it, which finds a copy that was cut short
or edited after the backup. A restore goes into an empty store only: it never mixes two
histories.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, insert, inspect, select
from sqlalchemy.engine import make_url

from inbox import audit, migrate
from inbox.db import write
from inbox.models import Checkpoint, utcnow

FORMAT = "parity-backup/1"
MANIFEST = "manifest.json"
DATA = {"sqlite": "store.sqlite", "postgresql": "store.pgdump"}
# The store's own record of its newest backup, for `parity doctor`: a row of the cursor
# table, written after the snapshot (so a restored copy does not claim to be backed up).
RECORD = ("parity", "last-backup")
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Restored:
    revision: str | None
    verification: audit.Verification
    manifest: dict[str, Any]


def store_kind(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in DATA:
        raise BackupError(f"backups support SQLite and PostgreSQL, not {backend}")
    return backend


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL for pg_dump and pg_restore, with the password in the environment rather
    than on a command line every user of the machine can read."""
    parsed = make_url(url)
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _client(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (apt-get install postgresql-client)")
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite store has nothing to back up")
    return Path(database)


def _snapshot(url: str, kind: str, target: Path) -> None:
    if kind == "sqlite":
        source = sqlite3.connect(_sqlite_path(url))
        copy = sqlite3.connect(target)
        try:
            with copy:
                source.backup(copy)
        finally:
            copy.close()
            source.close()
        return
    libpq, env = _libpq(url)
    # The arguments are ours: the installed client, a temporary path and the settings' URL.
    result = subprocess.run(  # noqa: S603
        [_client("pg_dump"), "--format=custom", "--no-owner", "--file", str(target), libpq],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise BackupError(f"pg_dump failed: {result.stderr.strip()[-500:]}")


def backup(engine: Engine, url: str, out: Path, *, seal: bool) -> dict[str, Any]:
    """Write the backup file `out` (atomically: a partial file never has its name) and
    record it in the store; returns the manifest."""
    kind = store_kind(url)
    revision = migrate.current(engine)
    if revision is None:
        raise BackupError("the store has no schema yet: there is nothing to back up")
    with write(engine) as conn:
        checkpoint = audit.checkpoint(conn, seal_now=seal)
    out = out.resolve()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".parity-backup-") as tmp:
        data = Path(tmp) / DATA[kind]
        _snapshot(url, kind, data)
        manifest = {
            "format": FORMAT,
            "store": kind,
            "schema_revision": revision,
            "taken_at": utcnow().isoformat(),
            "audit_checkpoint": checkpoint,
            "data": DATA[kind],
            "data_sha256": _sha256(data),
            "data_bytes": data.stat().st_size,
        }
        partial = Path(tmp) / "backup.tar"
        with tarfile.open(partial, "w") as archive:
            raw = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
            archive.add(data, arcname=DATA[kind])
        os.replace(partial, out)
    _record(engine, manifest, out)
    return manifest


def _record(engine: Engine, manifest: dict[str, Any], out: Path) -> None:
    value = {
        "taken_at": manifest["taken_at"],
        "file": out.name,
        "bytes": out.stat().st_size,
        "schema_revision": manifest["schema_revision"],
    }
    with write(engine) as conn:
        conn.execute(
            delete(Checkpoint).where(Checkpoint.connector == RECORD[0], Checkpoint.key == RECORD[1])
        )
        conn.execute(insert(Checkpoint).values(connector=RECORD[0], key=RECORD[1], value=value))


def last_backup(engine: Engine) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(Checkpoint.value).where(
                Checkpoint.connector == RECORD[0], Checkpoint.key == RECORD[1]
            )
        ).scalar_one_or_none()
    return dict(row) if row else None


def backup_age_hours(record: dict[str, Any], now: datetime) -> float:
    taken = datetime.fromisoformat(record["taken_at"])
    return (now - taken).total_seconds() / 3600


def read_manifest(file: Path) -> dict[str, Any]:
    try:
        with tarfile.open(file, "r") as archive:
            member = archive.extractfile(MANIFEST)
            if member is None:
                raise KeyError(MANIFEST)
            manifest: dict[str, Any] = json.loads(member.read(1 << 20))
    except (tarfile.TarError, KeyError, ValueError) as exc:
        raise BackupError(f"{file}: not a Parity backup ({exc})") from exc
    if manifest.get("format") != FORMAT or manifest.get("data") not in DATA.values():
        raise BackupError(f"{file}: not a Parity backup of a known format")
    return manifest


def _empty(engine: Engine) -> bool:
    tables = inspect(engine).get_table_names()
    return not tables


def restore(engine: Engine, url: str, file: Path) -> Restored:
    """Restore `file` into the empty store at `url`, then verify its schema revision and
    its audit log against the checkpoint taken with it."""
    manifest = read_manifest(file)
    kind = store_kind(url)
    if manifest["store"] != kind:
        raise BackupError(
            f"{file} is a {manifest['store']} backup and the store is {kind}: restore it "
            f"into a {manifest['store']} store (moving between stores is not supported)"
        )
    if not _empty(engine):
        raise BackupError(
            "the store is not empty: restore into a new database (or a new SQLite file), "
            "never over one in use"
        )
    with tempfile.TemporaryDirectory(prefix="parity-restore-") as tmp:
        with tarfile.open(file, "r") as archive:
            archive.extract(manifest["data"], tmp, filter="data")
        data = Path(tmp) / manifest["data"]
        if _sha256(data) != manifest["data_sha256"]:
            raise BackupError(f"{file}: the data does not match its manifest (damaged copy)")
        engine.dispose()
        if kind == "sqlite":
            target = _sqlite_path(url)
            target.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(data, target)
        else:
            libpq, env = _libpq(url)
            result = subprocess.run(  # noqa: S603
                [
                    _client("pg_restore"),
                    "--no-owner",
                    "--exit-on-error",
                    "--dbname",
                    libpq,
                    str(data),
                ],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if result.returncode != 0:
                raise BackupError(f"pg_restore failed: {result.stderr.strip()[-500:]}")
    revision = migrate.current(engine)
    with engine.connect() as conn:
        verification = audit.verify(conn, manifest["audit_checkpoint"])
        # The copy's own record of a backup predates this one; it is not a backup of it.
        conn.execute(
            delete(Checkpoint).where(Checkpoint.connector == RECORD[0], Checkpoint.key == RECORD[1])
        )
        conn.commit()
    return Restored(revision, verification, manifest)
