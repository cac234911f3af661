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
from itertools import islice
from pathlib import Path

from sqlalchemy import Engine

from inbox import audit
from inbox.channels import MAIL_CHANNEL
from inbox.db import write
from normalizer.intake import RawInput, Stored, sha256, store
from normalizer.worker import Normalizer, Outcome

CONNECTOR = "import"


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


def import_messages(
    engine: Engine,
    normalizer: Normalizer,
    messages: Iterable[bytes],
    *,
    origin: str,
    batch_size: int = 200,
    window: int = 10_000,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Store and normalize `messages` batch by batch; never acknowledged.

    Each batch is one intake transaction. The next batch is stored and handed to the parse
    processes while this one is filed, so parsing, storing and filing overlap; at most
    `window` messages are in flight, so memory stays bounded whatever the mailbox's size, and
    the progress shown is messages that are cased, not merely read.
    """
    summary = ImportSummary()
    # Importing is one decision by an operator: "this is history, acknowledge none of it".
    # It is audited once here rather than once per case.
    _audit(engine, "import.started", {"origin": origin})
    iterator = iter(messages)
    while True:
        feed = _Feed(engine, normalizer, iterator, origin, batch_size, window, progress)
        first = feed(batch_size)
        if not feed.batches:
            break
        if first:
            normalizer.process_many(first, refill=feed, ordered=True, outcomes=feed.outcomes)
        feed.report(everything=True)
        states = {o.intake_id: o.state for o in feed.outcomes}
        summary.parse_cpu_seconds += sum(o.cpu_seconds for o in feed.outcomes)
        for stored in feed.batches:
            _count(summary, stored, states)
    counts = {k: v for k, v in asdict(summary).items() if k != "parse_cpu_seconds"}
    _audit(engine, "import.finished", {"origin": origin, **counts})
    return summary


class _Feed:
    """The next batch stored and claimed, each time the parse processes run short of work.

    Called from the parse thread while the caller's thread files the batch before; the
    intake ids it gives only ever grow, which is what filing in intake order needs.
    """

    def __init__(
        self,
        engine: Engine,
        normalizer: Normalizer,
        messages: Iterator[bytes],
        origin: str,
        batch_size: int,
        window: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.engine, self.normalizer, self.messages = engine, normalizer, messages
        self.origin, self.batch_size, self.window = origin, batch_size, window
        self.progress = progress
        self.batches: list[list[Stored]] = []
        # Filled by the filing thread, read here: how far the filing got.
        self.outcomes: list[Outcome] = []
        self.read = 0
        self._claimed = 0
        self._settled_at: list[int] = []  # per batch: outcomes needed before it is all cased
        self._reported = 0

    def report(self, everything: bool = False) -> None:
        """Progress for the batches cased since the last report."""
        done = len(self.outcomes)
        while self._reported < len(self.batches) and (
            everything or self._settled_at[self._reported] <= done
        ):
            if self.progress is not None:
                self.progress(len(self.batches[self._reported]))
            self._reported += 1

    def __call__(self, _wanted: int) -> list[int]:
        self.report()
        # A batch with nothing to claim (all of it seen before) would let the parse
        # processes run dry and end this window early: read on until there is work.
        while self.read < self.window:
            batch = list(islice(self.messages, min(self.batch_size, self.window - self.read)))
            if not batch:
                return []
            self.read += len(batch)
            stored = store(self.engine, [self._item(raw) for raw in batch])
            self.batches.append(stored)
            ids = sorted({s.intake_id for s in stored})
            claimed = self.normalizer.claim(len(ids), only=ids)
            self._claimed += len(claimed)
            self._settled_at.append(self._claimed)
            if claimed:
                return claimed
        return []

    def _item(self, raw: bytes) -> RawInput:
        return RawInput(
            connector=CONNECTOR,
            channel=MAIL_CHANNEL,
            source_key=source_key(raw),
            payload=raw,
            envelope={"import": self.origin},
            acknowledge=False,
        )


def _count(summary: ImportSummary, stored: list[Stored], states: dict[int, str]) -> None:
    """One batch's messages in the summary, by what became of each."""
    counted: set[int] = set()
    for result in stored:
        summary.read += 1
        state = states.get(result.intake_id) if result.intake_id not in counted else None
        counted.add(result.intake_id)
        if state == "done":
            summary.imported += 1
        elif state == "dead":
            summary.dead_lettered += 1
        elif state == "duplicate" or result.duplicate:
            summary.duplicates += 1
        else:
            summary.elsewhere += 1


def _audit(engine: Engine, action: str, after: dict[str, object]) -> None:
    with write(engine) as conn:
        audit.append(conn, actor="import", action=action, after=after)
