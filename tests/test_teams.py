"""Teams (issue 22) on SQLite and PostgreSQL: managers make teams and set members, routing
rules put a new case in a team where the normalizer opens it, claim-next takes my teams'
cases first, teams auto-assign (round robin, load balanced), a case moves team by the API,
everything is audited, and the manager report has per-team figures. Cases come in through
the real intake and normalizer; expected figures are worked out by hand beside each test."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import Engine, select, update

from inbox import report_days, teams
from inbox.accounts import Principal
from inbox.config import RoutingRule, StoreSettings
from inbox.models import AuditLog, Case, Team, User
from tests.support.helpers import ingest, normalize
from tests.support.inbox_helpers import Api, case_row, email_case, make_user
from tests.test_channel_contract import twilio_inputs
from tests.test_cli import parity, settings_for

pytest_plugins = ["tests.support.inbox_fixtures"]

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
GERMAN = "Ich komme nicht mehr in mein Konto, seit mein Handy gestohlen wurde. Bitte helfen."


def principal(engine: Engine, name: str) -> Principal:
    with engine.connect() as conn:
        row = conn.execute(select(User).where(User.name == name)).one()
    return Principal(id=row.id, name=row.name, role=row.role, via="cli")


def audit_rows(engine: Engine, action: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))
        )


def team_of(engine: Engine, reference: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(Team.name).join(Case, Case.team_id == Team.id).where(Case.reference == reference)
        ).scalar()


def assignee_of(engine: Engine, reference: str) -> str | None:
    row = case_row(engine, reference)
    if row.assignee_id is None:
        return None
    with engine.connect() as conn:
        return str(conn.execute(select(User.name).where(User.id == row.assignee_id)).scalar_one())


def raw_mail(sender: str, to: str, subject: str, body: str, msgid: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n"
        f"Date: Fri, 20 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


async def test_managers_make_teams_and_set_members_everyone_lists(api: Api, engine: Engine):
    make_user(engine, "ann")
    make_user(engine, "bob")
    make_user(engine, "mia", role="manager")
    await api.call("ann", "POST", "/api/teams", 403, json={"name": "billing"})
    made = await api.call("mia", "POST", "/api/teams", 201, json={"name": "Billing"})
    assert made["team"] == {"name": "billing", "auto_assign": "off", "members": []}
    await api.call("mia", "POST", "/api/teams", 409, json={"name": "billing"})
    await api.call("mia", "POST", "/api/teams", 400, json={"name": "two words"})
    await api.call("mia", "POST", "/api/teams", 400, json={"name": "x", "auto_assign": "random"})
    await api.call("mia", "POST", "/api/teams", 201, json={"name": "dach"})

    team = await api.call(
        "mia", "PUT", "/api/teams/billing/members", json={"members": ["bob", "Ann"]}
    )
    assert team["team"]["members"] == ["ann", "bob"]
    team = await api.call(
        "mia", "POST", "/api/teams/billing/members", json={"add": ["mia"], "remove": ["bob"]}
    )
    assert team["team"]["members"] == ["ann", "mia"]
    await api.call("mia", "POST", "/api/teams/billing/members", 400, json={"add": ["nobody"]})
    await api.call("mia", "PUT", "/api/teams/nowhere/members", 404, json={"members": []})
    await api.call("ann", "PUT", "/api/teams/billing/members", 403, json={"members": ["ann"]})
    changed = await api.call(
        "mia", "PATCH", "/api/teams/billing", json={"auto_assign": "round_robin"}
    )
    assert changed["team"]["auto_assign"] == "round_robin"

    listed = await api.call("ann", "GET", "/api/teams")
    assert listed["teams"] == [
        {"name": "billing", "auto_assign": "round_robin", "members": ["ann", "mia"]},
        {"name": "dach", "auto_assign": "off", "members": []},
    ]
    assert [r.after["team"] for r in audit_rows(engine, "team.created")] == ["billing", "dach"]
    members = audit_rows(engine, "team.members")
    assert [(r.actor, r.after["added"], r.after["removed"]) for r in members] == [
        ("user:mia", ["ann", "bob"], []),
        ("user:mia", ["mia"], ["bob"]),
    ]
    assert [r.after["auto_assign"] for r in audit_rows(engine, "team.updated")] == ["round_robin"]
    spec = await api.call("ann", "GET", "/api/openapi.json")
    assert {"get", "post"} <= set(spec["paths"]["/api/teams"])
    assert "post" in spec["paths"]["/api/cases/{reference}/team"]


def test_routing_rules_put_each_new_case_in_its_team(engine: Engine) -> None:
    for name in ("billing", "dach", "phone-desk"):
        teams.create_team(engine, "test", name)
    store = StoreSettings(
        routing=[
            RoutingRule(name="billing box", team="billing", addresses=["billing@shop.example"]),
            RoutingRule(name="refunds", team="billing", pattern=r"(?i)\brefund\b"),
            RoutingRule(name="german", team="dach", languages=["de"]),
            RoutingRule(name="texts", team="phone-desk", channels=["sms"]),
            RoutingRule(name="gone", team="no-such-team", pattern=r"(?i)\bvanished\b"),
        ]
    )
    mails = [
        # (sender, to, subject, body) -> the team, by the rules above in order
        ("a@example.org", "billing@shop.example", "Hallo", GERMAN, "billing"),
        ("b@example.org", "help@shop.example", "Refund for order 4471", "Please.", "billing"),
        ("c@example.org", "help@shop.example", "Konto", GERMAN, "dach"),
        ("d@example.org", "help@shop.example", "Parcel late", "Where is my parcel?", None),
        ("e@example.org", "help@shop.example", "Parcel vanished", "It vanished.", None),
    ]
    for i, (sender, to, subject, body, _) in enumerate(mails):
        ingest(engine, raw_mail(sender, to, subject, body, f"route{i}@mail.example"))
    item = twilio_inputs("sms")[0]
    params = dict(parse_qsl(item.payload.decode()))
    params.update(Body="where is my parcel?", MessageSid="SM" + "7" * 32)
    ingest(
        engine,
        urlencode(params).encode(),
        channel="sms",
        connector="twilio",
        envelope=dict(item.envelope),
        source_key=f"sms:{params['MessageSid']}",
    )
    normalize(engine, store)
    with engine.connect() as conn:
        cases = list(conn.execute(select(Case.reference, Case.subject, Case.channel)))
    by_subject = {c.subject: c.reference for c in cases if c.channel == "email"}
    (sms,) = [c.reference for c in cases if c.channel == "sms"]
    for _, _, subject, _, team in mails:
        assert team_of(engine, by_subject[subject]) == team, subject
    assert team_of(engine, sms) == "phone-desk"
    routed = audit_rows(engine, "case.team")
    assert sorted(r.actor for r in routed) == sorted(
        ["rule:billing box", "rule:refunds", "rule:german", "rule:texts", "rule:gone"]
    )
    (missing,) = [r for r in routed if r.actor == "rule:gone"]
    assert missing.after == {"team": None, "missing_team": "no-such-team"}
    # The team was set; nobody was assigned: auto-assignment is off by default.
    assert all(case_row(engine, c.reference).assignee_id is None for c in cases)


async def test_claim_next_takes_my_teams_first_then_unteamed_then_others(
    api: Api, engine: Engine
) -> None:
    make_user(engine, "ann")
    make_user(engine, "bob")
    teams.create_team(engine, "test", "billing")
    teams.create_team(engine, "test", "dach")
    teams.set_members(engine, "test", "billing", add=["ann"])
    # (label, team); received an hour apart in this order, so due in this order too.
    plan = [("o1", "dach"), ("u1", None), ("m1", "billing"), ("o2", "dach"),
            ("m2", "billing"), ("u2", None)]  # fmt: skip
    refs: dict[str, str] = {}
    for i, (label, team) in enumerate(plan):
        refs[label] = email_case(
            engine, f"{label}@example.org", f"Case {label}", "Help", at=T0 + timedelta(hours=i)
        )
        if team is not None:
            teams.set_case_team(engine, principal(engine, "bob"), refs[label], team)
    due = {label: case_row(engine, ref).due_at for label, ref in refs.items()}
    assert sorted(due, key=due.__getitem__) == [label for label, _ in plan]
    tier = {"billing": 0, None: 1, "dach": 2}
    teams_of = dict(plan)

    async def claims(agent: str) -> list[str]:
        taken: list[str] = []
        while True:
            got = await api.call(agent, "POST", "/api/queue/claim-next")
            if got.get("case") is None:
                return taken
            ref = got["case"]["reference"]
            taken.append(next(label for label, r in refs.items() if r == ref))
            await api.call(agent, "POST", f"/api/cases/{ref}/status", json={"status": "resolved"})

    # Ann is in billing: billing's cases, then no team's, then dach's, each in due order.
    expected = sorted(refs, key=lambda label: (tier[teams_of[label]], due[label]))
    assert expected == ["m1", "m2", "u1", "u2", "o1", "o2"]
    assert await claims("ann") == expected


async def test_claim_next_for_an_agent_in_no_team_keeps_unteamed_cases_first(
    api: Api, engine: Engine
) -> None:
    make_user(engine, "bob")
    teams.create_team(engine, "test", "billing")
    first = email_case(engine, "x@example.org", "Team case", "Help", at=T0)
    later = email_case(engine, "y@example.org", "Plain case", "Help", at=T0 + timedelta(hours=1))
    teams.set_case_team(engine, principal(engine, "bob"), first, "billing")
    got = await api.call("bob", "POST", "/api/queue/claim-next")
    assert got["case"]["reference"] == later


async def test_teams_auto_assign_round_robin_then_load_balanced(api: Api, engine: Engine):
    ids = {name: make_user(engine, name) for name in ("ann", "bob", "cy")}
    make_user(engine, "mia", role="manager")
    assert ids["ann"] < ids["bob"] < ids["cy"]
    teams.create_team(engine, "test", "billing", "round_robin")
    teams.set_members(engine, "test", "billing", add=["cy", "ann", "bob"])
    store = StoreSettings(routing=[RoutingRule(name="refunds", team="billing", pattern="refund")])

    def routed(n: int) -> str:
        ingest(engine, raw_mail(f"c{n}@example.org", "help@shop.example", f"refund {n}",
                                "Please refund me.", f"rr{n}@mail.example"))  # fmt: skip
        normalize(engine, store)
        with engine.connect() as conn:
            return str(
                conn.execute(select(Case.reference).where(Case.subject == f"refund {n}")).scalar()
            )

    first = [routed(n) for n in range(4)]
    # Round robin in user-id order, from the start: ann, bob, cy, then ann again.
    assert [assignee_of(engine, r) for r in first] == ["ann", "bob", "cy", "ann"]
    auto = audit_rows(engine, "case.assigned")
    assert {r.actor for r in auto} == {"team:billing"}
    assert [r.after["via"] for r in auto] == ["auto_assign:round_robin"] * 4

    await api.call("mia", "PATCH", "/api/teams/billing", json={"auto_assign": "load_balanced"})
    # Open cases now: ann 2, bob 1, cy 1. Bob resolves his: bob 0, so bob gets the next;
    # then ann 2, bob 1, cy 1: bob and cy tie, and the lower id (bob) gets it.
    await api.call("bob", "POST", f"/api/cases/{first[1]}/status", json={"status": "resolved"})
    assert [assignee_of(engine, routed(n)) for n in (4, 5)] == ["bob", "bob"]
    # Then ann 2, bob 2, cy 1: cy.
    assert assignee_of(engine, routed(6)) == "cy"
    # A disabled member gets nothing: with cy disabled, ann 2 and bob 2 tie -> ann.
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == ids["cy"]).values(disabled=True))
    assert assignee_of(engine, routed(7)) == "ann"


async def test_an_agent_moves_a_case_to_a_team_and_search_finds_it(api: Api, engine: Engine):
    make_user(engine, "ann")
    make_user(engine, "bob")
    teams.create_team(engine, "test", "billing", "round_robin")
    teams.set_members(engine, "test", "billing", add=["bob"])
    teams.create_team(engine, "test", "dach")
    teams.set_members(engine, "test", "dach", add=["ann"])
    a = email_case(engine, "a@example.org", "Printer jam", "the printer jams", at=T0)
    b = email_case(engine, "b@example.org", "Printer ink", "printer ink", at=T0 + timedelta(1))
    moved = await api.call("ann", "POST", f"/api/cases/{a}/team", json={"team": "Billing"})
    # Billing auto-assigns: the case was nobody's, so bob (its only member) has it now.
    assert moved == {"reference": a, "team": "billing", "assignee": "bob"}
    await api.call("ann", "POST", f"/api/cases/{b}/team", 404, json={"team": "nowhere"})
    view = await api.call("ann", "GET", f"/api/cases/{a}")
    assert view["team"] == "billing" and view["assignee"] == "bob"
    team_rows = audit_rows(engine, "case.team")
    assert [(r.actor, r.before, r.after) for r in team_rows] == [
        ("user:ann", {"team": None}, {"team": "billing"})
    ]

    async def found(params: str) -> list[str]:
        data = await api.call("ann", "GET", f"/api/search?q=printer&{params}")
        return sorted(c["reference"] for c in data["results"])

    assert await found("team=billing") == [a]
    assert await found("team=none") == [b]
    assert await found("team=mine") == []  # ann is in dach; no case is
    await api.call("ann", "GET", "/api/search?q=printer&team=nowhere", 400)
    # The queue shows each row's team and filters by it the same way.
    queue = await api.call("ann", "GET", "/api/queue")
    assert {c["reference"]: c["team"] for c in queue["cases"]} == {a: "billing", b: None}
    for params, expected in [("team=billing", [a]), ("team=none", [b]), ("team=mine", [])]:
        listed = await api.call("ann", "GET", f"/api/queue?{params}")
        assert [c["reference"] for c in listed["cases"]] == expected, params
    await api.call("ann", "GET", "/api/queue?team=nowhere", 400)
    cleared = await api.call("ann", "POST", f"/api/cases/{a}/team", json={"team": None})
    assert cleared["team"] is None and team_of(engine, a) is None
    # Taking the team away leaves the person: that is a separate decision, audited apart.
    assert assignee_of(engine, a) == "bob"


def test_the_manager_report_has_per_team_figures(engine: Engine) -> None:
    make_user(engine, "ann")
    teams.create_team(engine, "test", "billing")
    teams.create_team(engine, "test", "dach")
    who = principal(engine, "ann")
    # (team, minutes to the first response or None, resolved)
    plan = [("billing", 10, True), ("billing", 30, False), ("billing", None, False),
            ("dach", 20, True), (None, 5, False)]  # fmt: skip
    for i, (team, minutes, resolved) in enumerate(plan):
        at = T0 + timedelta(hours=i)
        ref = email_case(engine, f"r{i}@example.org", f"Report {i}", "Help", at=at)
        if team is not None:
            teams.set_case_team(engine, who, ref, team)
        values: dict[str, Any] = {}
        if minutes is not None:
            values["first_response_at"] = at + timedelta(minutes=minutes)
        if resolved:
            values.update(status="resolved", resolved_at=at + timedelta(hours=1))
        if values:
            with engine.begin() as conn:
                conn.execute(update(Case).where(Case.reference == ref).values(**values))
    now = datetime.now(UTC)
    with engine.connect() as conn:
        data = report_days.compute(
            conn, now=now, since=T0 - timedelta(days=1), until=now, threshold=2.0
        )
    by_team = data["teams"]
    assert set(by_team) == {"billing", "dach"}  # a case of no team is in no team's line
    assert by_team["billing"]["volume"] == 3 and by_team["dach"]["volume"] == 1
    assert by_team["billing"]["answered"] == 2 and by_team["billing"]["resolved"] == 1
    # Medians by hand: billing's answers took 10 and 30 minutes, dach's one 20.
    assert by_team["billing"]["first_response_p50_s"] == statistics.median([600, 1800]) == 1200
    assert by_team["dach"]["first_response_p50_s"] == 1200.0
    assert by_team["dach"]["resolution_p50_s"] == 3600.0
    assert data["total"]["volume"] == 5


def test_the_cli_adds_teams_and_members(engine: Engine, db_url: str, tmp_path: Path) -> None:
    make_user(engine, "ann")
    settings = settings_for(tmp_path, db_url)
    added = parity(settings, "teams", "add", "Billing", "--auto-assign", "load_balanced")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "billing (auto-assign load_balanced): no members"
    member = parity(settings, "teams", "member", "billing", "ann")
    assert member.returncode == 0, member.stderr
    assert member.stdout.strip() == "billing (auto-assign load_balanced): ann"
    missing = parity(settings, "teams", "member", "billing", "nobody")
    assert missing.returncode == 2 and "no user named 'nobody'" in missing.stderr
    assert teams.list_teams(engine) == [
        {"name": "billing", "auto_assign": "load_balanced", "members": ["ann"]}
    ]
    assert [r.actor for r in audit_rows(engine, "team.members")] == ["cli"]
