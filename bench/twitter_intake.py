"""Twitter intake throughput: a 5,000-mention backlog, against bare tweepy paging.

Both sides page through the same fake X server (tests/channels/twitter/fake_x.py) with the same
fields, expansions and page size, in the same run:
- baseline: tweepy's Client alone, paging with get_users_mentions and building its objects;
- Parity: TwitterConnector.poll_mentions, which also turns each tweet into a stored item
  (canonical JSON with its author) and commits every page with its checkpoint.
The figure is Parity's items per second as a ratio of the baseline's. Runs alternate and
the median is reported, so a noisy neighbour on the machine hits both sides alike.

    .venv/bin/python -m bench.twitter_intake [--items 5000] [--runs 3] [--pg URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tweepy
from sqlalchemy import create_engine, text

from connectors.twitter.api import TWEET_FIELDS, TWITTER_HOST, USER_FIELDS, RebaseAdapter
from connectors.twitter.auth import credentials
from connectors.twitter.intake import TwitterConnector
from connectors.twitter.settings import TwitterSettings
from inbox import migrate
from inbox.db import make_engine
from tests.channels.twitter.fake_x import ACCOUNT_ID, CREDENTIALS, FakeX, backlog


def bare_tweepy(base_url: str) -> int:
    client = tweepy.Client(
        consumer_key=CREDENTIALS["TWITTER_CONSUMER_KEY"],
        consumer_secret=CREDENTIALS["TWITTER_CONSUMER_SECRET"],
        access_token=CREDENTIALS["TWITTER_ACCESS_TOKEN"],
        access_token_secret=CREDENTIALS["TWITTER_ACCESS_TOKEN_SECRET"],
    )
    client.session.mount(TWITTER_HOST, RebaseAdapter(base_url, (10.0, 30.0)))
    count = 0
    token = None
    while True:
        page = client.get_users_mentions(
            ACCOUNT_ID,
            max_results=100,
            pagination_token=token,
            expansions=["author_id"],
            tweet_fields=TWEET_FIELDS,
            user_fields=USER_FIELDS,
            user_auth=True,
        )
        count += len(page.data or [])
        token = page.meta.get("next_token")
        if not token:
            return count


@contextmanager
def fresh_database(pg_admin: str | None, workdir: Path) -> Iterator[str]:
    if pg_admin is None:
        path = workdir / f"bench-{secrets.token_hex(4)}.db"
        yield f"sqlite:///{path}"
        return
    name = f"parity_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(pg_admin, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def parity_intake(base_url: str, url: str) -> tuple[int, float]:
    """Stored items and seconds, timed from the first request to the last commit."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    settings = TwitterSettings(enabled=True, api_base_url=base_url, user_id=ACCOUNT_ID)
    creds = credentials(settings, CREDENTIALS)
    assert creds is not None
    connector = TwitterConnector(settings, engine, creds, instance="bench")
    try:
        started = time.perf_counter()
        stored = asyncio.run(connector.poll_mentions(asyncio.Event()))
        return stored, time.perf_counter() - started
    finally:
        connector.api.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg", help="PostgreSQL admin URL: measure Parity on PostgreSQL too")
    args = parser.parse_args()

    fake = FakeX()
    fake.limits = {name: 1_000_000 for name in fake.limits}  # measure paging, not waiting
    backlog(fake, args.items)
    base = fake.start()
    stores: list[tuple[str, str | None]] = [("SQLite", None)]
    if args.pg:
        stores.append(("PostgreSQL", args.pg))
    try:
        bare_tweepy(base)  # warm up both sides' imports and connections
        with tempfile.TemporaryDirectory() as tmp:
            for label, pg in stores:
                baseline: list[float] = []
                ours: list[float] = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    got = bare_tweepy(base)
                    baseline.append(got / (time.perf_counter() - started))
                    assert got == args.items, got
                    with fresh_database(pg, Path(tmp)) as url:
                        stored, seconds = parity_intake(base, url)
                        ours.append(stored / seconds)
                    assert stored == args.items, stored
                bare, mine = statistics.median(baseline), statistics.median(ours)
                print(
                    f"{label}: {args.items} mentions, median of {args.runs} runs: "
                    f"bare tweepy {bare:,.0f} items/s, Parity intake {mine:,.0f} items/s, "
                    f"ratio {mine / bare:.2f}"
                )
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
