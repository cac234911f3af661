"""The JSON API's actions over HTTP, on SQLite and PostgreSQL: the queue, claims and leases,
the case timeline, replies, notes, status, assignment, presence, search, downloads and the
audit log. Cases come in through the real intake and normalizer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from inbox import audit
from inbox.models import AuditLog, Case, Identity, Message, Outbox
from normalizer import threads
from tests.support.helpers import ingest_and_normalize
from tests.support.inbox_helpers import (
    add_inbound,
    case_row,
    email_case,
    link_identity,
    mail,
    make_user,
)

pytest_plugins = ["tests.support.inbox_fixtures"]

# Two days ago: the cases' messages are older than anything agents do during the test.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def queue_key(row: Any) -> tuple[Any, ...]:
    return (row.due_at, row.first_inbound_at, row.id)


def open_rows(engine: Engine, predicate: Callable[[Any], bool] = lambda row: True) -> list[str]:
    """The open cases straight from the table, sorted here: the expected queue order."""
    with engine.connect() as conn:
        rows = list(conn.execute(select(Case)))
    wanted = [r for r in rows if r.status in ("new", "open", "pending_customer") and predicate(r)]
    return [r.reference for r in sorted(wanted, key=queue_key)]


def refs(page: dict[str, Any]) -> list[str]:
    return [c["reference"] for c in page["cases"]]


async def test_queue_is_in_due_order_and_filters_never_reorder(api, engine):
    ann = make_user(engine, "ann")
    make_user(engine, "bob")
    # Received out of order; due = received + the one SLA target, whatever the channel.
    a = email_case(engine, "a@example.org", "First", at=T0 + timedelta(minutes=30))
    b = email_case(engine, "b@example.org", "Second", at=T0)
    c = email_case(engine, "c@example.org", "Third", at=T0 + timedelta(minutes=10))
    d = email_case(engine, "d@example.org", "Fourth", at=T0 + timedelta(minutes=20))
    phone = link_identity(engine, c, "phone", "+14155550123")
    add_inbound(engine, c, phone, "sms", "texting too", T0 + timedelta(minutes=40))
    await api.call("ann", "POST", f"/api/cases/{d}/assign", json={"assignee": "ann"})
    await api.call("bob", "POST", f"/api/cases/{a}/status", json={"status": "pending_customer"})

    everything = await api.call("ann", "GET", "/api/queue")
    assert refs(everything) == open_rows(engine) == [b, c, d, a]
    assert everything["next_cursor"] is None

    by_channel = await api.call("ann", "GET", "/api/queue?channel=sms")
    assert refs(by_channel) == [c]
    mine = await api.call("ann", "GET", "/api/queue?assignee=me")
    assert refs(mine) == open_rows(engine, lambda r: r.assignee_id == ann) == [d]
    unassigned = await api.call("ann", "GET", "/api/queue?assignee=none")
    assert refs(unassigned) == [b, c, a]
    waiting = await api.call("ann", "GET", "/api/queue?status=new,open")
    assert refs(waiting) == open_rows(engine, lambda r: r.status in ("new", "open"))
    assert refs(await api.call("ann", "GET", "/api/queue?status=pending_customer")) == [a]
    with_resolved = await api.call("ann", "GET", "/api/queue?status=resolved")
    assert refs(with_resolved) == []

    pages, cursor = [], ""
    while True:
        page = await api.call("ann", "GET", f"/api/queue?limit=1&cursor={cursor}")
        pages += refs(page)
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == [b, c, d, a]
    two = await api.call("ann", "GET", "/api/queue?limit=2")
    rest = await api.call("ann", "GET", f"/api/queue?limit=2&cursor={two['next_cursor']}")
    assert refs(two) + refs(rest) == [b, c, d, a]

    await api.call("ann", "GET", "/api/queue?status=closed", expect=400)
    await api.call("ann", "GET", "/api/queue?cursor=forged", expect=400)
    await api.call("ann", "GET", "/api/queue?limit=0", expect=400)
    assert everything["cases"][0]["channels"] == ["email"]
    assert everything["cases"][1]["channels"] == ["email", "sms"]


async def test_claim_next_leases_the_top_case_once(api, engine):
    for name in ("ann", "bob", "carol", "dave"):
        make_user(engine, name)
    first = email_case(engine, "a@example.org", "Locked out", at=T0)
    second = email_case(engine, "b@example.org", "Password", at=T0 + timedelta(minutes=1))
    third = email_case(engine, "c@example.org", "Refund", at=T0 + timedelta(minutes=2))
    fourth = email_case(engine, "d@example.org", "Invoice", at=T0 + timedelta(minutes=3))
    await api.call("dave", "POST", f"/api/cases/{third}/assign", json={"assignee": "dave"})

    got = (await api.call("ann", "POST", "/api/queue/claim-next"))["case"]
    assert (got["reference"], got["lease"]["holder"], got["already_held"]) == (first, "ann", False)
    got = (await api.call("bob", "POST", "/api/queue/claim-next"))["case"]
    assert got["reference"] == second
    # Asking again while holding a case gives the same case back: no hoarding.
    again = (await api.call("ann", "POST", "/api/queue/claim-next"))["case"]
    assert (again["reference"], again["already_held"]) == (first, True)
    # Carol skips the case assigned to Dave.
    got = (await api.call("carol", "POST", "/api/queue/claim-next"))["case"]
    assert got["reference"] == fourth
    got = (await api.call("dave", "POST", "/api/queue/claim-next"))["case"]
    assert got["reference"] == third
    # Done with it: resolving returns the lease, and there is nothing left for Ann.
    await api.call("ann", "POST", f"/api/cases/{first}/status", json={"status": "resolved"})
    assert (await api.call("ann", "POST", "/api/queue/claim-next"))["case"] is None

    # Bob's laptop closed: his lease runs out and the case goes to the next agent.
    with engine.begin() as conn:
        conn.execute(
            update(Case)
            .where(Case.reference == second)
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    got = (await api.call("ann", "POST", "/api/queue/claim-next"))["case"]
    assert (got["reference"], got["lease"]["holder"]) == (second, "ann")

    queue = await api.call("carol", "GET", "/api/queue")
    leases = {c["reference"]: c["lease"] for c in queue["cases"]}
    assert leases[second]["holder"] == "ann" and leases[second]["mine"] is False
    with engine.connect() as conn:
        claims = conn.execute(
            select(AuditLog.actor, Case.reference, AuditLog.after)
            .join(Case, Case.id == AuditLog.case_id)
            .where(AuditLog.action == "case.claimed")
            .order_by(AuditLog.id)
        ).all()
    assert [(a, r) for a, r, _ in claims] == [
        ("user:ann", first),
        ("user:bob", second),
        ("user:carol", fourth),
        ("user:dave", third),
        ("user:ann", second),
    ]
    assert claims[-1][2]["claimed_by"] == "ann" and claims[-1][2]["via"] == "claim-next"


async def test_a_held_case_is_guarded_until_released_or_taken_over(api, engine):
    make_user(engine, "ann")
    make_user(engine, "bob")
    make_user(engine, "maria", "manager")
    ref = email_case(engine, "a@example.org", "Locked out")
    lease = await api.call("ann", "POST", f"/api/cases/{ref}/claim")
    assert lease["lease"]["holder"] == "ann"
    first_until = lease["lease"]["until"]

    busy = await api.call("bob", "POST", f"/api/cases/{ref}/claim", expect=409)
    assert busy["holder"] == "ann"
    await api.call("bob", "POST", f"/api/cases/{ref}/replies", 409, json={"text": "Hi"})
    await api.call("bob", "POST", f"/api/cases/{ref}/status", 409, json={"status": "resolved"})
    await api.call("bob", "DELETE", f"/api/cases/{ref}/claim", expect=409)
    # Notes are how others help: never blocked.
    await api.call("bob", "POST", f"/api/cases/{ref}/notes", 201, json={"text": "Seen before"})
    # An agent cannot force; a manager can.
    await api.call("bob", "POST", f"/api/cases/{ref}/claim", 409, json={"force": True})
    taken = await api.call("maria", "POST", f"/api/cases/{ref}/claim", json={"force": True})
    assert taken["lease"]["holder"] == "maria"
    renewed = await api.call("maria", "POST", f"/api/cases/{ref}/claim")
    assert renewed["lease"]["until"] >= first_until
    released = await api.call("maria", "DELETE", f"/api/cases/{ref}/claim")
    assert released["lease"] is None
    with engine.connect() as conn:
        actions = conn.execute(
            select(AuditLog.actor, AuditLog.action, AuditLog.after).order_by(AuditLog.id)
        ).all()
    case_actions = [(a, b) for a, b, _ in actions if b.startswith("case.")]
    assert case_actions == [
        ("user:ann", "case.claimed"),
        ("user:bob", "case.note"),
        ("user:maria", "case.claimed"),
        ("user:maria", "case.released"),
    ]
    assert actions[-2][2]["forced"] is True


async def test_a_case_shows_the_contacts_whole_timeline(api, engine):
    make_user(engine, "ann")
    old = email_case(
        engine,
        "pat@example.org",
        "Card declined",
        "My card was declined",
        at=T0 - timedelta(days=60),
    )
    await api.call("ann", "POST", f"/api/cases/{old}/notes", 201, json={"text": "VIP"})
    await api.call("ann", "POST", f"/api/cases/{old}/status", json={"status": "resolved"})
    with engine.begin() as conn:  # resolved long ago, outside the reopen window
        conn.execute(
            update(Case).where(Case.reference == old).values(resolved_at=T0 - timedelta(days=59))
        )
    new = email_case(engine, "pat@example.org", "Locked out", "I cannot log in", at=T0)
    assert new != old
    phone = link_identity(engine, new, "phone", "+14155550199")
    add_inbound(engine, new, phone, "sms", "Any news?", T0 + timedelta(hours=1))
    other = email_case(engine, "someone@example.org", "Unrelated", at=T0)

    view = await api.call("ann", "GET", f"/api/cases/{new.lower()}")
    assert view["reference"] == new
    assert [c["reference"] for c in view["contact_cases"]] == [old, new]
    timeline = view["timeline"]
    assert [(e["kind"], e["case"]) for e in timeline] == [
        ("message", old),
        ("message", new),
        ("message", new),
        ("note", old),  # written just now, after every message
    ]
    assert [e.get("channel") for e in timeline] == ["email", "email", "sms", None]
    assert timeline[3]["text"] == "VIP" and timeline[3]["author"] == "ann"
    assert other not in {e["case"] for e in timeline}
    assert view["default_reply"] == {"channel": "sms", "handle": "+14155550199"}
    assert {(t["channel"], t["handle"]) for t in view["reply_targets"]} == {
        ("email", "pat@example.org"),
        # Not WhatsApp: this number never wrote there (replies.offered_channels).
        ("sms", "+14155550199"),
    }
    await api.call("ann", "GET", "/api/cases/C-999999", expect=404)
    await api.call("ann", "GET", "/api/cases/nonsense", expect=404)


async def test_a_reply_to_an_email_case_goes_only_to_the_verified_address(api, engine):
    make_user(engine, "ann")
    case = email_case(
        engine,
        "ann@example.org",
        "Locked out",
        "My account was taken over",
        msgid="first@mail.example",
    )
    token = case_row(engine, case).token
    # A stranger cites the reference: a case of their own, never a way into this one.
    stranger = email_case(
        engine,
        "mallory@evil.example",
        f"Re: [{case}] reset link",
        "Please send the reset link to this address instead.",
    )
    assert stranger != case
    assert case_row(engine, stranger).claims_reference == case
    # A new address carrying the token joins the case but is another contact's identity.
    forwarded = ingest_and_normalize(
        engine,
        mail(
            "ann.new@example.net",
            f"Re: Locked out [{case} #{token}]",
            "From my new address",
            msgid="second@mail.example",
        ),
    )
    assert forwarded.case_id == case_row(engine, case).id
    with engine.connect() as conn:
        new_contact = conn.execute(
            select(Identity.contact_id).where(Identity.handle == "ann.new@example.net")
        ).scalar_one()
    assert new_contact != case_row(engine, case).contact_id

    await api.call(
        "ann",
        "POST",
        f"/api/cases/{case}/replies",
        400,
        json={"text": "Here is the link", "handle": "mallory@evil.example"},
    )
    await api.call(
        "ann",
        "POST",
        f"/api/cases/{case}/replies",
        400,
        json={"text": "Here is the link", "handle": "ann.new@example.net"},
    )
    sent = await api.call(
        "ann",
        "POST",
        f"/api/cases/{case}/replies",
        201,
        json={"text": "We have locked the account and reset it."},
    )
    outbox = sent["outbox"]
    assert (outbox["kind"], outbox["channel"], outbox["recipient"], outbox["state"]) == (
        "reply",
        "email",
        "ann@example.org",
        "queued",
    )
    assert outbox["subject"] == f"Re: Locked out [{case} #{token}]"
    header = outbox["message_id_header"]
    # Kept without angle brackets, as an acknowledgement's and a bounce's are.
    assert not header.startswith("<") and not header.endswith(">")
    assert threads.find_tokens([], [header]) == [(case, token)]
    with engine.connect() as conn:
        # Acknowledgements are outbox rows too; this test is about the agent's reply.
        rows = conn.execute(select(Outbox).where(Outbox.kind == "reply")).all()
        message = conn.execute(select(Message).where(Message.id == sent["message_id"])).one()
    assert [(r.recipient, r.case_id, r.created_by, r.body) for r in rows] == [
        (
            "ann@example.org",
            case_row(engine, case).id,
            "ann",
            "We have locked the account and reset it.",
        )
    ]
    assert rows[0].payload["in_reply_to"] == "<first@mail.example>"
    assert (message.direction, message.channel, message.meta["to"]) == (
        "outbound",
        "email",
        "ann@example.org",
    )
    after = case_row(engine, case)
    assert after.status == "pending_customer" and after.first_response_at is not None

    # The customer's answer quoting only our Message-ID threads back into the case.
    answer = ingest_and_normalize(
        engine,
        mail(
            "ann@example.org",
            "Thanks",
            "That worked",
            msgid="third@mail.example",
            extra=f"In-Reply-To: {header}\r\n",
        ),
    )
    assert answer.case_id == after.id
    assert case_row(engine, case).status == "open"


async def test_replies_on_other_identities_and_first_response(api, engine):
    make_user(engine, "ann")
    case = email_case(engine, "lee@example.org", "Locked out", at=T0)
    phone = link_identity(engine, case, "phone", "+14155550142")
    link_identity(engine, case, "email", "lee.work@example.com")
    add_inbound(engine, case, phone, "voice", "(voicemail) call me back", T0 + timedelta(hours=1))

    by_default = await api.call(
        "ann",
        "POST",
        f"/api/cases/{case}/replies",
        201,
        json={"text": "We are on it", "status": "open"},
    )
    assert (by_default["outbox"]["channel"], by_default["outbox"]["recipient"]) == (
        "sms",
        "+14155550142",
    )
    assert by_default["outbox"]["message_id_header"] is None
    first_response = case_row(engine, case).first_response_at
    assert first_response is not None and case_row(engine, case).status == "open"

    by_email = await api.call(
        "ann",
        "POST",
        f"/api/cases/{case}/replies",
        201,
        json={"text": "Details by mail", "channel": "email"},
    )
    assert by_email["outbox"]["recipient"] == "lee@example.org"
    by_handle = await api.call(
        "ann",
        "POST",
        f"/api/cases/{case}/replies",
        201,
        json={"text": "Copy to work", "handle": "lee.work@example.com", "status": "resolved"},
    )
    assert by_handle["outbox"]["recipient"] == "lee.work@example.com"
    row = case_row(engine, case)
    assert row.first_response_at == first_response  # the first reply is the first response
    assert row.status == "resolved" and row.resolved_at is not None
    await api.call(
        "ann", "POST", f"/api/cases/{case}/replies", 400, json={"text": "x", "channel": "twitter"}
    )
    await api.call("ann", "POST", f"/api/cases/{case}/replies", 400, json={"text": ""})
    await api.call(
        "ann",
        "POST",
        f"/api/cases/{case}/replies",
        400,
        json={"text": "x", "bcc": "someone@example.org"},
    )
    view = await api.call("ann", "GET", f"/api/cases/{case}")
    outbound = [
        e for e in view["timeline"] if e["kind"] == "message" and e["direction"] == "outbound"
    ]
    assert [e["delivery"]["state"] for e in outbound] == ["queued"] * 3
    # The case's own acknowledgement is in its outbox too; these are the agent's replies.
    assert [o["recipient"] for o in view["outbox"] if o["kind"] == "reply"] == [
        "+14155550142",
        "lee@example.org",
        "lee.work@example.com",
    ]


async def test_notes_status_and_assignment(api, engine):
    make_user(engine, "ann")
    make_user(engine, "bob")
    make_user(engine, "maria", "manager")
    case = email_case(engine, "a@example.org", "Locked out")

    note = await api.call(
        "ann",
        "POST",
        f"/api/cases/{case}/notes",
        201,
        json={"text": "Checked ID: matches the account"},
    )
    assert note["note"]["author"] == "ann"
    await api.call("ann", "POST", f"/api/cases/{case}/notes", 400, json={"text": ""})
    view = await api.call("bob", "GET", f"/api/cases/{case}")
    assert [n["text"] for n in view["notes"]] == ["Checked ID: matches the account"]
    assert case_row(engine, case).first_response_at is None  # a note is not a response

    await api.call("ann", "POST", f"/api/cases/{case}/status", json={"status": "resolved"})
    assert case_row(engine, case).resolved_at is not None
    await api.call("ann", "POST", f"/api/cases/{case}/status", json={"status": "open"})
    row = case_row(engine, case)
    assert (row.status, row.resolved_at) == ("open", None)
    await api.call("ann", "POST", f"/api/cases/{case}/status", 400, json={"status": "new"})

    await api.call("ann", "POST", f"/api/cases/{case}/assign", 403, json={"assignee": "bob"})
    mine = await api.call("ann", "POST", f"/api/cases/{case}/assign", json={"assignee": "ann"})
    assert mine["assignee"] == "ann"
    await api.call("bob", "POST", f"/api/cases/{case}/assign", 403, json={"assignee": None})
    moved = await api.call("maria", "POST", f"/api/cases/{case}/assign", json={"assignee": "bob"})
    assert moved["assignee"] == "bob"
    await api.call("maria", "POST", f"/api/cases/{case}/assign", 400, json={"assignee": "nobody"})
    cleared = await api.call("bob", "POST", f"/api/cases/{case}/assign", json={"assignee": None})
    assert cleared["assignee"] is None

    entries = (await api.call("maria", "GET", f"/api/audit?case={case}"))["entries"]
    trail = [
        (
            e["actor"],
            e["action"],
            e["before"].get("status") if e["before"] else None,
            (e["after"] or {}).get("status"),
            (e["after"] or {}).get("assignee"),
        )
        for e in reversed(entries)
        if e["actor"] != "system"  # the acknowledgement decision is audited too
    ]
    assert trail == [
        ("user:ann", "case.note", None, None, None),
        ("user:ann", "case.status", "new", "resolved", None),
        ("user:ann", "case.status", "resolved", "open", None),
        ("user:ann", "case.assigned", "open", "open", "ann"),
        ("user:maria", "case.assigned", "open", "open", "bob"),
        ("user:bob", "case.assigned", "open", "open", None),
    ]
    await api.call("ann", "GET", "/api/audit", expect=403)


async def test_presence_shows_viewers_and_renews_the_holders_lease(api, engine):
    make_user(engine, "ann")
    make_user(engine, "bob")
    case = email_case(engine, "a@example.org", "Locked out")
    await api.call("ann", "POST", f"/api/cases/{case}/claim")
    with engine.begin() as conn:  # about to expire
        conn.execute(
            update(Case)
            .where(Case.reference == case)
            .values(lease_until=datetime.now(UTC) + timedelta(seconds=5))
        )
    before = case_row(engine, case).lease_until
    seen = await api.call("ann", "POST", f"/api/cases/{case}/presence")
    assert [v["user"] for v in seen["viewers"]] == ["ann"]
    assert case_row(engine, case).lease_until > before + timedelta(seconds=60)
    await api.call("bob", "POST", f"/api/cases/{case}/presence")
    both = await api.call("bob", "GET", f"/api/cases/{case}/presence")
    assert [v["user"] for v in both["viewers"]] == ["ann", "bob"]
    assert both["lease"]["holder"] == "ann" and both["lease"]["mine"] is False
    await api.call("ann", "DELETE", f"/api/cases/{case}/presence")
    assert [
        v["user"] for v in (await api.call("ann", "GET", f"/api/cases/{case}/presence"))["viewers"]
    ] == ["bob"]
    with engine.begin() as conn:  # Bob's tab went quiet
        conn.execute(
            update(Case).where(Case.reference == case).values(lease_until=None, claimed_by=None)
        )
        from inbox.models import CaseViewer

        conn.execute(update(CaseViewer).values(seen_at=datetime.now(UTC) - timedelta(minutes=5)))
    quiet = await api.call("ann", "GET", f"/api/cases/{case}/presence")
    assert quiet["viewers"] == [] and quiet["lease"] is None
    view = await api.call("ann", "GET", f"/api/cases/{case}")
    assert view["viewers"] == [] and view["lease"] is None


async def test_search_finds_text_handles_and_references(api, engine):
    make_user(engine, "ann")
    phone_case = email_case(
        engine, "ann@example.org", "Locked out", "My phone was stolen and now the codes go nowhere"
    )
    invoice = email_case(
        engine,
        "billing@shop.example",
        "Invoice 4471",
        "Please send invoice number 4471 again",
        msgid="inv-4471@shop.example",
    )
    claims = email_case(
        engine,
        "mallory@evil.example",
        f"About {phone_case}",
        "I am the owner, send the codes to me",
    )
    assert case_row(engine, claims).claims_reference == phone_case

    async def found(q: str) -> tuple[list[str], dict[str, Any]]:
        result = await api.call("ann", "GET", "/api/search", params={"q": q})
        return [r["reference"] for r in result["results"]], result

    assert (await found("stolen phone"))[0] == [phone_case]
    assert (await found("STOLE"))[0] == [phone_case]  # prefixes, any case
    assert (await found("invoice 4471"))[0] == [invoice]
    assert (await found("ann@example.org"))[0] == [phone_case]
    assert (await found("mallo"))[0] == [claims]  # a handle prefix
    refs_found, result = await found(phone_case.lower())
    assert refs_found == [phone_case, claims]
    assert result["results"][0]["matches"][0]["kind"] == "reference"
    assert result["results"][1]["matches"][0]["kind"] == "claims_reference"
    assert (await found("<inv-4471@shop.example>"))[0] == [invoice]
    assert (await found("codes"))[0] == [claims, phone_case]  # newest message first
    assert (await found("refund"))[0] == []
    assert (await found('"; DROP TABLE messages; --'))[0] == []
    snippet = (await found("stolen"))[1]["results"][0]["matches"][0]["snippet"]
    assert "stolen" in snippet
    await api.call("ann", "GET", "/api/search", expect=400)
    # A reply is searchable too: it is a message of the case.
    await api.call(
        "ann",
        "POST",
        f"/api/cases/{invoice}/replies",
        201,
        json={"text": "Resent as PDF with reference XJ-77"},
    )
    assert (await found("xj 77"))[0] == [invoice]
    # A display name learnt later (the identity row is updated) is found too.
    assert (await found("annabel"))[0] == []
    ingest_and_normalize(
        engine,
        mail(
            "ann@example.org",
            "Still locked",
            "Any news?",
            msgid="later@mail.example",
            name="Annabel Lee",
        ),
    )
    refs_found, result = await found("annabel")
    assert refs_found == [phone_case]
    assert result["results"][0]["matches"][0] == {
        "kind": "handle",
        "channel": "email",
        "handle": "ann@example.org",
    }


ATTACHED = (
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    "--b1\r\nContent-Type: text/plain\r\n\r\nScreenshots attached.\r\n"
    "--b1\r\nContent-Type: text/html\r\n"
    'Content-Disposition: attachment; filename="invoice.html"\r\n\r\n'
    "<script>alert(document.cookie)</script>\r\n"
    "--b1\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
    'Content-Disposition: attachment; filename="screen.png"\r\n\r\n'
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
    "rkJggg==\r\n"
    "--b1--\r\n"
)


async def test_attachments_and_raw_source_download_safely(api, engine):
    make_user(engine, "ann")
    raw = (
        "From: ann@example.org\r\nTo: help@support.example.com\r\nSubject: Screenshots\r\n"
        "Message-ID: <att@mail.example>\r\nDate: Fri, 20 Nov 2026 10:00:00 +0000\r\n" + ATTACHED
    ).encode()
    outcome = ingest_and_normalize(engine, raw)
    with engine.connect() as conn:
        reference = conn.execute(
            select(Case.reference).where(Case.id == outcome.case_id)
        ).scalar_one()
    view = await api.call("ann", "GET", f"/api/cases/{reference}")
    files = {a["filename"]: a for a in view["messages"][0]["attachments"]}
    assert set(files) == {"invoice.html", "screen.png"}

    client = await api.client()
    html = await client.get(
        f"/api/attachments/{files['invoice.html']['id']}", headers=api.token("ann")
    )
    assert html.status == 200
    assert html.headers["Content-Type"] == "application/octet-stream"
    assert html.headers["Content-Disposition"].startswith('attachment; filename="invoice.html"')
    assert html.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in html.headers["Content-Security-Policy"]
    assert b"<script>" in await html.read()

    png = await client.get(
        f"/api/attachments/{files['screen.png']['id']}?inline=1", headers=api.token("ann")
    )
    assert png.headers["Content-Type"] == "image/png"
    assert png.headers["Content-Disposition"].startswith("inline;")
    assert (await png.read()).startswith(b"\x89PNG")

    source = await client.get(
        f"/api/messages/{view['messages'][0]['id']}/raw", headers=api.token("ann")
    )
    assert source.status == 200 and await source.read() == raw
    assert source.headers["Content-Type"] == "application/octet-stream"
    assert source.headers["Content-Disposition"].startswith(
        f'attachment; filename="{reference}-message-{view["messages"][0]["id"]}.eml"'
    )
    missing = await client.get("/api/attachments/999999", headers=api.token("ann"))
    assert missing.status == 404
    with engine.connect() as conn:
        actions = (
            conn.execute(
                select(AuditLog.action).where(AuditLog.actor == "user:ann").order_by(AuditLog.id)
            )
            .scalars()
            .all()
        )
    assert actions == ["attachment.downloaded", "attachment.downloaded", "message.raw_downloaded"]


async def test_the_audit_chain_holds_over_agent_actions(api, engine):
    make_user(engine, "ann")
    case = email_case(engine, "a@example.org", "Locked out")
    await api.call("ann", "POST", "/api/queue/claim-next")
    await api.call("ann", "POST", f"/api/cases/{case}/notes", 201, json={"text": "on it"})
    await api.call("ann", "POST", f"/api/cases/{case}/replies", 201, json={"text": "Fixed"})
    with engine.connect() as conn:
        rows = conn.execute(select(AuditLog).order_by(AuditLog.id)).all()
    assert [r.action for r in rows if r.actor != "system"] == [
        "token.created",
        "case.claimed",
        "case.note",
        "case.replied",
    ]
    # Each case's rows form its own chain (rows about no case, chain 0): each links to the
    # row before it in that chain, at the next position.
    previous: dict[int, tuple[str, int]] = {}
    for row in rows:
        prev, seq = previous.get(row.chain, (audit.GENESIS, 0))
        assert row.chain == (row.case_id or 0) and (row.prev_hmac, row.seq) == (prev, seq + 1)
        assert row.hmac == audit.row_hmac(
            row.prev_hmac,
            row.at,
            row.actor,
            row.action,
            row.case_id,
            row.before,
            row.after,
            chain=row.chain,
            seq=row.seq,
            form=row.form,  # 2 since 0020: the HMAC covers digests of the values
        )
        assert row.form == audit.FORM_DIGESTED
        previous[row.chain] = (row.hmac, row.seq)
    replied = rows[-1]
    assert (replied.before["status"], replied.after["status"]) == ("new", "pending_customer")
    assert replied.before["first_response_at"] is None
    assert replied.after["first_response_at"] is not None
    assert replied.after["recipient"] == "a@example.org"
