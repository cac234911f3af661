"""Merge-suggestion cost per ingested message with 10,000 and with 1,000,000 open-case texts.

For each size, a SQLite store is filled with that many open cases, each with the MinHash
signature and LSH bands of a synthetic complaint (generated deterministically from a seeded
vocabulary and a few dozen topic phrases, so unrelated texts share common bigrams as real
complaints do). Then the same 300 new messages (a third of them near-duplicates of stored
texts, with small edits) are each indexed (`index_text`) and asked for their suggestions
(`suggestions_for`) in one write transaction, as the normalizer and the queue do. The figure
is the mean time per message; the result is the ratio of the 1M figure to the 10k figure,
measured in the same run (flat means close to 1).

    .venv/bin/python bench/suggestions.py [--sizes 10000 1000000] [--messages 300]

Not run by CI: filling a million signatures takes minutes (two worker processes).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select

from inbox import migrate, suggestions
from inbox.db import make_engine, write
from inbox.models import Case

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
_VOCAB = [f"w{i}" for i in range(4000)]
_TOPICS = [
    "i cannot log in to my account",
    "the reset email never arrives",
    "you charged my card twice",
    "please refund the second charge",
    "my order was marked as delivered",
    "the app crashes when i open",
    "after the latest update",
    "i want to cancel my plan",
    "the tracking page shows",
    "my two factor codes stopped arriving",
]


def complaint(seed: int) -> str:
    """A deterministic synthetic complaint: two topic phrases and 30 vocabulary words."""
    rnd = random.Random(seed)
    words = rnd.choices(_VOCAB, k=30)
    for phrase in rnd.sample(_TOPICS, 2):
        at = rnd.randrange(len(words))
        words[at:at] = phrase.split()
    return " ".join(words)


def edited(text: str, seed: int) -> str:
    """The same complaint with one word in twenty changed."""
    rnd = random.Random(seed)
    words = text.split()
    for i in rnd.sample(range(len(words)), max(1, len(words) // 20)):
        words[i] = rnd.choice(_VOCAB)
    return " ".join(words)


def _row(i: int) -> tuple[int, bytes, int, list[int]]:
    parts = suggestions.shingles(complaint(i))
    values = suggestions.signature(parts)
    return i, values.astype("<u8").tobytes(), len(parts), suggestions.buckets(values)


def fill(path: Path, count: int) -> None:
    url = f"sqlite:///{path}"
    migrate.upgrade(make_engine(url))
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("DROP INDEX ix_case_bands_probe")
    db.execute("DROP INDEX ix_case_bands_case_id")
    db.execute("INSERT INTO contacts (id, name, created_at) VALUES (1, 'bench', '2026-11-20')")
    at = T0.replace(tzinfo=None).isoformat(sep=" ")
    with multiprocessing.Pool(2) as pool:
        batch: list[tuple[int, bytes, int, list[int]]] = []
        for row in pool.imap(_row, range(1, count + 1), chunksize=2000):
            batch.append(row)
            if len(batch) == 20000:
                _insert(db, batch, at)
                batch = []
        if batch:
            _insert(db, batch, at)
    db.execute("CREATE INDEX ix_case_bands_probe ON case_bands (band, bucket, case_id)")
    db.execute("CREATE INDEX ix_case_bands_case_id ON case_bands (case_id)")
    db.commit()
    db.execute("ANALYZE")
    db.close()


def _insert(
    db: sqlite3.Connection, batch: list[tuple[int, bytes, int, list[int]]], at: str
) -> None:
    # Each case belongs to a contact of its own in spirit; one contact row is enough here
    # because the bench's new messages come from contact 2 (never "the same person").
    db.executemany(
        "INSERT INTO cases (id, reference, token, contact_id, status, channel, subject, due_at,"
        " first_inbound_at, last_activity_at, created_at, followups)"
        " VALUES (?, ?, 'abcdefghijkl', 1, 'open', 'email', '', ?, ?, ?, ?, 0)",
        [(i, f"C-{i:07d}", at, at, at, at) for i, _v, _n, _b in batch],
    )
    db.executemany(
        "INSERT INTO case_signatures (case_id, hashvalues, shingles, updated_at)"
        " VALUES (?, ?, ?, ?)",
        [(i, v, n, at) for i, v, n, _b in batch],
    )
    db.executemany(
        "INSERT INTO case_bands (case_id, band, bucket) VALUES (?, ?, ?)",
        [(i, band, bucket) for i, _v, _n, b in batch for band, bucket in enumerate(b)],
    )
    db.commit()


def measure(path: Path, count: int, messages: int) -> dict[str, Any]:
    engine = make_engine(f"sqlite:///{path}")
    rnd = random.Random(7)
    texts = [
        edited(complaint(rnd.randrange(1, count + 1)), i) if i % 3 == 0 else complaint(10**9 + i)
        for i in range(messages)
    ]
    with write(engine) as conn:
        conn.exec_driver_sql(
            "INSERT INTO contacts (id, name, created_at) VALUES (2, 'new', '2026-11-20')"
        )
    times: list[float] = []
    found = 0
    for i, text in enumerate(texts):
        case_id = count + 1 + i
        with write(engine) as conn:
            conn.execute(
                insert(Case).values(
                    id=case_id,
                    reference=f"C-{case_id:07d}",
                    token="abcdefghijkl",  # noqa: S106 - a case token, not a secret here
                    contact_id=2,
                    status="open",
                    channel="email",
                    subject="",
                    due_at=T0,
                    first_inbound_at=T0 + timedelta(hours=1),
                    last_activity_at=T0,
                    created_at=T0,
                    followups=0,
                )
            )
            start = time.perf_counter()
            suggestions.index_text(conn, case_id, text)
            found += len(suggestions.suggestions_for(conn, [case_id])[case_id])
            times.append(time.perf_counter() - start)
    with engine.connect() as conn:
        assert conn.execute(select(Case.id).where(Case.id == count + messages)).first()
    engine.dispose()
    return {
        "cases": count,
        "mean_ms": statistics.fmean(times) * 1000,
        "p50_ms": statistics.median(times) * 1000,
        "suggested": found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"s{size}.db"
            started = time.perf_counter()
            fill(path, size)
            filled = time.perf_counter() - started
            result = measure(path, size, args.messages)
            result["fill_s"] = filled
            results.append(result)
            print(
                f"{size:>9} open-case texts: {result['mean_ms']:.2f} ms per message (mean), "
                f"p50 {result['p50_ms']:.2f} ms, {result['suggested']} suggestions for "
                f"{args.messages} messages, filled in {filled:.0f} s",
                flush=True,
            )
            path.unlink()
    base = results[0]
    for result in results[1:]:
        print(
            f"ratio {result['cases']}/{base['cases']}: "
            f"{result['mean_ms'] / base['mean_ms']:.2f} (mean), "
            f"{result['p50_ms'] / base['p50_ms']:.2f} (p50)"
        )


if __name__ == "__main__":
    main()
