"""Reddit intake benchmark: Parity's poller against bare praw on the same fake listings, one run.

    .venv/bin/python bench/reddit_intake.py                 # SQLite and PostgreSQL
    .venv/bin/python bench/reddit_intake.py --db sqlite

The local fake Reddit (tests/channels/reddit/reddit_fake.py) serves a backlog of 5,000
submissions in one watched subreddit, 100 per page as Reddit does, with a request budget
large enough that praw's own pacing never sleeps (pacing would measure the budget, not the
code). Then, in alternating rounds:
- baseline: bare praw iterates `subreddit.new(limit=None)` through the whole backlog,
  building its objects and nothing else;
- Parity: a fresh connector, on a fresh database, polls the same backlog: every page through
  praw, the keyword and own-item checks, karma lookups (the default 10 per poll), and one
  durable commit of all 5,000 items with the checkpoint.

Reported per database: items per second of each, and Parity's as a ratio of bare praw's
(the median of `--rounds` pairs, so a noisy neighbour hits both). With `--normalize`, also
how fast the normalizer then turned the backlog into messages and cases (first round only;
it is the shared normalizer's figure, not the connector's). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import praw  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from connectors.reddit.intake import RedditConnector  # noqa: E402
from connectors.reddit.settings import RedditSettings  # noqa: E402
from connectors.registry import ConnectorsSettings, ack_route_table, parser_table  # noqa: E402
from inbox import migrate  # noqa: E402
from inbox.config import StoreSettings  # noqa: E402
from inbox.db import make_engine  # noqa: E402
from inbox.models import Intake  # noqa: E402
from normalizer.worker import Normalizer  # noqa: E402
from tests.channels.reddit.reddit_fake import FakeReddit  # noqa: E402

PG_ADMIN = os.environ.get("PARITY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SUB = "BenchSub"
_WORDS = [
    "account",
    "locked",
    "password",
    "reset",
    "phone",
    "stolen",
    "cannot",
    "login",
    "two",
    "factor",
    "code",
    "never",
    "arrives",
    "billing",
    "charged",
    "twice",
    "refund",
    "please",
    "urgent",
    "since",
    "yesterday",
    "hacked",
    "email",
    "changed",
    "outage",
]


def backlog(fake: FakeReddit, count: int, authors: int) -> None:
    start = time.time() - count
    rng = random.Random(1795165200)
    for n in range(count):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(12, 60)))
        child = fake.submission(
            author=f"bench_user_{n % authors}",
            title=f"{rng.choice(_WORDS).capitalize()} {rng.choice(_WORDS)} issue #{n}",
            selftext=words,
            created=start + n,
            sub=SUB,
        )
        fake.add(f"r/{SUB.lower()}/new", child)
    for n in range(authors):
        fake.users[f"bench_user_{n}"] = {
            "kind": "t2",
            "data": {"name": f"bench_user_{n}", "link_karma": n * 7, "comment_karma": n * 31},
        }


def bare_praw(fake: FakeReddit) -> tuple[int, float]:
    reddit = praw.Reddit(**fake.praw_kwargs())
    reddit.user.me()  # sign in outside the timing, as the connector does
    started = time.perf_counter()
    count = sum(1 for _ in reddit.subreddit(SUB).new(limit=None))
    return count, time.perf_counter() - started


def parity_poll(fake: FakeReddit, url: str, normalize: bool) -> tuple[int, float, float | None]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    settings = RedditSettings(
        enabled=True,
        oauth_url=fake.url,
        reddit_url=fake.url,
        subreddits=[SUB],
        inbox=False,
        watch_comments=False,
        initial_lookback_hours=0,
    )
    reddit = RedditConnector(settings, engine, fake.environ(), deliver=False)
    reddit.connect()
    started = time.perf_counter()
    report = reddit.poll_once()
    elapsed = time.perf_counter() - started
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(Intake)).scalar_one()
    assert stored == report.stored, (stored, report)
    normalized = None
    if normalize:
        started = time.perf_counter()
        # As the daemon's worker does: every new case is acknowledged as it is opened.
        Normalizer(
            engine,
            StoreSettings(),
            parsers=parser_table(),
            ack_routes=ack_route_table(ConnectorsSettings(reddit=settings)),
        ).drain()
        normalized = time.perf_counter() - started
    engine.dispose()
    return stored, elapsed, normalized


class Database:
    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.made: list[str] = []

    def fresh(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.workdir / f'bench-{secrets.token_hex(4)}.db'}"
        name = f"parity_bench_{os.getpid()}_{secrets.token_hex(3)}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.made.append(name)
        return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"

    def cleanup(self) -> None:
        if not self.made:
            return
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.made:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def run(
    kind: str, fake: FakeReddit, items: int, rounds: int, workdir: Path, normalize: bool
) -> dict[str, Any]:
    db = Database(kind, workdir)
    baseline: list[float] = []
    ours: list[float] = []
    rates: list[float] = []
    try:
        for round_ in range(rounds):
            count, seconds = bare_praw(fake)
            assert count == items, count
            baseline.append(count / seconds)
            stored, seconds, normalized = parity_poll(fake, db.fresh(), normalize and not round_)
            assert stored == items, stored
            ours.append(stored / seconds)
            if normalized is not None:
                rates.append(stored / normalized)
    finally:
        db.cleanup()
    base, mine = statistics.median(baseline), statistics.median(ours)
    return {
        "database": kind,
        "items": items,
        "rounds": rounds,
        "bare_praw_items_per_s": round(base),
        "parity_items_per_s": round(mine),
        "ratio": round(mine / base, 3),
        "normalized_items_per_s": round(rates[0]) if rates else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--authors", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--normalize", action="store_true", help="also time the normalizer")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp,
        FakeReddit(load_fixtures=False, budget=10**9) as fake,
    ):
        backlog(fake, args.items, args.authors)
        for kind in kinds:
            results.append(run(kind, fake, args.items, args.rounds, Path(tmp), args.normalize))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(
            f"{r['database']:>10}: {r['items']} items, median of {r['rounds']} rounds: "
            f"bare praw {r['bare_praw_items_per_s']}/s, Parity intake "
            f"{r['parity_items_per_s']}/s, ratio {r['ratio']}"
            + (
                f"; then normalized at {r['normalized_items_per_s']}/s"
                if r["normalized_items_per_s"]
                else ""
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
