"""Two normalizer workers in two OS processes over 1,000 stored inputs, on both databases.

Each process runs the real `parity normalize` command (its `main`) against the test
database through a settings file; a barrier makes them start together so they really
compete for rows and for the threading lock. Many inputs come from the same few senders,
so both workers keep trying to open or join the same person's case at the same moment.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from inbox.models import Case, Identity, Intake, Message, Receipt
from normalizer.intake import RawInput, store
from tests.support.dns_server import mail_auth_toml
from tests.support.helpers import smtp_envelope

SENDERS_WITH_FOLLOW_UPS = 60  # each writes 10 mails without reply headers
FOLLOW_UPS = 10
SINGLE_SENDERS = 1000 - SENDERS_WITH_FOLLOW_UPS * FOLLOW_UPS  # 400 people writing once
T = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def mail(sender: str, n: int) -> bytes:
    # Lean on purpose: every header costs parse time, and this test is about concurrency.
    return (
        f"From: {sender}@example.org\r\n"
        f"Subject: Question {n}\r\n"
        f"Message-ID: <{sender}.{n}@example.org>\r\n\r\n"
        f"Mail {n} from {sender}.\r\n"
    ).encode()


def inputs() -> list[tuple[str, bytes]]:
    items = []
    for s in range(SENDERS_WITH_FOLLOW_UPS):
        items += [(f"regular{s:03d}", mail(f"regular{s:03d}", n)) for n in range(FOLLOW_UPS)]
    items += [(f"once{s:03d}", mail(f"once{s:03d}", 0)) for s in range(SINGLE_SENDERS)]
    # Interleave senders, so that one sender's mails land in both workers' batches.
    items.sort(key=lambda item: (item[1].split(b"Message-ID: <")[1].split(b"@")[0][-1:], item[0]))
    return items


def run_worker(settings: str, out: str, barrier: Any) -> None:
    """The child process: wait for the other, then run `parity normalize`."""
    from parity.cli import main

    environment = [k for k in os.environ if k.startswith("PARITY_") and k != "PARITY_AUDIT_KEY"]
    for key in environment:
        del os.environ[key]
    with open(out, "w") as handle, contextlib.redirect_stdout(handle):
        barrier.wait(timeout=60)
        code = main(["--settings", settings, "normalize"])
    raise SystemExit(code)


def test_two_worker_processes_make_each_input_exactly_one_message(engine, db_url, tmp_path: Path):
    items = inputs()
    assert len(items) == 1000
    stored = store(
        engine,
        [
            RawInput(
                connector="smtp",
                channel="email",
                source_key=f"load:{i}",
                payload=raw,
                # As SMTP intake stores it: the client, and MAIL FROM at the From address,
                # so the senders are authenticated (fixture DNS) and follow-ups thread.
                envelope={**smtp_envelope(raw), "rcpt_tos": ["support@support.example.com"]},
                received_at=T,
            )
            for i, (_, raw) in enumerate(items)
        ],
    )
    assert len({s.intake_id for s in stored}) == 1000

    settings = tmp_path / "settings.toml"
    settings.write_text(
        f'[database]\nurl = "{db_url}"\nbusy_timeout_ms = 30000\n\n'
        f'[normalizer]\nbatch_size = 25\n\n[logging]\nlevel = "WARNING"\n' + mail_auth_toml()
    )
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    outputs = [tmp_path / f"worker{i}.json" for i in range(2)]
    workers = [
        context.Process(target=run_worker, args=(str(settings), str(out), barrier))
        for out in outputs
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0]

    counts = [json.loads(out.read_text()) for out in outputs]
    # Both really worked, and between them they did every input exactly once.
    assert all(c.get("done", 0) > 0 for c in counts), counts
    assert sum(c.get("done", 0) for c in counts) == 1000, counts
    assert all(set(c) <= {"done", "skipped"} for c in counts), counts

    with engine.connect() as conn:
        intake = conn.execute(select(Intake.id, Intake.state, Intake.message_id)).all()
        messages = conn.execute(
            select(Message.id, Message.case_id, Message.dedup_key, Message.from_handle)
        ).all()
        cases = conn.execute(select(Case.id, Case.contact_id)).all()
        receipts = conn.execute(select(func.count()).select_from(Receipt)).scalar_one()
        identities = conn.execute(select(Identity.handle, Identity.contact_id)).all()
        workers_seen = conn.execute(
            select(func.count(func.distinct(Intake.claimed_by)))
        ).scalar_one()

    assert workers_seen == 2
    assert {row.state for row in intake} == {"done"}
    assert len(messages) == 1000
    assert len({m.dedup_key for m in messages}) == 1000
    assert len({row.message_id for row in intake}) == 1000
    assert {row.message_id for row in intake} == {m.id for m in messages}
    assert receipts == 1000
    case_ids = {c.id for c in cases}
    assert {m.case_id for m in messages} <= case_ids

    # One person, one identity, one case: every follow-up joined the first mail's case.
    assert (
        len(identities)
        == len({h for h, _ in identities})
        == SENDERS_WITH_FOLLOW_UPS + SINGLE_SENDERS
    )
    cases_of: dict[str, set[int]] = defaultdict(set)
    for m in messages:
        cases_of[m.from_handle].add(m.case_id)
    assert all(len(ids) == 1 for ids in cases_of.values()), {
        h: ids for h, ids in cases_of.items() if len(ids) > 1
    }
    assert len(cases) == SENDERS_WITH_FOLLOW_UPS + SINGLE_SENDERS
    sizes = sorted(sum(1 for m in messages if m.case_id == c) for c in case_ids)
    assert sizes == [1] * SINGLE_SENDERS + [FOLLOW_UPS] * SENDERS_WITH_FOLLOW_UPS
