"""Issue 22 through the JSON API, on SQLite and PostgreSQL: tags and custom fields (by agents
and by content rules), search filters, bulk actions audited per case, snooze returning a case,
the customer's history beside a case, and each agent's after-done setting. Cases come in
through the real intake and normalizer; expected lists are computed from the tables here."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from inbox.config import ContentRule, SlaSettings, StoreSettings
from inbox.models import AuditLog, Case, CaseField, CaseTag, Message
from tests.support.helpers import ingest, normalize
from tests.support.inbox_helpers import (
    Api,
    add_inbound,
    case_row,
    email_case,
    link_identity,
    mail,
    make_user,
)

pytest_plugins = ["tests.support.inbox_fixtures"]

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
COMPLAINT = (
    "I have been locked out of my account since yesterday evening. Every time I try to log in "
    "it says my password is wrong, and the reset email never arrives in my inbox or spam "
    "folder. I need to get into my account today because my invoices are in there."
)


def refs(items: list[dict[str, Any]]) -> list[str]:
    return [c["reference"] for c in items]


def audit_actions(engine: Engine, reference: str) -> list[str]:
    case_id = case_row(engine, reference).id
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(AuditLog.action).where(AuditLog.case_id == case_id).order_by(AuditLog.id)
            ).scalars()
        )


def stored_tags(engine: Engine, reference: str) -> list[str]:
    case_id = case_row(engine, reference).id
    with engine.connect() as conn:
        return sorted(conn.execute(select(CaseTag.tag).where(CaseTag.case_id == case_id)).scalars())


async def test_tags_and_fields_are_set_shown_filtered_and_audited(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    a = email_case(engine, "a@example.org", "Refund please", "I want my money back", at=T0)
    b = email_case(engine, "b@example.org", "Where is it", "Parcel late", at=T0 + timedelta(1))

    result = await api.call(
        "ann", "POST", f"/api/cases/{a}/tags", json={"add": ["Refund", "VIP  customer", "refund"]}
    )
    assert result["tags"] == ["refund", "vip-customer"] == stored_tags(engine, a)
    # Adding a tag the case has changes nothing and writes no audit row.
    await api.call("ann", "POST", f"/api/cases/{a}/tags", json={"add": ["REFUND"]})
    assert audit_actions(engine, a).count("case.tagged") == 1

    queue = await api.call("ann", "GET", "/api/queue")
    shown = {c["reference"]: c["tags"] for c in queue["cases"]}
    assert shown == {a: ["refund", "vip-customer"], b: []}
    assert refs((await api.call("ann", "GET", "/api/queue?tag=Refund"))["cases"]) == [a]
    assert refs((await api.call("ann", "GET", "/api/queue?tag=late"))["cases"]) == []
    await api.call("ann", "POST", f"/api/cases/{a}/tags", 400, json={"add": ["!!!"]})

    result = await api.call(
        "ann", "POST", f"/api/cases/{a}/tags", json={"remove": ["vip-customer"]}
    )
    assert result["tags"] == ["refund"] == stored_tags(engine, a)

    fields = await api.call(
        "ann", "POST", f"/api/cases/{b}/fields", json={"name": "Order", "value": " 4471 "}
    )
    assert fields["fields"] == {"order": "4471"}
    await api.call("ann", "POST", f"/api/cases/{b}/fields", 400, json={"name": "1x", "value": "y"})
    await api.call(
        "ann", "POST", f"/api/cases/{b}/fields", 400, json={"name": "x", "value": "a\nb"}
    )
    view = await api.call("ann", "GET", f"/api/cases/{b}")
    assert view["fields"] == {"order": "4471"} and view["tags"] == []
    cleared = await api.call(
        "ann", "POST", f"/api/cases/{b}/fields", json={"name": "order", "value": None}
    )
    assert cleared["fields"] == {}
    with engine.connect() as conn:
        assert conn.execute(select(CaseField)).all() == []
    assert audit_actions(engine, a).count("case.tagged") == 2
    assert audit_actions(engine, b).count("case.field") == 2
    with engine.connect() as conn:
        row = conn.execute(
            select(AuditLog).where(AuditLog.action == "case.tagged").order_by(AuditLog.id)
        ).first()
    assert row is not None and row.actor == "user:ann"
    assert row.after["added"] == ["refund", "vip-customer"]


async def test_content_rules_tag_new_cases_and_set_fields(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    store = StoreSettings(
        sla=SlaSettings(
            rules=[
                ContentRule(
                    name="billing",
                    pattern=r"(?i)\b(invoice|refund)\b",
                    tags=["Billing", "money"],
                    fields={"Topic": "billing"},
                ),
                ContentRule(name="urgent", pattern=r"(?i)\burgent\b", due_within_minutes=30),
            ]
        )
    )
    for sender, subject, body in [
        ("x@example.org", "Invoice copy", "Send me May's invoice"),
        ("y@example.org", "Hello", "Just saying hi, urgent"),
    ]:
        ingest(engine, mail(sender, subject, body, msgid=f"{sender}.rule@mail.example"))
    normalize(engine, store)
    queue = await api.call("ann", "GET", "/api/queue")
    by_subject = {c["subject"]: c for c in queue["cases"]}
    assert by_subject["Invoice copy"]["tags"] == ["billing", "money"]
    assert by_subject["Invoice copy"]["fields"] == {"topic": "billing"}
    assert by_subject["Hello"]["tags"] == [] and by_subject["Hello"]["fields"] == {}
    with engine.connect() as conn:
        actors = set(
            conn.execute(
                select(AuditLog.actor).where(AuditLog.action.in_(["case.tagged", "case.field"]))
            ).scalars()
        )
    assert actors == {"rule:billing"}


async def test_search_filters_choose_cases_and_keep_the_ranking(api: Api, engine: Engine) -> None:
    ann = make_user(engine, "ann")
    make_user(engine, "bob")
    a = email_case(engine, "a@example.org", "Printer jam", "the printer jams on page two", at=T0)
    b = email_case(
        engine, "b@example.org", "Printer again", "my printer is broken", at=T0 + timedelta(hours=1)
    )
    c = email_case(
        engine, "c@example.org", "Printer ink", "printer ink is empty", at=T0 + timedelta(hours=2)
    )
    phone = link_identity(engine, c, "phone", "+14155550199")
    add_inbound(engine, c, phone, "sms", "printer still empty", T0 + timedelta(hours=3))
    await api.call("ann", "POST", f"/api/cases/{a}/assign", json={"assignee": "ann"})
    await api.call("ann", "POST", f"/api/cases/{b}/status", json={"status": "resolved"})
    await api.call("ann", "POST", f"/api/cases/{b}/tags", json={"add": ["hardware"]})

    everything = await api.call("ann", "GET", "/api/search?q=printer")
    ranked = refs(everything["results"])
    assert sorted(ranked) == sorted([a, b, c])

    async def only(params: str) -> list[str]:
        return refs((await api.call("ann", "GET", f"/api/search?q=printer&{params}"))["results"])

    # Each filter keeps exactly the cases the table says, in the unfiltered order.
    rows = {r: case_row(engine, r) for r in (a, b, c)}
    assert await only("status=resolved") == [r for r in ranked if rows[r].status == "resolved"]
    assert await only("status=new,open") == [r for r in ranked if rows[r].status in ("new", "open")]
    assert await only("channel=sms") == [c]
    assert await only("tag=Hardware") == [b]
    assert await only("assignee=me") == [r for r in ranked if rows[r].assignee_id == ann] == [a]
    assert await only("assignee=none") == [r for r in ranked if rows[r].assignee_id is None]
    # An unknown team is refused, as an unknown assignee is (tests/test_teams.py has teams).
    await api.call("ann", "GET", "/api/search?q=printer&team=tier-2", 400)
    today = date.today().isoformat()
    assert await only(f"since={today}") == [
        r for r in ranked if rows[r].last_activity_at.date() >= date.today()
    ]
    first_day = T0.date().isoformat()
    assert await only(f"until={first_day}") == [
        r for r in ranked if rows[r].first_inbound_at.date() <= T0.date()
    ]
    # Filters alone, no words: the cases they allow, most recently active first.
    listed = await api.call("ann", "GET", "/api/search?tag=hardware")
    assert refs(listed["results"]) == [b]
    await api.call("ann", "GET", "/api/search", 400)
    await api.call("ann", "GET", "/api/search?q=x&since=yesterday", 400)
    await api.call("ann", "GET", "/api/search?q=x&status=lost", 400)
    await api.call("ann", "GET", "/api/search?q=x&assignee=nobody-here", 400)


async def test_bulk_actions_run_per_case_and_audit_each(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    make_user(engine, "bob")
    make_user(engine, "mia", role="manager")
    cases = [
        email_case(engine, f"p{i}@example.org", f"Issue {i}", f"text {i}", at=T0 + timedelta(i))
        for i in range(4)
    ]
    a, b, c, d = cases
    before = {r: len(audit_actions(engine, r)) for r in cases}

    tagged = await api.call(
        "ann",
        "POST",
        "/api/bulk",
        json={"action": "tag", "references": [a, b, c, a.lower()], "tags": ["Outage"]},
    )
    assert tagged["done"] == 3 and tagged["failed"] == 0
    assert [stored_tags(engine, r) for r in cases] == [["outage"], ["outage"], ["outage"], []]
    assert [audit_actions(engine, r)[before[r] :] for r in cases] == [
        ["case.tagged"],
        ["case.tagged"],
        ["case.tagged"],
        [],
    ]

    # Bob holds c: ann's bulk resolve resolves a and b, and tells her why c was not.
    await api.call("bob", "POST", f"/api/cases/{c}/claim", json={})
    resolved = await api.call(
        "ann", "POST", "/api/bulk", json={"action": "resolve", "references": [a, b, c]}
    )
    outcome = {r["reference"]: r for r in resolved["results"]}
    assert [outcome[r]["ok"] for r in (a, b, c)] == [True, True, False]
    assert outcome[c]["status"] == 409 and "bob" in outcome[c]["error"]
    assert [case_row(engine, r).status for r in cases] == ["resolved", "resolved", "new", "new"]
    assert audit_actions(engine, a)[-1] == "case.status"
    assert "case.status" not in audit_actions(engine, c)

    # An agent may not assign others (refused per case); a manager may.
    refused = await api.call(
        "ann", "POST", "/api/bulk", json={"action": "assign", "references": [d], "assignee": "bob"}
    )
    assert refused["results"][0]["status"] == 403
    done = await api.call(
        "mia",
        "POST",
        "/api/bulk",
        json={"action": "assign", "references": [c, d], "assignee": "bob"},
    )
    assert done["done"] == 2
    assert [audit_actions(engine, r).count("case.assigned") for r in (c, d)] == [1, 1]

    await api.call("ann", "POST", "/api/bulk", 400, json={"action": "tag", "references": [a]})
    await api.call("ann", "POST", "/api/bulk", 400, json={"action": "zap", "references": [a]})
    await api.call("ann", "POST", "/api/bulk", 400, json={"action": "resolve", "references": []})
    missing = await api.call(
        "ann", "POST", "/api/bulk", json={"action": "resolve", "references": ["C-999999"]}
    )
    assert missing["results"][0]["status"] == 404


async def test_bulk_accepts_merge_suggestions(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    a = email_case(engine, "alice@example.com", "Locked out", COMPLAINT, at=T0)
    b = email_case(
        engine,
        "alice.w@work.example",
        "Locked",
        COMPLAINT.replace("evening", "night"),
        at=T0 + timedelta(hours=1),
    )
    lone = email_case(engine, "zed@example.org", "Other", "Why was I charged twice?", at=T0)
    result = await api.call(
        "ann", "POST", "/api/bulk", json={"action": "accept_suggestion", "references": [b, lone]}
    )
    outcome = {r["reference"]: r for r in result["results"]}
    assert outcome[b]["ok"] and outcome[b]["result"]["merge"]["into"] == a
    assert not outcome[lone]["ok"] and outcome[lone]["status"] == 400
    assert case_row(engine, b).status == "merged"
    assert audit_actions(engine, b)[-1].startswith("case.merge")


async def test_snooze_leaves_the_queue_and_comes_back(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    a = email_case(engine, "a@example.org", "First", at=T0)
    b = email_case(engine, "b@example.org", "Second", at=T0 + timedelta(minutes=5))
    c = email_case(engine, "c@example.org", "Third", at=T0 + timedelta(minutes=9))

    async def queue(extra: str = "") -> list[str]:
        return refs((await api.call("ann", "GET", f"/api/queue{extra}"))["cases"])

    assert await queue() == [a, b, c]
    until = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    snoozed = await api.call(
        "ann", "POST", f"/api/cases/{a}/snooze", json={"until": until.isoformat()}
    )
    assert snoozed["snooze"]["until"] == until.isoformat().replace("+00:00", "Z")
    await api.call("ann", "POST", f"/api/cases/{b}/snooze", json={"until": None})
    assert await queue() == [c]
    assert await queue("?snoozed=1") == [a, b]
    # claim-next skips snoozed cases, however high they are in the queue.
    claimed = await api.call("ann", "POST", "/api/queue/claim-next")
    assert claimed["case"]["reference"] == c
    await api.call("ann", "POST", f"/api/cases/{c}/status", json={"status": "resolved"})
    assert (await api.call("ann", "POST", "/api/queue/claim-next"))["case"] is None

    # Time passes for a: its snooze ends and it is back, at its own due time.
    with engine.begin() as conn:
        conn.execute(
            update(Case)
            .where(Case.reference == a)
            .values(snoozed_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await queue() == [a]
    # An agent's reply does not wake b; the customer's answer does.
    await api.call("ann", "POST", f"/api/cases/{b}/replies", 201, json={"text": "On it."})
    assert await queue() == [a]
    assert case_row(engine, b).status == "pending_customer"
    email_case(
        engine,
        "b@example.org",
        "Re: Second",
        "Any news?",
        extra=f"In-Reply-To: <{_msgid(engine, b)}>\r\n",
        at=T0 + timedelta(days=1),
    )
    assert await queue() == [a, b]
    actions = audit_actions(engine, b)
    assert "case.snoozed" in actions

    # Waking ends a snooze at once; bad times are refused.
    await api.call("ann", "POST", f"/api/cases/{c}/status", json={"status": "open"})
    await api.call("ann", "POST", f"/api/cases/{c}/snooze", json={"until": None})
    assert c not in await queue()
    await api.call("ann", "DELETE", f"/api/cases/{c}/snooze")
    assert c in await queue()
    assert audit_actions(engine, c)[-1] == "case.woken"
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    await api.call("ann", "POST", f"/api/cases/{c}/snooze", 400, json={"until": past})
    await api.call(
        "ann", "POST", f"/api/cases/{c}/snooze", 400, json={"until": "2030-01-01T00:00:00"}
    )


def _msgid(engine: Engine, reference: str) -> str:
    """The Message-ID of the case's first mail (its external id)."""
    case_id = case_row(engine, reference).id
    with engine.connect() as conn:
        value = conn.execute(
            select(Message.external_id)
            .where(Message.case_id == case_id, Message.direction == "inbound")
            .order_by(Message.id)
        ).first()
    assert value is not None and value[0]
    return str(value[0]).strip("<>")


async def test_history_beside_the_case(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    old = email_case(engine, "kim@example.org", "Old question", "first", at=T0)
    await api.call("ann", "POST", f"/api/cases/{old}/status", json={"status": "resolved"})
    await api.call("ann", "POST", f"/api/cases/{old}/tags", json={"add": ["billing"]})
    # Past the reopen window: a new case of the same contact.
    new = email_case(engine, "kim@example.org", "New question", "second", at=T0 + timedelta(days=1))
    assert new != old
    assert case_row(engine, new).contact_id == case_row(engine, old).contact_id
    phone = link_identity(engine, new, "phone", "+14155550142")
    for i in range(25):
        add_inbound(
            engine, new, phone, "sms", f"text number {i}", T0 + timedelta(hours=30, minutes=i)
        )
    view = await api.call("ann", "GET", f"/api/cases/{new}")
    history = view["history"]
    contact_id = case_row(engine, new).contact_id
    with engine.connect() as conn:
        contact_cases = list(conn.execute(select(Case).where(Case.contact_id == contact_id)))
        ids = [c.id for c in contact_cases]
        newest = list(
            conn.execute(
                select(Message.id)
                .where(Message.case_id.in_(ids))
                .order_by(Message.received_at.desc(), Message.id.desc())
                .limit(20)
            ).scalars()
        )
    others = sorted(
        (c for c in contact_cases if c.reference != new),
        key=lambda c: (c.last_activity_at, c.id),
        reverse=True,
    )
    assert refs(history["other_cases"]) == [c.reference for c in others]
    assert [m["id"] for m in history["recent_messages"]] == newest
    assert len(newest) == 20
    assert history["recent_messages"][0]["excerpt"] == "text number 24"
    kinds = {(i["channel"], i["handle"]): i["verified"] for i in view["contact"]["identities"]}
    assert kinds[("phone", "+14155550142")] is True
    assert history["other_cases"][0]["reference"] == old
    assert history["other_cases"][0]["tags"] == ["billing"]


async def test_each_agent_chooses_where_to_go_after_done(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    make_user(engine, "bob")
    assert await api.call("ann", "GET", "/api/me/settings") == {
        "after_done": "stay",
        "after_done_own": None,
    }
    await api.call("ann", "PUT", "/api/me/settings", json={"after_done": "next"})
    assert (await api.call("ann", "GET", "/api/me/settings"))["after_done"] == "next"
    assert (await api.call("bob", "GET", "/api/me/settings"))["after_done"] == "stay"
    await api.call("ann", "PUT", "/api/me/settings", 400, json={"after_done": "elsewhere"})
    await api.call("ann", "PUT", "/api/me/settings", json={"after_done": None})
    assert (await api.call("ann", "GET", "/api/me/settings"))["after_done"] == "stay"


async def test_new_routes_need_login_and_csrf_and_are_documented(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    a = email_case(engine, "a@example.org", "First", at=T0)
    document = await api.call("ann", "GET", "/api/openapi.json")
    for path, method in [
        ("/api/cases/{reference}/tags", "post"),
        ("/api/cases/{reference}/fields", "post"),
        ("/api/cases/{reference}/snooze", "post"),
        ("/api/cases/{reference}/snooze", "delete"),
        ("/api/bulk", "post"),
        ("/api/me/settings", "get"),
        ("/api/me/settings", "put"),
    ]:
        assert document["paths"][path][method]["security"], (path, method)
    search_params = {p["name"] for p in document["paths"]["/api/search"]["get"]["parameters"]}
    assert {"status", "channel", "tag", "assignee", "team", "since", "until"} <= search_params
    anonymous = await api.client()
    response = await anonymous.post("/api/bulk", json={"action": "resolve", "references": [a]})
    assert response.status == 401
    client, csrf = await api.session("ann")
    response = await client.post(f"/api/cases/{a}/tags", json={"add": ["x"]})
    assert response.status == 403
    response = await client.post(f"/api/cases/{a}/tags", json={"add": ["x"]}, headers=csrf)
    assert response.status == 200


def row_refs(html: str) -> list[str]:
    return re.findall(r'<tr data-reference="(C-\d+)"', html)


async def test_the_queue_pages_default_view_and_the_search_page(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    a = email_case(engine, "a@example.org", "Printer jam", "my printer jams", at=T0)
    b = email_case(
        engine, "b@example.org", "Printer ink", "printer ink empty", at=T0 + timedelta(1)
    )
    c = email_case(engine, "c@example.org", "Invoice", "send the invoice", at=T0 + timedelta(2))
    await api.call("ann", "POST", f"/api/cases/{b}/replies", 201, json={"text": "Which model?"})
    await api.call("ann", "POST", f"/api/cases/{c}/snooze", json={"until": None})
    client, _ = await api.session("ann")

    async def page(path: str) -> str:
        response = await client.get(path)
        assert response.status == 200, path
        return str(await response.text())

    # Waiting on the customer (b) and snoozed (c) are out of the default view.
    assert row_refs(await page("/queue")) == [a]
    assert row_refs(await page("/queue?status=new,open,pending_customer")) == [a, b]
    assert row_refs(await page("/queue?snoozed=1")) == [c]
    assert "snoozed until the customer answers" in await page("/queue?snoozed=1")
    # The search page lists the API's results in the API's order, snoozed or not.
    api_order = refs((await api.call("ann", "GET", "/api/search?q=printer"))["results"])
    html = await page("/search?q=printer")
    assert row_refs(html) == api_order and sorted(api_order) == sorted([a, b])
    assert 'id="search-box"' in html and 'value="printer"' in html
    assert row_refs(await page("/search?q=invoice&status=open,new")) == [c]
    assert row_refs(await page("/search?q=printer&tag=nothing")) == []
    # The search box is on every page, the case page included.
    assert 'id="search-box"' in await page(f"/cases/{a}")
    bad = await client.get("/search?q=x&since=someday")
    assert bad.status == 400 and "YYYY-MM-DD" in await bad.text()
    anonymous = await api.client()
    response = await anonymous.get("/search?q=printer", allow_redirects=False)
    assert response.status in (302, 303) and "/login" in response.headers["Location"]
