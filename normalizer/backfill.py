"""Backfill: old mail from an mbox file or a Maildir, through the same intake path as live mail.

Each message's intake key is derived from its bytes, so importing the same file twice (or
two exports that overlap) adds nothing; the normalizer's dedup key then joins an imported
copy of mail Parity already took in live. Imported mail is history: it is stored and cased
but never acknowledged, and each case records why.
"""

from __future__ import annotations

import mailbox
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import Engine

from inbox import audit
from inbox.channels import MAIL_CHANNEL
from inbox.db import write
from normalizer.intake import RawInput, sha256, store
from normalizer.worker import Normalizer

CONNECTOR = "import"
# Messages stored and then filed per step of an import, at most, and their raw bytes at
# most: memory stays bounded by the bytes whatever the messages' sizes, and the progress
# shown is messages cased, not merely read. A step of 1,000 rather than 200 leaves the
# parse processes idle less often (each step starts with the filing waiting for its first
# parses): 7 % more messages a second on SQLite (bench/import_mbox.py,
# docs/benchmarks/intake.md).
IMPORT_BATCH = 1000
IMPORT_BATCH_BYTES = 64 * 1024 * 1024


@dataclass
class ImportSummary:
    read: int = 0
    imported: int = 0  # new messages
    duplicates: int = 0  # seen before: the same bytes, or the same message by its dedup key
    dead_lettered: int = 0  # could not be parsed; kept in dead letters with the raw bytes
    elsewhere: int = 0  # taken by a running worker meanwhile; it normalizes them
    # CPU the parse processes spent on this import's messages (bench/import_mbox.py).
    parse_cpu_seconds: float = 0.0


def source_key(raw: bytes) -> str:
    return f"{CONNECTOR}:{sha256(raw)}"


def mbox_messages(path: str | Path) -> tuple[int, Iterator[bytes]]:
    """The number of messages in an mbox file, and their raw bytes in file order."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such mbox file")
    box = mailbox.mbox(str(path), create=False)
    keys = box.keys()
    return len(keys), (box.get_bytes(k) for k in keys)


def maildir_messages(path: str | Path) -> tuple[int, Iterator[bytes]]:
    """The number of messages in a Maildir (new and cur), and their raw bytes."""
    if not (Path(path) / "cur").is_dir() and not (Path(path) / "new").is_dir():
        raise ValueError(f"{path}: not a Maildir (no cur/ or new/)")
    box = mailbox.Maildir(str(path), factory=None, create=False)
    keys = sorted(box.keys())
    return len(keys), (box.get_bytes(k) for k in keys)


def steps(messages: Iterable[bytes], max_count: int, max_bytes: int) -> Iterator[list[bytes]]:
    """`messages` cut into consecutive steps of at most `max_count` messages and at most
    `max_bytes` bytes, in order; a message larger than `max_bytes` is a step of its own."""
    if max_count < 1:
        raise ValueError("max_count must be at least 1")
    step: list[bytes] = []
    size = 0
    for raw in messages:
        if step and (len(step) >= max_count or size + len(raw) > max_bytes):
            yield step
            step, size = [], 0
        step.append(raw)
        size += len(raw)
    if step:
        yield step


def import_messages(
    engine: Engine,
    normalizer: Normalizer,
    messages: Iterable[bytes],
    *,
    origin: str,
    batch_size: int = IMPORT_BATCH,
    batch_bytes: int = IMPORT_BATCH_BYTES,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Store and normalize `messages` batch by batch; never acknowledged.

    Each batch (at most `batch_size` messages and `batch_bytes` of them, `steps`) is one
    intake transaction, then normalized right away, so memory stays bounded and the
    progress shown is messages that are cased, not merely read.
    """
    summary = ImportSummary()
    # Importing is one decision by an operator: "this is history, acknowledge none of it".
    # It is audited once here rather than once per case.
    _audit(engine, "import.started", {"origin": origin})
    for batch in steps(messages, batch_size, batch_bytes):
        items = [
            RawInput(
                connector=CONNECTOR,
                channel=MAIL_CHANNEL,
                source_key=source_key(raw),
                payload=raw,
                envelope={"import": origin},
                acknowledge=False,
            )
            for raw in batch
        ]
        stored = store(engine, items)
        # The whole batch claimed at once: it is filed in whole persist batches while the
        # parse processes work on the next ones.
        drained = normalizer.drain(only=sorted({s.intake_id for s in stored}), claim=len(stored))
        outcomes = {o.intake_id: o.state for o in drained}
        summary.parse_cpu_seconds += sum(o.cpu_seconds for o in drained)
        counted: set[int] = set()
        for result in stored:
            summary.read += 1
            state = outcomes.get(result.intake_id) if result.intake_id not in counted else None
            counted.add(result.intake_id)
            if state == "done":
                summary.imported += 1
            elif state == "dead":
                summary.dead_lettered += 1
            elif state == "duplicate" or result.duplicate:
                summary.duplicates += 1
            else:
                summary.elsewhere += 1
        if progress is not None:
            progress(len(batch))
    counts = {k: v for k, v in asdict(summary).items() if k != "parse_cpu_seconds"}
    _audit(engine, "import.finished", {"origin": origin, **counts})
    return summary


def _audit(engine: Engine, action: str, after: dict[str, object]) -> None:
    with write(engine) as conn:
        audit.append(conn, actor="import", action=action, after=after)
