"""Sixteen agents calling claim-next at once, each on its own connection: no case goes to
two agents and none is skipped. PostgreSQL is the store this must hold on (SKIP LOCKED);
SQLite runs the same test through its conditional UPDATE."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import func, select

from inbox import audit, casework
from inbox.accounts import Principal
from inbox.db import make_engine
from inbox.models import AuditLog, Case
from tests.support.inbox_helpers import bulk_cases, make_user

AGENTS = 16


def test_sixteen_agents_claim_next_at_once(db_url, engine):
    count = 192 if engine.dialect.name == "postgresql" else 64
    case_ids = bulk_cases(engine, count)
    agents = [
        Principal(
            id=make_user(engine, f"agent{i:02d}"), name=f"agent{i:02d}", role="agent", via="token"
        )
        for i in range(AGENTS)
    ]
    # A pool as large as the crowd: every agent really has a connection of its own.
    shared = make_engine(db_url, pool_size=AGENTS + 2, busy_timeout_ms=30000)
    start = threading.Barrier(AGENTS)
    taken: dict[str, list[int]] = {a.name: [] for a in agents}
    errors: list[BaseException] = []
    inside = {"now": 0, "most": 0}
    lock = threading.Lock()

    def work(agent: Principal) -> None:
        try:
            start.wait()
            while True:
                with lock:
                    inside["now"] += 1
                    inside["most"] = max(inside["most"], inside["now"])
                case = casework.claim_next(shared, agent)
                with lock:
                    inside["now"] -= 1
                if case is None:
                    return
                assert case["lease"]["holder"] == agent.name
                taken[agent.name].append(int(case["reference"][2:]))
                # Finish it (which returns the lease) and ask for the next one.
                casework.set_status(shared, agent, case["reference"], "resolved")
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    shared.dispose()
    assert not errors, errors
    handed = [case_id for ids in taken.values() for case_id in ids]
    twice = [case_id for case_id, n in Counter(handed).items() if n > 1]
    assert twice == []  # no case went to two agents
    assert sorted(handed) == sorted(case_ids)  # and none was skipped
    assert inside["most"] > 1  # the calls really overlapped
    if engine.dialect.name == "postgresql":
        # Row locks: the agents really share the queue. (SQLite has one writer lock, and a
        # committing agent may take it again before the sleeping ones wake: one agent can
        # be handed every case there, one at a time, which is still correct.)
        assert sum(1 for ids in taken.values() if ids) > 1
    # Each agent was handed cases in queue order (due time), never out of it.
    with engine.connect() as conn:
        due = {r.id: r.due_at for r in conn.execute(select(Case.id, Case.due_at))}
        claimed = conn.execute(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "case.claimed")
        ).scalar_one()
        still_open = conn.execute(
            select(func.count()).select_from(Case).where(Case.status != "resolved")
        ).scalar_one()
        # Claims and resolves all appended to one chain at once; it must still verify.
        chain = audit.verify(conn)
    for ids in taken.values():
        assert [due[i] for i in ids] == sorted(due[i] for i in ids)
    assert claimed == count and still_open == 0
    assert chain.ok, chain.problem
