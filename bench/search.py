"""Search p50/p99 at 1,000,000 messages, on PostgreSQL (tsvector + GIN) and SQLite (FTS5), as
ratios against a bare indexed query for the same terms, timed in the same run.

Each store is filled set-based (generate_series on PostgreSQL, a recursive CTE on SQLite;
no row goes through Python) with the same corpus: 100,000 contacts, each with an email
identity and one case of ten messages. A message is twelve words drawn log-uniformly from a
20,000-word vocabulary (word k about as common as 1/k, as in real text), plus planted words
of known frequency: "printer jam" in one message in 1,000, "refund" in one in 10, and
"zebracorn" in ten messages in all.

For each query, `inbox.search.search` (what /api/search and the search page run: references,
Message-IDs, handles, the text match, ranking, and the queue-row summaries of the results)
is timed against the bare indexed query every text search must make at least: the newest 200
messages whose words match, straight from the full-text index (`search_vector @@ tsquery`
on PostgreSQL, `messages_fts MATCH` on SQLite). The two alternate, query after query, so
both see the same machine load. The figures are p50 and p99 in milliseconds, and the ratio
search / bare per store.

    .venv/bin/python bench/search.py [--messages 1000000] [--repeats 60] [--only pg|sqlite]

Needs PostgreSQL (PARITY_BENCH_PG, else PARITY_TEST_PG, else postgres@127.0.0.1:5432); it
creates and drops its own database, and fills SQLite in a temporary directory. Not run by
CI: filling takes a few minutes per store.
"""

# The SQL here is built from this file's constants and integers only, never from input.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text

from bench.pg_scratch import scratch_database
from inbox import migrate, search
from inbox.accounts import Principal
from inbox.db import is_sqlite, make_engine

MESSAGES_PER_CASE = 10
VOCABULARY = 20_000
WORDS = 12
# (label, query): rare, medium and common words, two words, a handle and a reference.
QUERIES = [
    ("rare word (10 messages)", "zebracorn"),
    ("1 in 1,000 (printer)", "printer"),
    ("two words (printer jam)", "printer jam"),
    ("1 in 10 (refund)", "refund"),
    ("vocabulary word w57", "w57"),
    ("email handle", "user4242@example.org"),
    ("case reference", "C-004242"),
]
PRINCIPAL = Principal(id=0, name="bench", role="agent", via="cli")


def word(i: str, k: int) -> str:
    """SQL for word k of message i: log-uniform over the vocabulary, from a fixed hash of
    (i, k), so both stores get the same text without any random state."""
    u = f"((({i}) * 2654435761 + {k * 40503 + 17}) % 4294967296) / 4294967296.0"
    return f"'w' || CAST(floor(exp({u} * ln({VOCABULARY}))) AS INTEGER)"


def message_text(i: str) -> str:
    words = " || ' ' || ".join(word(i, k) for k in range(WORDS))
    return (
        f"{words}"
        f" || CASE WHEN ({i}) % 1000 = 0 THEN ' my printer jam again' ELSE '' END"
        f" || CASE WHEN ({i}) % 10 = 3 THEN ' please refund me' ELSE '' END"
        f" || CASE WHEN ({i}) % 100000 = 77 THEN ' a zebracorn ate it' ELSE '' END"
    )


def series(engine: Engine, n: int) -> tuple[str, str]:
    """(prefix, FROM clause) giving rows g.i = 1..n on this store."""
    if is_sqlite(engine):
        return (
            f"WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n}) ",
            "g",
        )
    return "", f"generate_series(1, {n}) AS g(i)"


def at(engine: Engine, seconds: str) -> str:
    """SQL for a stored timestamp `seconds` after 2026-01-01 (naive UTC, as the store keeps)."""
    if is_sqlite(engine):
        return f"strftime('%Y-%m-%d %H:%M:%f000', '2026-01-01', '+' || ({seconds}) || ' seconds')"
    return f"(timestamp '2026-01-01' + ({seconds}) * interval '1 second')"


def fill(engine: Engine, messages: int) -> None:
    cases = messages // MESSAGES_PER_CASE
    sqlite = is_sqlite(engine)
    json_empty = "'{}'" if sqlite else "'{}'::json"
    statements = []
    prefix, source = series(engine, cases)
    statements.append(
        f"INSERT INTO contacts (id, name, created_at) {prefix}"
        f"SELECT i, 'Customer ' || i, {at(engine, 'i')} FROM {source}"
    )
    statements.append(
        "INSERT INTO identities (id, kind, handle, display_name, contact_id, verified, facts,"
        f" created_at) {prefix}SELECT i, 'email', 'user' || i || '@example.org', "
        f"'Customer ' || i, i, {'1' if sqlite else 'true'}, {json_empty}, {at(engine, 'i')}"
        f" FROM {source}"
    )
    reference = (
        "'C-' || substr('000000' || i, -6, 6)"
        if sqlite
        else "'C-' || lpad(i::text, greatest(6, length(i::text)), '0')"
    )
    statements.append(
        "INSERT INTO cases (id, reference, token, contact_id, status, channel, subject, due_at,"
        " first_inbound_at, last_activity_at, created_at, followups)"
        f" {prefix}SELECT i, {reference}, 'abcdefghijkl', i,"
        " CASE WHEN i % 5 = 0 THEN 'resolved' ELSE 'open' END, 'email',"
        f" 'Question ' || i, {at(engine, 'i * 10 + 3600')}, {at(engine, 'i * 10')},"
        f" {at(engine, 'i * 10 + 9')}, {at(engine, 'i * 10')}, 0 FROM {source}"
    )
    prefix, source = series(engine, messages)
    case_of = f"((i - 1) / {MESSAGES_PER_CASE} + 1)"  # integer division on both stores
    statements.append(
        "INSERT INTO messages (id, case_id, identity_id, channel, direction, visibility,"
        " dedup_key, external_id, from_handle, from_name, subject, text, received_at, thread,"
        f" meta) {prefix}SELECT i, {case_of}, {case_of}, 'email',"
        " CASE WHEN i % 2 = 0 THEN 'outbound' ELSE 'inbound' END, 'private',"
        " 'bench:' || i, 'm' || i || '@bench.example', 'user' || "
        f"{case_of} || '@example.org', '', 'Question ' || {case_of}, {message_text('i')},"
        f" {at(engine, '(i - 1) * 1 + 0')}, {json_empty}, {json_empty} FROM {source}"
    )
    with engine.begin() as conn:
        if not sqlite:
            # Built once after the load instead of row by row: set-based all the way.
            conn.execute(text("DROP INDEX IF EXISTS ix_messages_search"))
        for statement in statements:
            started = time.perf_counter()
            conn.execute(text(statement))
            table = statement.split()[2]
            print(f"  {table:<11} {time.perf_counter() - started:7.1f} s", flush=True)
        if not sqlite:
            started = time.perf_counter()
            conn.execute(
                text("CREATE INDEX ix_messages_search ON messages USING gin (search_vector)")
            )
            print(f"  GIN index   {time.perf_counter() - started:7.1f} s", flush=True)
            for table in ("contacts", "identities", "cases", "messages"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    if sqlite:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("contacts", "identities", "cases", "messages"):
                conn.execute(text(f"VACUUM (ANALYZE) {table}"))


def bare(engine: Engine) -> Callable[[str], int]:
    """The bare indexed query: the newest 200 messages whose words match, nothing else."""
    if is_sqlite(engine):
        sql = text(
            "SELECT m.id FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
            " WHERE messages_fts MATCH :q ORDER BY m.received_at DESC, m.id DESC LIMIT 200"
        )
        make = search.fts5_query
    else:
        sql = text(
            "SELECT id FROM messages WHERE search_vector @@ to_tsquery('simple', :q)"
            " ORDER BY received_at DESC, id DESC LIMIT 200"
        )
        make = search.tsquery

    def run(query: str) -> int:
        with engine.connect() as conn:
            return len(conn.execute(sql, {"q": make(search.words(query))}).all())

    return run


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def measure(engine: Engine, repeats: int) -> list[dict[str, Any]]:
    plain = bare(engine)
    rows = []
    for label, query in QUERIES:
        full_times: list[float] = []
        bare_times: list[float] = []
        found = search.search(engine, PRINCIPAL, query)  # warm the caches once
        for _ in range(repeats):
            started = time.perf_counter()
            plain(query)
            bare_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            search.search(engine, PRINCIPAL, query)
            full_times.append(time.perf_counter() - started)
        rows.append(
            {
                "label": label,
                "results": len(found["results"]),
                "search_p50": percentile(full_times, 50) * 1000,
                "search_p99": percentile(full_times, 99) * 1000,
                "bare_p50": percentile(bare_times, 50) * 1000,
                "bare_p99": percentile(bare_times, 99) * 1000,
            }
        )
    return rows


def report(store: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{store}: milliseconds, search vs the bare indexed query (same run)")
    print(
        f"{'query':<26}{'cases':>6}{'search p50':>12}{'p99':>9}{'bare p50':>10}{'p99':>9}"
        f"{'p50 ratio':>11}{'p99 ratio':>10}"
    )
    for r in rows:
        print(
            f"{r['label']:<26}{r['results']:>6}{r['search_p50']:>12.1f}{r['search_p99']:>9.1f}"
            f"{r['bare_p50']:>10.1f}{r['bare_p99']:>9.1f}"
            f"{r['search_p50'] / r['bare_p50']:>11.2f}{r['search_p99'] / r['bare_p99']:>10.2f}"
        )
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)


def run_pg(messages: int, repeats: int) -> None:
    with scratch_database("parity_bench_search") as engine:
        print(f"PostgreSQL: loading {messages:,} messages", flush=True)
        fill(engine, messages)
        report("PostgreSQL (tsvector + GIN)", measure(engine, repeats))


def run_sqlite(messages: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="parity-bench-search-") as folder:
        engine = make_engine(f"sqlite:///{folder}/bench.db")
        try:
            migrate.upgrade(engine)
            print(f"SQLite: loading {messages:,} messages", flush=True)
            fill(engine, messages)
            report("SQLite (FTS5)", measure(engine, repeats))
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--only", choices=("pg", "sqlite"))
    args = parser.parse_args()
    if args.messages < 100_000 or args.messages % MESSAGES_PER_CASE:
        parser.error("--messages is at least 100000 and a multiple of 10")
    if args.only != "sqlite":
        run_pg(args.messages, args.repeats)
    if args.only != "pg":
        run_sqlite(args.messages, args.repeats)


if __name__ == "__main__":
    main()
