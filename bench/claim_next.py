"""Claim-next and queue-page latency with 1,000,000 cases on PostgreSQL.

Each figure is a ratio against a bare indexed SELECT of the same rows, timed in the same run
on the same connection pool, so the machine's speed cancels out:
- claim-next (lease the top unclaimed case, with its audit row and its queue item) against
  the plain `SELECT ... ORDER BY due_at ... LIMIT 1` that finds that very case;
- a queue page (50 cases with channels, message counts, contacts and leases) against the
  plain keyset `SELECT` of the same 50 rows.
It also runs 16 agents at once (after 16 bare SELECTs at once, their second baseline),
samples what their backends wait on (`pg_stat_activity`: the lock wait share), and shows
why the cases table wants vacuuming: every claim and resolve leaves dead tuples at the head
of the queue index that SKIP LOCKED walks.

    .venv/bin/python bench/claim_next.py [--cases 1000000] [--samples 2000] [--teams 4]

`--teams N` puts the agents in N teams (agent i in team i mod N) and routes the open cases
to them in turn, so claim-next walks its team tiers (docs/agents/teams.md) and the queue
item names the case's team; without it no agent is in a team and no case has one.

Needs PostgreSQL (PARITY_BENCH_PG, else PARITY_TEST_PG, else postgres@127.0.0.1:5432). It
creates and drops its own database. Not run by CI: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, create_engine, func, insert, select, text, tuple_

from inbox import casework, migrate
from inbox.accounts import Principal
from inbox.db import make_engine
from inbox.models import Case, Team, TeamMember, User
from inbox.queries import OPEN_STATUSES, queue_order

ADMIN = os.environ.get(
    "PARITY_BENCH_PG",
    os.environ.get("PARITY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
)
AGENTS = 16


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50) * 1000,
        "p95": percentile(values, 95) * 1000,
        "p99": percentile(values, 99) * 1000,
        "mean": statistics.fmean(values) * 1000,
    }


def load(engine: Engine, cases: int) -> None:
    """Bulk-load contacts, identities, cases and one message per case with generate_series.

    A fifth of the cases are open (new, open, pending customer), the rest resolved: a store
    that has been in use for a while. Due times spread over 30 days.
    """
    contacts = max(1, cases // 2)
    # Only integers are formatted into these statements.
    statements = [
        f"""INSERT INTO contacts (name, created_at)
            SELECT 'Customer ' || g, now() FROM generate_series(1, {contacts}) g""",  # noqa: S608
        """INSERT INTO identities (kind, handle, display_name, contact_id, verified, facts,
                                   created_at)
            SELECT 'email', 'customer' || id || '@example.org', name, id, false, '{}', now()
            FROM contacts""",
        f"""INSERT INTO cases (reference, token, contact_id, status, channel, subject, due_at,
                               first_inbound_at, last_activity_at, created_at, followups)
            SELECT 'C-' || lpad(g::text, greatest(6, length(g::text)), '0'), 'abcdefghijkl',
                   1 + (g % {contacts}),
                   CASE WHEN g % 10 = 0 THEN 'new' WHEN g % 20 = 1 THEN 'open'
                        WHEN g % 20 = 3 THEN 'pending_customer' ELSE 'resolved' END,
                   (ARRAY['email','sms','voice','twitter','reddit'])[1 + g % 5],
                   'Case number ' || g,
                   t + interval '4 hours', t, t, t, 0
            FROM (SELECT g, timestamp '2026-10-01' + (g * 2591.0 / {cases}) * interval '1 second'
                         * 1000 AS t
                  FROM generate_series(1, {cases}) g) s""",  # noqa: S608
        """INSERT INTO messages (case_id, identity_id, channel, direction, visibility, dedup_key,
                                 from_handle, from_name, subject, text, received_at, thread,
                                 meta)
            SELECT c.id, c.contact_id, c.channel, 'inbound', 'private', 'bench:' || c.id,
                   'customer' || c.contact_id || '@example.org', '', c.subject,
                   'I cannot log in to my account since yesterday, case ' || c.id,
                   c.first_inbound_at, '{}', '{}'
            FROM cases c""",
    ]
    with engine.begin() as conn:
        for statement in statements:
            started = time.perf_counter()
            conn.execute(text(statement))
            print(
                f"  {statement.split()[2]:<12} {time.perf_counter() - started:6.1f} s", flush=True
            )


def vacuum(engine: Engine, tables: tuple[str, ...] = ("cases",)) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.execute(text(f"VACUUM (ANALYZE) {table}"))


def agents(engine: Engine) -> list[Principal]:
    out = []
    with engine.begin() as conn:
        for i in range(AGENTS):
            user_id = conn.execute(
                insert(User)
                .values(
                    name=f"agent{i:02d}",
                    role="agent",
                    password_hash="!",  # noqa: S106 - matches no password: never logs in
                    disabled=False,
                    created_at=datetime.now(UTC),
                )
                .returning(User.id)
            ).scalar_one()
            out.append(Principal(id=user_id, name=f"agent{i:02d}", role="agent", via="token"))
    return out


def into_teams(engine: Engine, team: list[Principal], count: int) -> None:
    """Agent i into team i mod `count`, open case n to team n mod `count`; nothing when the
    (kept) database has its teams already."""
    with engine.begin() as conn:
        if conn.execute(select(Team.id).limit(1)).first() is not None:
            return
        ids = [
            conn.execute(
                insert(Team)
                .values(name=f"team{k:02d}", created_at=datetime.now(UTC))
                .returning(Team.id)
            ).scalar_one()
            for k in range(count)
        ]
        for i, agent in enumerate(team):
            conn.execute(
                insert(TeamMember).values(
                    team_id=ids[i % count], user_id=agent.id, added_at=datetime.now(UTC)
                )
            )
        conn.execute(
            text(
                "UPDATE cases SET team_id = (CAST(:ids AS bigint[]))[1 + id % :n] "
                "WHERE status = ANY(:open)"
            ),
            {"ids": ids, "n": count, "open": list(OPEN_STATUSES)},
        )


def top_claimable(engine: Engine, principal: Principal) -> int | None:
    """The bare indexed SELECT: the row claim-next is about to take, without taking it."""
    with engine.connect() as conn:
        row = conn.execute(
            select(Case)
            .where(casework._claimable(principal, datetime.now(UTC)))
            .order_by(*queue_order())
            .limit(1)
        ).one_or_none()
        conn.rollback()
        return None if row is None else int(row.id)


def measure_claims(engine: Engine, team: list[Principal], samples: int) -> dict[str, Any]:
    claim: list[float] = []
    bare: list[float] = []
    mismatched = 0
    for i in range(samples):
        agent = team[i % len(team)]
        started = time.perf_counter()
        expected = top_claimable(engine, agent)
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        case = casework.claim_next(engine, agent)
        claim.append(time.perf_counter() - started)
        assert case is not None
        if int(case["reference"][2:]) != expected:
            mismatched += 1
        # Done with it (untimed), so the next claim takes the next case.
        casework.set_status(engine, agent, case["reference"], "resolved")
    return {"claim": summary(claim), "bare": summary(bare), "mismatched": mismatched}


def measure_pages(engine: Engine, agent: Principal, pages: int, size: int = 50) -> dict[str, Any]:
    page_times: list[float] = []
    bare: list[float] = []
    cursor: str | None = None
    for _ in range(pages):
        query = select(Case).where(Case.status.in_(OPEN_STATUSES))
        if cursor:
            due, first, case_id = casework.decode_cursor(cursor)
            query = query.where(
                tuple_(Case.due_at, Case.first_inbound_at, Case.id)
                > tuple_(casework._utc(due), casework._utc(first), case_id)
            )
        started = time.perf_counter()
        with engine.connect() as conn:
            rows = list(conn.execute(query.order_by(*queue_order()).limit(size)))
            conn.rollback()
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        page = casework.queue_page(engine, agent, limit=size, cursor=cursor)
        page_times.append(time.perf_counter() - started)
        assert [c["reference"] for c in page["cases"]] == [r.reference for r in rows]
        cursor = page["next_cursor"]
    return {"page": summary(page_times), "bare": summary(bare)}


def _crowd_worker(
    url: str, agent: Principal, claims: int, start: Any, bare: bool = False
) -> list[tuple[str, float]]:
    """One agent in its own process (as separate web processes would be): no shared GIL.

    `bare`: the same agent only runs the bare SELECT, 16 at once: the baseline of what 16
    processes sharing these cores cost without any claim, lock or write.
    """
    engine = make_engine(url, pool_size=1)
    out = []
    start.wait()
    if bare:
        for n in range(claims):
            began = time.perf_counter()
            top_claimable(engine, agent)
            out.append((str(n), time.perf_counter() - began))
        engine.dispose()
        return out
    for _ in range(claims):
        began = time.perf_counter()
        case = casework.claim_next(engine, agent)
        spent = time.perf_counter() - began
        assert case is not None
        out.append((case["reference"], spent))
        casework.set_status(engine, agent, case["reference"], "resolved")
    engine.dispose()
    return out


def _sample_waits(url: str, stop: threading.Event, seen: Counter[str]) -> None:
    """What the agents' backends are doing, every 10 ms: running, or waiting and on what.

    `Lock:*` is a wait for a lock (advisory, a row's transaction, a tuple); `Client:*` is a
    backend waiting for its agent process (round trips, and the agent's CPU time).
    """
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    query = text(
        "SELECT coalesce(wait_event_type || ':' || wait_event, 'running') FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend' AND state <> 'idle'"
    )
    with engine.connect() as conn:
        while not stop.is_set():
            seen.update(conn.execute(query).scalars())
            stop.wait(0.01)
    engine.dispose()


def measure_crowd(
    url: str, team: list[Principal], claims_each: int, bare: bool = False
) -> dict[str, Any]:
    """16 agents claiming and resolving at once, each in its own process and connection."""
    context = multiprocessing.get_context("fork")
    load_before = tuple(round(x, 2) for x in os.getloadavg())
    waits: Counter[str] = Counter()
    stop = threading.Event()
    with context.Manager() as manager:
        start = manager.Barrier(len(team) + 1)
        with context.Pool(len(team)) as pool:
            pending = [
                pool.apply_async(_crowd_worker, (url, agent, claims_each, start, bare))
                for agent in team
            ]
            start.wait()
            began = time.perf_counter()
            sampler = threading.Thread(target=_sample_waits, args=(url, stop, waits))
            sampler.start()
            results = [p.get() for p in pending]
            wall = time.perf_counter() - began
            stop.set()
            sampler.join()
    load_after = tuple(round(x, 2) for x in os.getloadavg())
    handed = [ref for result in results for ref, _ in result]
    times = [spent for result in results for _, spent in result]
    assert bare or len(handed) == len(set(handed)), "a case went to two agents"
    return {
        "claim": summary(times),
        "claims_per_s": len(handed) / wall,
        "claims": len(handed),
        "load_before": load_before,
        "load_after": load_after,
        "waits": waits,
    }


def traced_round_trips(engine: Engine, action: Any) -> int:
    """Round trips of one call of `action`, counted in libpq's protocol trace.

    Each request the client sends and then waits on ends in a Query (simple protocol) or a
    Sync (extended protocol) message, so their number is the number of round trips,
    including the pool's pre-ping, BEGIN and COMMIT. The engine has one pooled connection.
    """
    from psycopg import pq

    with engine.connect() as conn:
        pgconn = conn.connection.driver_connection.pgconn  # type: ignore[union-attr]
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            action()
        finally:
            pgconn.untrace()
        trace.seek(0)
        sent = [line.split("\t") for line in trace.read().splitlines()]
    return sum(1 for f in sent if f[0] == "F" and f[2].strip() in ("Query", "Sync"))


def round_trips(url: str, agent: Principal) -> tuple[int, int]:
    """(claim-next, bare SELECT): round trips of one call each, on a warm connection."""
    engine = make_engine(url, pool_size=1)
    taken: list[str] = []

    def claim() -> None:
        case = casework.claim_next(engine, agent)
        assert case is not None
        taken.append(case["reference"])

    try:
        # Warm up: statements prepared (psycopg prepares after five runs), as in service.
        for _ in range(6):
            claim()
            top_claimable(engine, agent)
            casework.set_status(engine, agent, taken[-1], "resolved")
        claim_trips = traced_round_trips(engine, claim)
        casework.set_status(engine, agent, taken[-1], "resolved")
        return claim_trips, traced_round_trips(engine, lambda: top_claimable(engine, agent))
    finally:
        engine.dispose()


def dead_tuples(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'cases'")
            ).scalar_one()
        )


def row(name: str, measured: dict[str, float], base: dict[str, float]) -> str:
    return (
        f"| {name} | {measured['p50']:.2f} | {measured['p99']:.2f} | {base['p50']:.2f} | "
        f"{base['p99']:.2f} | {measured['p50'] / base['p50']:.1f}x | "
        f"{measured['p99'] / base['p99']:.1f}x |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument(
        "--teams", type=int, default=0, help="put the agents and the open cases in N teams"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--database", help="measure again on a database kept by an earlier --keep run"
    )
    args = parser.parse_args()

    name = args.database or f"parity_bench_{secrets.token_hex(3)}"
    keep = args.keep or bool(args.database)
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    if not args.database:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url, pool_size=AGENTS + 4)
    try:
        if args.database:
            with engine.connect() as conn:
                args.cases = conn.execute(select(text("count(*)")).select_from(Case)).scalar_one()
                team = [
                    Principal(id=r.id, name=r.name, role="agent", via="token")
                    for r in conn.execute(select(User.id, User.name).order_by(User.id))
                ]
        else:
            migrate.upgrade(engine)
            print(f"loading {args.cases:,} cases into {name} ...", flush=True)
            load(engine, args.cases)
            started = time.perf_counter()
            vacuum(engine, ("contacts", "identities", "cases", "messages"))
            print(f"  vacuum       {time.perf_counter() - started:6.1f} s", flush=True)
            team = agents(engine)
        if args.teams:
            into_teams(engine, team, args.teams)
            vacuum(engine)
        with engine.connect() as conn:
            open_cases = conn.execute(
                select(text("count(*)")).select_from(Case).where(Case.status.in_(OPEN_STATUSES))
            ).scalar_one()
        print(f"{open_cases:,} open cases of {args.cases:,}", flush=True)

        # Warm the caches the same way for both sides.
        measure_claims(engine, team, 50)
        measure_pages(engine, team[0], 20)

        vacuum(engine)
        claims = measure_claims(engine, team, args.samples)
        pages = measure_pages(engine, team[0], args.pages)
        trips = round_trips(url, team[0])
        engine.dispose()  # no pooled connection may cross the fork
        crowd_bare = measure_crowd(url, team, max(1, args.samples // AGENTS), bare=True)
        crowd = measure_crowd(url, team, max(1, args.samples // AGENTS))
        dead_before = dead_tuples(engine)
        # Without vacuum: the head of the queue is now a graveyard of claimed-and-resolved
        # row versions that the index scan must step over.
        unvacuumed = measure_claims(engine, team, args.samples // 2)
        vacuum(engine)
        vacuumed = measure_claims(engine, team, args.samples // 2)

        print()
        # Said from the store: a kept database keeps the teams an earlier run made.
        with engine.connect() as conn:
            in_teams = conn.execute(select(func.count()).select_from(Team)).scalar_one()
        teams = f", agents and open cases in {in_teams} teams" if in_teams else ", no teams"
        print(
            f"{args.cases:,} cases ({open_cases:,} open), PostgreSQL, {args.samples} samples"
            + teams
        )
        print()
        print(
            "| operation | p50 ms | p99 ms | bare SELECT p50 ms | bare SELECT p99 ms | "
            "ratio p50 | ratio p99 |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        print(row("claim-next (1 agent)", claims["claim"], claims["bare"]))
        print(row("queue page, 50 cases", pages["page"], pages["bare"]))
        print(row("claim-next (16 agents at once)", crowd["claim"], claims["bare"]))
        print()
        c16, bare = crowd["claim"], claims["bare"]
        print(
            f"16 agents at once against the bare SELECT: p50 {c16['p50']:.2f} ms "
            f"({c16['p50'] / bare['p50']:.1f}x), p95 {c16['p95']:.2f} ms "
            f"({c16['p95'] / bare['p95']:.1f}x); goal p50 within 5x: "
            f"{'met' if c16['p50'] / bare['p50'] <= 5 else 'NOT met'}"
        )
        cb = crowd_bare["claim"]
        print(
            f"16 bare SELECTs at once (same processes, no claim): p50 {cb['p50']:.2f} ms, "
            f"p95 {cb['p95']:.2f} ms; claim-next at 16 against it: "
            f"p50 {c16['p50'] / cb['p50']:.1f}x, p95 {c16['p95'] / cb['p95']:.1f}x"
        )
        print(
            "load average (1, 5, 15 min) before/after the 16 agents: "
            f"{crowd['load_before']} / {crowd['load_after']}"
        )
        total = sum(crowd["waits"].values()) or 1
        locks = sum(n for what, n in crowd["waits"].items() if what.startswith("Lock:"))
        print(
            f"agents' backends sampled every 10 ms while the 16 ran: {total} samples, "
            f"{100 * locks / total:.1f}% waiting for a lock; top: "
            + ", ".join(
                f"{what} {100 * n / total:.1f}%" for what, n in crowd["waits"].most_common(6)
            )
        )
        print(f"round trips: claim-next {trips[0]}, bare SELECT {trips[1]}")
        print(
            f"16 agents at once: {crowd['claims_per_s']:.0f} claims/s "
            f"({crowd['claims']} claims, each also resolved), no case handed out twice"
        )
        print(
            f"claim-next took the row the bare SELECT found: "
            f"{args.samples - claims['mismatched']}/{args.samples}"
        )
        print(
            f"dead tuples in cases before vacuum: {dead_before:,}; claim-next p50/p99 "
            f"{unvacuumed['claim']['p50']:.2f}/{unvacuumed['claim']['p99']:.2f} ms before, "
            f"{vacuumed['claim']['p50']:.2f}/{vacuumed['claim']['p99']:.2f} ms after VACUUM"
        )
        goal = claims["claim"]["p99"] < 5.0
        print(f"goal claim-next p99 < 5 ms: {'met' if goal else 'NOT met'}")
        return 0
    finally:
        engine.dispose()
        if keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                    ),
                    {"n": name},
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
