"""claim-next's answer and audit row, built on PostgreSQL from one statement, against the
queue page's item for the same case (built by `summaries`, query by query) and the audit
chain's own verification. Runs on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from inbox import audit, casework, teams
from inbox.accounts import Principal
from inbox.db import is_sqlite
from inbox.models import AuditLog, Case
from tests.fixtures.suggestions.pairs import PAIRS, SAME
from tests.support.inbox_helpers import add_inbound, email_case, link_identity, make_user

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def _agent(engine, name: str) -> Principal:
    return Principal(id=make_user(engine, name), name=name, role="agent", via="token")


def test_claim_next_answers_the_queue_item_and_audits_the_lease_it_took(engine):
    _label, _kind, first, second = next(p for p in PAIRS if p[0] == SAME)
    mine = email_case(engine, "ann@example.com", "Locked out", first, msgid="a1@x", at=T0)
    other = email_case(engine, "bob@example.com", "Locked out", second, msgid="b1@x", at=T0)
    sms = link_identity(engine, mine, "sms", "+15555550100")
    add_inbound(engine, mine, sms, "sms", "Still locked out", T0 + timedelta(minutes=5))
    agent, previous = _agent(engine, "agent01"), _agent(engine, "agent02")
    # Both leases expired: claim-next may take either, and its audit row names who held it.
    with engine.begin() as conn:
        conn.execute(update(Case).values(claimed_by=previous.id, lease_until=T0))

    item = casework.claim_next(engine, agent)

    assert item is not None and item["reference"] in (mine, other)
    assert item.pop("already_held") is False
    page = casework.queue_page(engine, agent)["cases"]
    assert item == next(c for c in page if c["reference"] == item["reference"])
    assert item["suggestions"], "the near-duplicate of the other contact is offered"
    if item["reference"] == mine:
        assert item["channels"] == ["email", "sms"] and item["message_count"] == 2
    with engine.connect() as conn:
        row = conn.execute(select(AuditLog).order_by(AuditLog.id.desc()).limit(1)).one()
        assert audit.verify(conn).ok
    assert row.action == "case.claimed"
    assert row.before["claimed_by"] == "agent02"
    assert row.after["claimed_by"] == "agent01" and row.after["via"] == "claim-next"
    assert row.after["lease_until"] == item["lease"]["until"]

    # Asked again: the same case, renewed, and no second audit row (a heartbeat).
    later = datetime.now(UTC) + timedelta(seconds=30)
    again = casework.claim_next(engine, agent, now=later)
    assert again is not None and again["reference"] == item["reference"]
    assert again["already_held"] is True
    assert again["lease"]["until"] > item["lease"]["until"]
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(AuditLog)).scalar_one()
        assert conn.execute(select(func.max(AuditLog.id))).scalar_one() == row.id
    assert rows >= 1


def test_no_case_no_answer_and_no_audit_row(engine):
    agent = _agent(engine, "agent01")
    assert casework.claim_next(engine, agent) is None
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AuditLog)).scalar_one() == 0


def _round_trips(engine, action) -> int:
    """Round trips of one call, counted in libpq's protocol trace as the bench counts them
    (each request the client waits on ends in a Query or a Sync message)."""
    from bench.claim_next import traced_round_trips

    return traced_round_trips(engine, action)


def test_claim_next_carries_tags_fields_and_team_in_its_own_statement(engine):
    agent = _agent(engine, "agent01")
    teams.create_team(engine, "cli:mia", "billing")
    teams.set_members(engine, "cli:mia", "billing", add=["agent01"])
    cases = [
        email_case(engine, f"c{n}@example.com", f"Invoice {n}", "Where is my invoice?", at=T0)
        for n in range(8)
    ]
    for n, reference in enumerate(cases):
        # Given out of order: the answer sorts them as the queue page does.
        casework.change_tags(engine, agent, reference, add=["vip", "billing", f"batch-{n}"])
        casework.set_field(engine, agent, reference, "plan", "gold")
        casework.set_field(engine, agent, reference, "country", "DE")
        teams.set_case_team(engine, agent, reference, "billing")

    items: list[dict[str, Any]] = []

    def claim() -> None:
        item = casework.claim_next(engine, agent)
        assert item is not None
        items.append(item)

    # Warm (psycopg prepares a statement on its fifth run, as in service), then one traced.
    for _ in range(6):
        claim()
        casework.set_status(engine, agent, items[-1]["reference"], "resolved")
    if is_sqlite(engine):
        claim()
    else:
        # Pool ping, BEGIN, the one statement, the audit row, COMMIT: tags, fields and the
        # team's name add none (they were three more).
        assert _round_trips(engine, claim) == 5
    assert [item["reference"] for item in items] == cases[:7]
    for n, item in enumerate(items):
        assert item["tags"] == sorted(["vip", "billing", f"batch-{n}"])
        assert list(item["fields"].items()) == [("country", "DE"), ("plan", "gold")]
        assert item["team"] == "billing"
    # The same answer as the queue page's item, built query by query.
    last = items[-1]
    assert last.pop("already_held") is False
    page = casework.queue_page(engine, agent)["cases"]
    assert last == next(c for c in page if c["reference"] == last["reference"])
