"""CPython's own email test messages go through intake: each is stored or dead-lettered whole.

The 48 files ship with the interpreter (test/test_email/data/msg_*.txt; Debian's
libpython3.11-testsuite where they are split out) and are read from there, never copied.
They are odd on purpose: no headers, no subtype, digests, DSNs, RFC 2231 parameters, and
several files that reuse one Message-ID.

What to expect is worked out here without Parity's parser: each file is read with the
standard library's compat32 parser and keyed by (Message-ID, sender address, Date, Subject,
decoded leaf payloads). Files with equal keys are one mail in different MIME dress (a
missing Content-Type line, an explicit default, Cc headers, extra blank lines) and must be
one message with several receipts; everything else must be its own message.
"""

from __future__ import annotations

import email
import email.message
import hashlib
import importlib
from collections import defaultdict
from email.utils import parseaddr
from pathlib import Path

import pytest
from sqlalchemy import select

from inbox.models import Blob, DeadLetter, Intake, Message, Receipt
from normalizer.intake import RawInput, store
from tests.support.helpers import normalize


def sample_files() -> list[Path]:
    try:
        suite = importlib.import_module("test.test_email")
    except ImportError as exc:  # fail, never skip: Debian ships them in a separate package
        pytest.fail(f"CPython's email samples are missing (libpython3.11-testsuite): {exc}")
    assert suite.__file__ is not None
    return sorted(Path(suite.__file__).parent.joinpath("data").glob("msg_*.txt"))


def independent_key(raw: bytes) -> tuple[object, ...] | None:
    """None for input that is not a mail at all (no header block)."""
    msg = email.message_from_bytes(raw)  # compat32: a different code path from ours
    if not msg.keys():
        return None
    leaves: list[bytes] = sorted(
        bytes(part.get_payload(decode=True) or b"")
        for part in msg.walk()
        if not part.is_multipart()
    )
    return (
        str(msg.get("message-id", "")).strip(),
        parseaddr(str(msg.get("from", "")))[1].lower(),
        str(msg.get("date", "")),
        " ".join(str(msg.get("subject", "")).split()),
        tuple(leaves),
    )


def test_every_cpython_sample_is_stored_or_dead_lettered_whole(engine):
    files = sample_files()
    assert len(files) == 48
    raw = {f.name: f.read_bytes() for f in files}

    stored = store(
        engine,
        [
            RawInput(connector="test", channel="email", source_key=f"cpython:{name}", payload=data)
            for name, data in raw.items()
        ],
    )
    assert len({s.intake_id for s in stored}) == 48
    outcomes = normalize(engine)
    assert len(outcomes) == 48

    with engine.connect() as conn:
        intakes = {
            row.source_key.removeprefix("cpython:"): row for row in conn.execute(select(Intake))
        }
        blobs = dict(conn.execute(select(Blob.sha256, Blob.data)).all())
        dead = {row.intake_id: row for row in conn.execute(select(DeadLetter))}
        messages = {row.id: row for row in conn.execute(select(Message))}
        receipts = defaultdict(list)
        for r in conn.execute(select(Receipt)):
            receipts[r.intake_id].append(r.message_id)

    # Every delivery's raw bytes are kept exactly, whatever became of it.
    assert set(intakes) == set(raw)
    for name, row in intakes.items():
        assert blobs[row.raw_sha256] == raw[name], name
        assert row.raw_sha256 == hashlib.sha256(raw[name]).hexdigest()

    expected = {name: independent_key(data) for name, data in raw.items()}
    expected_dead = {name for name, k in expected.items() if k is None}
    expected_groups: dict[object, set[str]] = defaultdict(set)
    for name, k in expected.items():
        if k is not None:
            expected_groups[k].add(name)

    # Dead letters: exactly the inputs that are not mail, each with its raw bytes.
    assert {n for n, row in intakes.items() if row.state == "dead"} == expected_dead
    for name in expected_dead:
        letter = dead[intakes[name].id]
        assert blobs[letter.raw_sha256] == raw[name]
        assert letter.error

    # Everything else is a message, reachable from its intake row and its receipt.
    done = {n: row for n, row in intakes.items() if row.state == "done"}
    assert set(done) == set(raw) - expected_dead
    for name, row in done.items():
        assert row.message_id in messages, name
        assert receipts[row.id] == [row.message_id], name

    # Copies of one mail are one message; different mail is never merged.
    actual_groups: dict[int, set[str]] = defaultdict(set)
    for name, row in done.items():
        actual_groups[row.message_id].add(name)
    assert sorted(map(sorted, actual_groups.values())) == sorted(
        map(sorted, expected_groups.values())
    )
    assert len(messages) + len(dead) == len(expected_groups) + len(expected_dead)
    assert len(outcomes) == 48 == len(done) + len(expected_dead)

    # Several samples reuse one Message-ID with other content: each is its own message.
    by_message_id: dict[str, set[int]] = defaultdict(set)
    for name, row in done.items():
        mid = str(email.message_from_bytes(raw[name]).get("message-id", "")).strip()
        if mid:
            by_message_id[mid].add(row.message_id)
    reused = {mid: ids for mid, ids in by_message_id.items() if len(ids) > 1}
    assert reused, "the samples are known to reuse Message-IDs with different content"
    for ids in reused.values():
        assert len({messages[i].dedup_key for i in ids}) == len(ids)
