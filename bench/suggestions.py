"""Merge-suggestion cost per ingested message with 10,000 and with 1,000,000 open-case texts.

For each size, a SQLite store is filled with that many open cases, each with the MinHash
signature and LSH bands of a synthetic complaint (generated deterministically from a seeded
vocabulary and a few dozen topic phrases, so unrelated texts share common bigrams as real
complaints do). Then the same 300 new messages (a third of them near-duplicates of stored
texts, with small edits) are each indexed (`index_text`) and asked for their suggestions
(`suggestions_for`) in one write transaction, as the normalizer and the queue do. The sizes
are measured in turn for several rounds, baseline first in each. The figures are the mean
and median time per message (wall and this process's CPU time); the result is the ratio of
the 1M figures to the 10k figures, measured in the same run (flat means close to 1).

    .venv/bin/python bench/suggestions.py [--sizes 10000 1000000] [--messages 300]
        [--rounds 3] [--cache-mb 2] [--keep DIR]

Not run by CI: filling a million signatures takes minutes (two worker processes); --keep
keeps the filled stores in DIR and reuses them next time (upgraded to the current schema).
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

from sqlalchemy import delete, insert, select

from inbox import migrate, minhash, suggestions
from inbox.db import SQLITE_CACHE_MB, make_engine, write
from inbox.models import Case, CaseBand, CaseSignature

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
    return i, minhash.encode(values), len(parts), suggestions.buckets(values)


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
        "INSERT INTO case_signatures (case_id, hashvalues, shingles, scheme, updated_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [(i, v, n, minhash.OPH, at) for i, v, n, _b in batch],
    )
    db.executemany(
        "INSERT INTO case_bands (case_id, band, bucket) VALUES (?, ?, ?)",
        [(i, band, bucket) for i, _v, _n, b in batch for band, bucket in enumerate(b)],
    )
    db.commit()


def measure(path: Path, count: int, messages: int, cache_mb: int) -> dict[str, Any]:
    """Index and ask for each new message; the added cases are removed again at the end, so
    a store can be measured again (rounds) or kept for another run (--keep)."""
    engine = make_engine(f"sqlite:///{path}", sqlite_cache_mb=cache_mb)
    rnd = random.Random(7)
    texts = [
        edited(complaint(rnd.randrange(1, count + 1)), i) if i % 3 == 0 else complaint(10**9 + i)
        for i in range(messages)
    ]
    with write(engine) as conn:
        conn.exec_driver_sql(
            "INSERT OR IGNORE INTO contacts (id, name, created_at) VALUES (2, 'new', '2026-11-20')"
        )
    times: list[float] = []
    cpu: list[float] = []  # this process's CPU time: less swayed by other work on the machine
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
            start, start_cpu = time.perf_counter(), time.process_time()
            suggestions.index_text(conn, case_id, text)
            found += len(suggestions.suggestions_for(conn, [case_id])[case_id])
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    with write(engine) as conn:
        assert conn.execute(select(Case.id).where(Case.id == count + messages)).first()
        conn.execute(delete(CaseBand).where(CaseBand.case_id > count))
        conn.execute(delete(CaseSignature).where(CaseSignature.case_id > count))
        conn.execute(delete(Case).where(Case.id > count))
    engine.dispose()
    return {
        "cases": count,
        "times": times,
        "cpu": cpu,
        "mean_ms": statistics.fmean(times) * 1000,
        "p50_ms": statistics.median(times) * 1000,
        "suggested": found,
    }


def store(directory: Path, size: int) -> tuple[Path, float]:
    """The store for this size and the seconds it took: filled now, or kept from an earlier
    run with --keep and brought to the current schema (as a deployment would be)."""
    path = directory / f"s{size}.db"
    started = time.perf_counter()
    if path.exists():
        migrate.upgrade(make_engine(f"sqlite:///{path}"))
    else:
        fill(path, size)
    return path, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument(
        "--rounds", type=int, default=3, help="measure the sizes in turn this many times"
    )
    parser.add_argument("--cache-mb", type=int, default=SQLITE_CACHE_MB)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the filled stores here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {}
        for size in args.sizes:
            paths[size], filled = store(directory, size)
            print(f"{size:>9} open-case texts: store ready in {filled:.0f} s", flush=True)
        times: dict[int, list[float]] = {size: [] for size in args.sizes}
        cpu: dict[int, list[float]] = {size: [] for size in args.sizes}
        found: dict[int, int] = dict.fromkeys(args.sizes, 0)
        # Sizes in turn, baseline first in each round: the machine's load drifts, and a
        # ratio of two figures measured minutes apart would measure the drift.
        for round_ in range(1, args.rounds + 1):
            for size in args.sizes:
                result = measure(paths[size], size, args.messages, args.cache_mb)
                times[size].extend(result["times"])
                cpu[size].extend(result["cpu"])
                found[size] += result["suggested"]
                print(
                    f"round {round_} {size:>9}: {result['mean_ms']:.2f} ms mean, "
                    f"p50 {result['p50_ms']:.2f} ms, {result['suggested']} suggestions for "
                    f"{args.messages} messages ({args.messages // 3} near-duplicates)",
                    flush=True,
                )
    base = args.sizes[0]
    for label, series in (("wall", times), ("cpu", cpu)):
        summary = {
            size: (statistics.fmean(t) * 1000, statistics.median(t) * 1000)
            for size, t in series.items()
        }
        for size, (mean, p50) in summary.items():
            print(
                f"{label} {size:>9} open-case texts, all rounds: mean {mean:.2f} ms, "
                f"p50 {p50:.2f} ms, ratio to {base}: {mean / summary[base][0]:.2f} (mean), "
                f"{p50 / summary[base][1]:.2f} (p50); {found[size]} suggestions",
                flush=True,
            )


if __name__ == "__main__":
    main()
