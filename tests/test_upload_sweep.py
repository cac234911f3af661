"""Reply uploads never sent are swept: by age after their last touch (the upload, or the
uploader's draft on that case), by the daemon's retention task and `parity retention run`,
on SQLite and PostgreSQL. A blob goes only when nothing else uses it.

Expected survivors are chosen by hand when each upload is made, not computed by the sweep."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, insert, select, update

from inbox import uploads
from inbox.db import write
from inbox.models import Blob, ReplyDraft, ReplyUpload, utcnow
from parity import cli
from parity.daemon import Daemon
from parity.settings import RetentionSettings
from tests.support.inbox_helpers import case_row, email_case
from tests.support.reply_files import PDF, PNG, agent, reply_with_files

HOURS = timedelta(hours=24)


def upload(
    engine: Engine, user_id: int, case_id: int, name: str, data: bytes, age: timedelta
) -> int:
    """An upload as the upload route stores it, then dated `age` ago."""
    with write(engine) as conn:
        made = uploads.store(
            conn,
            user_id=user_id,
            case_id=case_id,
            filename=name,
            content_type="application/octet-stream",
            data=data,
        )
        conn.execute(
            update(ReplyUpload)
            .where(ReplyUpload.id == made["id"])
            .values(created_at=utcnow() - age)
        )
    return int(made["id"])


def touch_draft(engine: Engine, user_id: int, case_id: int, at: datetime) -> None:
    with write(engine) as conn:
        conn.execute(
            insert(ReplyDraft).values(
                user_id=user_id, case_id=case_id, draft={"text": "Half"}, updated_at=at
            )
        )


def left(engine: Engine) -> tuple[set[str], set[str]]:
    """The filenames of the uploads left, and the blobs left."""
    with engine.connect() as conn:
        names = set(conn.execute(select(ReplyUpload.filename)).scalars())
        blobs = set(conn.execute(select(Blob.sha256)).scalars())
    return names, blobs


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scene(engine: Engine) -> dict[str, set[str]]:
    """Two agents on two cases, with uploads of every kind; what must survive a sweep."""
    ann, bob = agent(engine, "ann"), agent(engine, "bob")
    one = email_case(engine, "kim@example.org", "One", "Please help.")
    two = email_case(engine, "lee@example.org", "Two", "Me too.")
    one_id, two_id = case_row(engine, one).id, case_row(engine, two).id
    # Sent with a reply: its upload row and blob stay, however old.
    reply_with_files(engine, ann, one, "Here it is.", [("sent.png", "image/png", PNG)])
    with write(engine) as conn:
        conn.execute(update(ReplyUpload).values(created_at=utcnow() - 10 * HOURS))
    # Abandoned two days ago: goes, with its own blob.
    upload(engine, ann.id, one_id, "stale.bin", b"stale bytes nobody else has", 2 * HOURS)
    # Abandoned, but the same bytes as the sent file: the row goes, the blob stays.
    upload(engine, ann.id, one_id, "copy.png", PNG, 2 * HOURS)
    # Old, but ann touched her draft on case two an hour ago: stays.
    upload(engine, ann.id, two_id, "drafting.pdf", PDF, 2 * HOURS)
    touch_draft(engine, ann.id, two_id, utcnow() - timedelta(hours=1))
    # Bob's old upload on case two: ann's draft there is not his, so it goes.
    upload(engine, bob.id, two_id, "bob.bin", b"bob's forgotten file", 2 * HOURS)
    # Fresh: stays.
    upload(engine, bob.id, one_id, "fresh.bin", b"just uploaded", timedelta(hours=1))
    return {
        "uploads": {"sent.png", "drafting.pdf", "fresh.bin"},
        "gone_blobs": {sha(b"stale bytes nobody else has"), sha(b"bob's forgotten file")},
        "kept_blobs": {sha(PNG), sha(PDF), sha(b"just uploaded")},
    }


def check(engine: Engine, want: dict[str, set[str]]) -> None:
    names, blobs = left(engine)
    assert names == want["uploads"]
    assert want["kept_blobs"] <= blobs
    assert not want["gone_blobs"] & blobs


def test_unsent_uploads_are_swept_after_their_last_touch(engine: Engine) -> None:
    want = scene(engine)
    swept = uploads.sweep(engine, keep=HOURS)
    assert swept == uploads.Swept(uploads=3, blobs=2)
    check(engine, want)
    assert uploads.sweep(engine, keep=HOURS) == uploads.Swept(0, 0)


def test_parity_retention_run_sweeps_uploads(db_url: str, engine: Engine, tmp_path: Path) -> None:
    want = scene(engine)
    path = tmp_path / "settings.toml"
    path.write_text(f'[database]\nurl = "{db_url}"\nurl_env = "PARITY_TEST_NO_SUCH_VAR"\n')
    assert cli.main(["--settings", str(path), "retention", "run", "--json"]) == 0
    check(engine, want)


def test_retention_run_json_counts_the_uploads(
    db_url: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene(engine)
    path = tmp_path / "settings.toml"
    path.write_text(
        f'[database]\nurl = "{db_url}"\nurl_env = "PARITY_TEST_NO_SUCH_VAR"\n'
        "[retention]\nunsent_upload_hours = 72\n"
    )
    assert cli.main(["--settings", str(path), "retention", "run", "--json"]) == 0
    # 72 hours: the two-day-old uploads are not old enough yet.
    assert json.loads(capsys.readouterr().out) == {"cases_erased": 0, "unsent_uploads_removed": 0}


def test_the_daemon_sweeps_uploads_with_no_case_retention(engine: Engine) -> None:
    """The daemon's retention task runs for the uploads alone (resolved_case_days = 0)."""
    want = scene(engine)
    policy = RetentionSettings()
    assert policy.resolved_case_days == 0 and policy.unsent_upload_hours == 24

    async def run() -> None:
        host = SimpleNamespace(
            engine=engine, stop=asyncio.Event(), settings=SimpleNamespace(retention=policy)
        )
        task = asyncio.create_task(Daemon._retention(host))  # type: ignore[arg-type]
        for _ in range(100):
            await asyncio.sleep(0.1)
            if left(engine)[0] == want["uploads"]:
                break
        host.stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(run())
    check(engine, want)
