"""What hashing each value costs: audit rows of form 2 (migration 0020) against form 1.

Form 2 rows have their HMAC over a keyed digest of every before/after value, so erasure can
drop a value and the chain still verifies (docs/architecture/audit.md#erasure). That is one
more HMAC per value. Two figures, each a ratio against form 1 measured in the same run:

- `row_hmac` alone, over realistic rows (an acknowledgement, a claim, a note, a tag change);
- `parity audit verify` over a SQLite store of N rows written with each form (the rows
  are the same; only their form and HMAC differ).

    .venv/bin/python bench/audit_forms.py [--rows 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert

from inbox import audit, migrate
from inbox.db import make_engine
from inbox.models import AuditChain, AuditLog

KEY = b"bench-" + b"k" * 32
ROWS: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = [
    (
        "acknowledgement.queued",
        None,
        {
            "outbox_id": 812,
            "channel": "email",
            "recipient": "zelda@example.org",
            "eta_at": "2026-12-08T10:00:00+00:00",
            "reason": "new case",
        },
    ),
    (
        "case.claimed",
        {"status": "new", "claimed_by": None, "assignee_id": None},
        {"status": "open", "claimed_by": 4, "assignee_id": 4, "via": "claim-next"},
    ),
    ("case.note", None, {"note_id": 77, "text": "Called back, she will send the receipt. " * 3}),
    ("case.tagged", {"tags": ["billing"]}, {"tags": ["billing", "vip"], "added": ["vip"]}),
]


def time_hmacs(form: int, repeat: int) -> float:
    at = datetime(2026, 12, 7, tzinfo=UTC)
    start = time.perf_counter()
    for i in range(repeat):
        action, before, after = ROWS[i % len(ROWS)]
        audit.row_hmac(
            "0" * 64, at, "user:ann", action, 5, before, after, KEY, chain=5, seq=i, form=form
        )
    return time.perf_counter() - start


def build_store(path: Path, rows: int, form: int) -> str:
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    at = datetime(2026, 12, 7, tzinfo=UTC)
    values = []
    prev: dict[int, tuple[int, str]] = {}
    for i in range(rows):
        chain = audit.NO_CASE  # rows about no case: no case rows needed
        seq, last = prev.get(chain, (0, audit.GENESIS))
        action, before, after = ROWS[i % len(ROWS)]
        when = at + timedelta(seconds=i)
        digest = audit.row_hmac(
            last,
            when,
            "user:ann",
            action,
            None,
            before,
            after,
            KEY,
            chain=chain,
            seq=seq + 1,
            form=form,
        )
        values.append(
            {
                "id": i + 1,
                "at": when,
                "actor": "user:ann",
                "action": action,
                "case_id": None,
                "before": before,
                "after": after,
                "prev_hmac": last,
                "hmac": digest,
                "chain": chain,
                "seq": seq + 1,
                "form": form,
            }
        )
        prev[chain] = (seq + 1, digest)
    with engine.begin() as conn:
        conn.execute(insert(AuditLog), values)
        conn.execute(
            insert(AuditChain),
            [
                {"chain": c, "seq": s, "hmac": h, "row_id": 0, "sealed_seq": 0}
                for c, (s, h) in prev.items()
            ],
        )
    engine.dispose()
    return url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ["PARITY_AUDIT_KEY"] = KEY.decode()
    ratios = []
    for _ in range(args.runs):
        plain, digested = time_hmacs(1, 20000), time_hmacs(2, 20000)
        ratios.append(digested / plain)
    print(
        f"row_hmac, form 2 / form 1: median {statistics.median(ratios):.2f} over {args.runs} runs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        urls = {form: build_store(Path(tmp) / f"f{form}.db", args.rows, form) for form in (1, 2)}
        verify_ratios = []
        for _ in range(args.runs):
            took = {}
            for form, url in urls.items():
                engine = make_engine(url)
                start = time.perf_counter()
                with engine.connect() as conn:
                    result = audit.verify(conn)
                took[form] = time.perf_counter() - start
                assert result.ok and result.rows == args.rows, result
                engine.dispose()
            verify_ratios.append(took[2] / took[1])
    print(
        f"verify of {args.rows} rows on SQLite, form 2 / form 1: "
        f"median {statistics.median(verify_ratios):.2f} over {args.runs} runs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
