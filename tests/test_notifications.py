"""Issue 22, notifications, on SQLite and PostgreSQL: each event made by the real action (an
assignment through the API, a customer's mail through the real intake and normalizer on an
assigned case, a case's due time coming near), de-duplicated per case, kind and turn; read
and settings through the API with login and CSRF; the email digest sent through the outbox
to a real SMTP sink. The decisions are pure functions, tested by tables below."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, insert, inspect, select, text, update

from inbox import migrate, notifications
from inbox.models import Message, Notification, User
from inbox.notifications import Prefs
from inbox.web import pages
from tests.support.helpers import child_env, child_settings
from tests.support.inbox_helpers import Api, bulk_cases, case_row, email_case, make_user
from tests.support.outbox_helpers import drainer_for
from tests.support.sink import Sink

pytest_plugins = ["tests.support.inbox_fixtures"]

NOW = datetime.now(UTC).replace(microsecond=0)


def kinds_of(listing: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, reference) of a listing, oldest first."""
    return [(n["kind"], n["reference"]) for n in reversed(listing["notifications"])]


def stored(engine: Engine, name: str) -> list[tuple[str, int, int]]:
    """(kind, case id, turn) of a user's rows, straight from the table."""
    with engine.connect() as conn:
        user_id = conn.execute(select(User.id).where(User.name == name)).scalar_one()
        return [
            (r.kind, r.case_id, r.turn)
            for r in conn.execute(
                select(Notification)
                .where(Notification.user_id == user_id)
                .order_by(Notification.id)
            )
        ]


def first_msgid(engine: Engine, reference: str) -> str:
    with engine.connect() as conn:
        value = conn.execute(
            select(Message.external_id)
            .where(Message.case_id == case_row(engine, reference).id)
            .order_by(Message.id)
        ).first()
    assert value is not None
    return str(value[0]).strip("<>")


async def test_an_assignment_by_someone_else_notifies_once(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    make_user(engine, "bob")
    make_user(engine, "mia", "manager")
    a = email_case(engine, "kim@example.org", "Refund", "Where is my refund?", at=NOW)
    b = email_case(engine, "lee@example.org", "Login", "I cannot log in.", at=NOW)
    c = email_case(engine, "pat@example.org", "Invoice", "Send the invoice.", at=NOW)

    await api.call("mia", "POST", f"/api/cases/{a}/assign", json={"assignee": "ann"})
    mine = await api.call("ann", "GET", "/api/notifications")
    assert kinds_of(mine) == [("assigned", a)] and mine["unread"] == 1
    assert mine["notifications"][0]["text"] == f"Assigned to you: {a} Refund"
    assert (await api.call("mia", "GET", "/api/notifications"))["unread"] == 0

    # Assigned again to the one who has it: no news. Taking a case yourself: no news.
    await api.call("mia", "POST", f"/api/cases/{a}/assign", json={"assignee": "ann"})
    await api.call("ann", "POST", f"/api/cases/{b}/assign", json={"assignee": "ann"})
    # Away and back within the same turn: still the one notification.
    await api.call("mia", "POST", f"/api/cases/{a}/assign", json={"assignee": None})
    await api.call("mia", "POST", f"/api/cases/{a}/assign", json={"assignee": "ann"})
    # A bulk assignment goes through the same function.
    await api.call(
        "mia", "POST", "/api/bulk", json={"action": "assign", "references": [c], "assignee": "bob"}
    )
    assert kinds_of(await api.call("ann", "GET", "/api/notifications")) == [("assigned", a)]
    assert kinds_of(await api.call("bob", "GET", "/api/notifications")) == [("assigned", c)]
    assert stored(engine, "ann") == [("assigned", case_row(engine, a).id, 0)]


async def test_reading_needs_login_and_csrf_and_touches_only_mine(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    make_user(engine, "bob")
    make_user(engine, "mia", "manager")
    a = email_case(engine, "kim@example.org", "Refund", "Where is my refund?", at=NOW)
    b = email_case(engine, "lee@example.org", "Login", "I cannot log in.", at=NOW)
    await api.call("mia", "POST", f"/api/cases/{a}/assign", json={"assignee": "ann"})
    await api.call("mia", "POST", f"/api/cases/{b}/assign", json={"assignee": "bob"})
    anns = (await api.call("ann", "GET", "/api/notifications"))["notifications"]
    bobs = (await api.call("bob", "GET", "/api/notifications"))["notifications"]

    anonymous = await api.client()
    assert (await anonymous.get("/api/notifications")).status == 401
    client, csrf = await api.session("ann")
    assert (await client.post("/api/notifications/read", json={"all": True})).status == 403
    # Bob's id among Ann's: only hers is marked.
    response = await client.post(
        "/api/notifications/read", json={"ids": [anns[0]["id"], bobs[0]["id"]]}, headers=csrf
    )
    assert response.status == 200 and await response.json() == {"marked": 1, "unread": 0}
    assert (await client.post("/api/notifications/read", json={}, headers=csrf)).status == 400
    assert (await api.call("bob", "GET", "/api/notifications"))["unread"] == 1
    listing = await api.call("ann", "GET", "/api/notifications")
    assert listing["notifications"][0]["read_at"] is not None
    assert (await api.call("ann", "GET", "/api/notifications?unread=true"))["notifications"] == []
    marked = await api.call("bob", "POST", "/api/notifications/read", json={"all": True})
    assert marked == {"marked": 1, "unread": 0}

    paths = (await api.call("ann", "GET", "/api/openapi.json"))["paths"]
    assert {"get"} <= set(paths["/api/notifications"])
    assert {"post"} <= set(paths["/api/notifications/read"])
    assert {"get", "put"} <= set(paths["/api/me/notifications"])


async def test_a_customer_answer_on_my_case_notifies_once_per_turn(
    api: Api, engine: Engine
) -> None:
    make_user(engine, "ann")
    make_user(engine, "mia", "manager")
    a = email_case(engine, "kim@example.org", "Refund", "Where is my refund?", at=NOW)
    c = email_case(engine, "lee@example.org", "Login", "I cannot log in.", at=NOW)
    await api.call("ann", "POST", f"/api/cases/{a}/assign", json={"assignee": "ann"})
    case_id = case_row(engine, a).id

    def answer(reference: str, text: str, minutes: int) -> None:
        email_case(
            engine,
            "kim@example.org" if reference == a else "lee@example.org",
            "Re: follow-up",
            text,
            extra=f"In-Reply-To: <{first_msgid(engine, reference)}>\r\n",
            at=NOW + timedelta(minutes=minutes),
        )

    answer(a, "Any news?", 1)
    answer(a, "Hello??", 2)  # the same wait for us: the same turn
    assert stored(engine, "ann") == [("answered", case_id, 0)]
    # We answer, the customer writes again: a new turn, a new notification.
    await api.call("ann", "POST", f"/api/cases/{a}/replies", 201, json={"text": "Soon."})
    answer(a, "Still nothing.", 3)
    assert stored(engine, "ann") == [("answered", case_id, 0), ("answered", case_id, 1)]
    listing = await api.call("ann", "GET", "/api/notifications")
    assert listing["notifications"][0]["text"] == f"The customer answered: {a} Refund"
    # Nobody's case: nobody is told.
    answer(c, "Please?", 4)
    assert len(stored(engine, "ann")) == 2 and stored(engine, "mia") == []

    # Ann turns "answered" off: the next answer adds nothing for her.
    await api.call("ann", "PUT", "/api/me/notifications", json={"kinds": ["assigned", "breach"]})
    await api.call("ann", "POST", f"/api/cases/{a}/replies", 201, json={"text": "Checking."})
    answer(a, "And now?", 5)
    assert len(stored(engine, "ann")) == 2


async def test_a_case_of_mine_about_to_breach_notifies_once(
    api: Api, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    make_user(engine, "ann")
    make_user(engine, "bob")
    # The default policy: first response within 240 minutes of the message. Due in 20 min,
    # in 140 min, 2 h overdue, and due in 20 min but resolved / unassigned.
    soon = email_case(engine, "a@example.org", "Soon", "one", at=NOW - timedelta(minutes=220))
    later = email_case(engine, "b@example.org", "Later", "two", at=NOW - timedelta(minutes=100))
    late = email_case(engine, "c@example.org", "Late", "three", at=NOW - timedelta(minutes=360))
    done = email_case(engine, "d@example.org", "Done", "four", at=NOW - timedelta(minutes=220))
    email_case(engine, "e@example.org", "Nobody", "five", at=NOW - timedelta(minutes=220))
    assert case_row(engine, soon).due_at == NOW + timedelta(minutes=20)
    for reference in (soon, later, done):
        await api.call("ann", "POST", f"/api/cases/{reference}/assign", json={"assignee": "ann"})
    await api.call("bob", "POST", f"/api/cases/{late}/assign", json={"assignee": "bob"})
    await api.call("ann", "POST", f"/api/cases/{done}/status", json={"status": "resolved"})

    # A read writes nothing: asking for them, or opening the page, finds no breach.
    assert kinds_of(await api.call("ann", "GET", "/api/notifications")) == []
    client, _ = await api.session("bob")
    assert (await client.get("/notifications")).status == 200
    assert stored(engine, "ann") == [] and stored(engine, "bob") == []

    # The sweep `parity run` runs every minute, run once by its command (within [inbox]
    # notify_breach_minutes = 30 by default); a second run adds nothing.
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(child_settings(db_url))
    env = {**child_env(), "PARITY_SETTINGS": str(settings_file)}

    def sweep() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "parity", "notifications", "sweep"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    for added in (2, 0):
        ran = await asyncio.to_thread(sweep)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith(f"{added} breach notifications added, 0 digests")
    assert kinds_of(await api.call("ann", "GET", "/api/notifications")) == [("breach", soon)]
    assert kinds_of(await api.call("bob", "GET", "/api/notifications")) == [("breach", late)]

    # The daemon's sweep, later: "later" comes within 30 minutes (due at NOW + 140 min).
    with engine.begin() as conn:
        added = notifications.sweep_breaches(
            conn, NOW + timedelta(minutes=111), timedelta(minutes=30)
        )
        again = notifications.sweep_breaches(
            conn, NOW + timedelta(minutes=112), timedelta(minutes=30)
        )
    assert (added, again) == (1, 0)
    assert [k for k, _, _ in stored(engine, "ann")] == ["breach", "breach"]


async def next_event(response: Any) -> tuple[str, dict[str, Any]]:
    """The next server-sent event of a stream (comments and `retry:` skipped)."""
    lines: list[str] = []
    while True:
        # A guard against a hung stream, not a measurement: events come within a second.
        line = await asyncio.wait_for(response.content.readline(), timeout=30)
        assert line, "the stream ended"
        text = line.decode().rstrip("\n")
        if not text:
            if lines:
                break
            continue
        if not text.startswith((":", "retry:")):
            lines.append(text)
    fields = dict(line.split(": ", 1) for line in lines)
    return fields["event"], json.loads(fields["data"])


async def test_each_agent_hears_only_their_own_on_a_live_stream(
    api: Api, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Credentials are checked again at each keep-alive: soon, so the test sees a logout end it.
    monkeypatch.setattr(pages, "SSE_KEEPALIVE_SECONDS", 2.0)
    make_user(engine, "ann")
    make_user(engine, "bob")
    make_user(engine, "mia", "manager")
    a = email_case(engine, "kim@example.org", "Refund", "Where is my refund?", at=NOW)
    b = email_case(engine, "lee@example.org", "Login", "I cannot log in.", at=NOW)
    soon = email_case(engine, "pat@example.org", "Soon", "due", at=NOW - timedelta(minutes=220))
    assert (await (await api.client()).get("/events/notifications")).status == 401

    ann, ann_csrf = await api.session("ann")
    bob, bob_csrf = await api.session("bob")
    ann_stream = await ann.get("/events/notifications")
    bob_stream = await bob.get("/events/notifications")
    assert ann_stream.status == 200
    assert ann_stream.headers["Content-Type"].startswith("text/event-stream")
    # At once: the listing as GET /api/notifications gives it (nothing yet).
    assert await next_event(ann_stream) == (
        "notifications",
        {"unread": 0, "browser": True, "notifications": []},
    )
    bob_heard = [await next_event(bob_stream)]
    assert bob_heard[0][1]["notifications"] == []

    # Assigned to Ann: her stream tells her, Bob's says nothing.
    await api.call("mia", "POST", f"/api/cases/{a}/assign", json={"assignee": "ann"})
    event, data = await next_event(ann_stream)
    assert event == "notifications" and data["unread"] == 1
    assert [(n["kind"], n["reference"]) for n in data["notifications"]] == [("assigned", a)]
    # Then one for Bob: his next event is his alone (Ann's came first; had his stream sent
    # anything for it, that would be this event).
    await api.call("mia", "POST", f"/api/cases/{b}/assign", json={"assignee": "bob"})
    bob_heard.append(await next_event(bob_stream))
    _, data = bob_heard[-1]
    assert [(n["kind"], n["reference"]) for n in data["notifications"]] == [("assigned", b)]

    # Written outside the web app (the sweep of `parity run`, here on its own connection):
    # the stream finds it in the store, as it finds what other instances write.
    await api.call("ann", "POST", f"/api/cases/{soon}/assign", json={"assignee": "ann"})
    with engine.begin() as conn:
        assert notifications.sweep_breaches(conn, datetime.now(UTC), timedelta(minutes=30)) == 1
    _, data = await next_event(ann_stream)
    assert [n["kind"] for n in data["notifications"]] == ["breach", "assigned"]
    assert data["unread"] == 2

    # Read in another tab: the count follows.
    await ann.post("/api/notifications/read", json={"all": True}, headers=ann_csrf)
    assert (await next_event(ann_stream))[1]["unread"] == 0

    # Logged out, a stream ends (its credentials are checked again at each keep-alive).
    assert (await ann.post("/api/logout", headers=ann_csrf)).status == 200
    assert (await bob.post("/api/logout", headers=bob_csrf)).status == 200
    ann_rest = await asyncio.wait_for(ann_stream.content.read(), timeout=30)
    bob_rest = await asyncio.wait_for(bob_stream.content.read(), timeout=30)
    assert b"event:" not in ann_rest + bob_rest
    # Nothing of Ann's ever reached Bob's stream.
    heard_by_bob = json.dumps(bob_heard)
    assert b in heard_by_bob and a not in heard_by_bob and soon not in heard_by_bob


async def test_settings_validate_the_digest_address(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    assert await api.call("ann", "GET", "/api/me/notifications") == {
        "kinds": ["assigned", "answered", "breach"],
        "browser": True,
        "digest": False,
        "address": None,
    }
    await api.call("ann", "PUT", "/api/me/notifications", 400, json={"digest": True})
    await api.call("ann", "PUT", "/api/me/notifications", 400, json={"address": "ann@@x"})
    await api.call("ann", "PUT", "/api/me/notifications", 400, json={"kinds": ["lunch"]})
    result = await api.call(
        "ann",
        "PUT",
        "/api/me/notifications",
        json={"digest": True, "address": " ann@agents.example ", "browser": False},
    )
    assert result == {
        "kinds": ["assigned", "answered", "breach"],
        "browser": False,
        "digest": True,
        "address": "ann@agents.example",
    }
    # A field left out stays as it was.
    result = await api.call("ann", "PUT", "/api/me/notifications", json={"kinds": ["breach"]})
    assert result["address"] == "ann@agents.example" and result["digest"] is True
    assert result["kinds"] == ["breach"]


async def test_the_digest_goes_through_the_outbox_once_per_period(
    api: Api, engine: Engine, sink: Sink
) -> None:
    make_user(engine, "ann")
    make_user(engine, "mia", "manager")
    a = email_case(engine, "kim@example.org", "Refund", "Where is my refund?", at=NOW)
    b = email_case(engine, "lee@example.org", "Login", "I cannot log in.", at=NOW)
    c = email_case(engine, "pat@example.org", "Invoice", "Send the invoice.", at=NOW)
    drainer = drainer_for(engine, sink)
    drainer.drain_once()  # the customers' acknowledgements
    sink.delivered.clear()
    await api.call(
        "ann", "PUT", "/api/me/notifications", json={"digest": True, "address": "ann@agents.ex"}
    )
    await api.call("mia", "POST", f"/api/cases/{a}/assign", json={"assignee": "ann"})
    await api.call("mia", "POST", f"/api/cases/{b}/assign", json={"assignee": "ann"})
    listing = await api.call("ann", "GET", "/api/notifications")
    # One of them read in the page: it stays out of the digest.
    read_id = next(n["id"] for n in listing["notifications"] if n["reference"] == b)
    await api.call("ann", "POST", "/api/notifications/read", json={"ids": [read_id]})

    after, period = timedelta(minutes=30), timedelta(minutes=60)

    def digests(at: datetime) -> int:
        return notifications.send_digests(engine, after=after, period=period, now=at)

    assert digests(datetime.now(UTC)) == 0  # nothing is 30 minutes old yet
    start = datetime.now(UTC) + timedelta(minutes=31)
    assert digests(start) == 1
    assert digests(start + timedelta(minutes=1)) == 0  # at most one per period
    assert drainer.drain_once().sent == 1
    assert [d.rcpt_tos for d in sink.delivered] == [["ann@agents.ex"]]
    message = sink.delivered[0].parsed()
    assert message["Subject"] == "Parity: 1 unread notification"
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_content()
    assert f"Assigned to you: {a} Refund" in text and b not in text

    # A new one later: the next digest, after the period, carries only it.
    await api.call("mia", "POST", f"/api/cases/{c}/assign", json={"assignee": "ann"})
    assert digests(start + timedelta(minutes=50)) == 0
    assert digests(start + timedelta(minutes=61)) == 1
    drainer.drain_once()
    second = sink.delivered[1].parsed().get_content()
    assert f"Assigned to you: {c} Invoice" in second and a not in second

    # Digest off: nothing more, however much waits.
    with engine.begin() as conn:
        conn.execute(update(Notification).values(digested_at=None, read_at=None))
    await api.call("ann", "PUT", "/api/me/notifications", json={"digest": False})
    assert digests(start + timedelta(days=1)) == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, Prefs()),
        ({}, Prefs()),
        ({"kinds": ["breach", "lunch", 3]}, Prefs(kinds=frozenset({"breach"}))),
        ({"kinds": "breach"}, Prefs()),  # not a list: the defaults
        ({"browser": False, "digest": True}, Prefs(browser=False, digest=True)),
        ({"browser": "no", "digest": 1}, Prefs()),  # not booleans: the defaults
        ({"kinds": []}, Prefs(kinds=frozenset())),
    ],
)
def test_stored_preferences_are_read_forgivingly(raw: Any, expected: Prefs) -> None:
    assert notifications.prefs_of(raw) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ann@agents.example", "ann@agents.example"),
        ("  Ann.Lee+help@mail.example.co.uk ", "Ann.Lee+help@mail.example.co.uk"),
        ("", None),
        (None, None),
        ("ann", ValueError),
        ("ann@localhost", ValueError),
        ("Ann <ann@agents.example>", ValueError),
        ("ann@agents.example\r\nBcc: x@evil.example", ValueError),
        ("a b@agents.example", ValueError),
        ("@agents.example", ValueError),
        ("a@" + "b" * 320 + ".example", ValueError),
    ],
)
def test_digest_addresses(value: str | None, expected: Any) -> None:
    if expected is ValueError:
        with pytest.raises(notifications.BadPrefs):
            notifications.check_address(value)
    else:
        assert notifications.check_address(value) == expected


@pytest.mark.parametrize(
    ("target", "previous", "actor", "expected"),
    [
        (2, None, 1, True),  # a manager gives Ann a new case
        (2, 3, 1, True),  # moved from Bob to Ann
        (2, 2, 1, False),  # hers already
        (2, None, 2, False),  # she took it herself
        (None, 2, 1, False),  # taken from her: not this kind of news
    ],
)
def test_who_hears_of_an_assignment(
    target: int | None, previous: int | None, actor: int, expected: bool
) -> None:
    assert notifications.should_notify_assignee(target, previous, actor) is expected


T = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("prefs", "address", "last", "now", "expected"),
    [
        (Prefs(digest=True), "a@b.example", None, T, True),
        (Prefs(digest=True), "a@b.example", T - HOUR, T, True),  # exactly one period
        (Prefs(digest=True), "a@b.example", T - HOUR + timedelta(seconds=1), T, False),
        (Prefs(digest=False), "a@b.example", None, T, False),
        (Prefs(digest=True), None, None, T, False),
    ],
)
def test_when_a_digest_may_go(
    prefs: Prefs, address: str | None, last: datetime | None, now: datetime, expected: bool
) -> None:
    assert notifications.digest_due(prefs, address, last, now, HOUR) is expected


def test_the_digest_text() -> None:
    subject, body = notifications.digest_text("ann", ["Assigned to you: P-1 Refund"], 2)
    assert subject == "Parity: 3 unread notifications"
    assert "- Assigned to you: P-1 Refund\n- and 2 more\n" in body
    assert body.startswith("Hello ann,\n")


def _notify(engine: Engine, user_id: int, case_id: int, count: int, unread: int) -> list[int]:
    """`count` notifications for one agent, the last `unread` of them unread; their ids."""
    at = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    rows = [
        {
            "user_id": user_id,
            "case_id": case_id,
            "kind": "answered",
            "turn": n,
            "created_at": at,
            "read_at": None if n >= count - unread else at,
        }
        for n in range(count)
    ]
    with engine.begin() as conn:
        return list(conn.execute(insert(Notification).returning(Notification.id), rows).scalars())


def test_an_open_pages_signature_is_its_agents_newest_and_unread_count(engine):
    case_id = bulk_cases(engine, 1)[0]
    ann, bo = make_user(engine, "ann-sig"), make_user(engine, "bo-sig")
    anns = _notify(engine, ann, case_id, 40, unread=7)
    bos = _notify(engine, bo, case_id, 5, unread=2)
    assert notifications.signature(engine, ann) == (max(anns), 7)
    assert notifications.signature(engine, bo) == (max(bos), 2)
    notifications.mark_read(engine, ann, anns[-3:])
    assert notifications.signature(engine, ann) == (max(anns), 4)
    assert notifications.signature(engine, make_user(engine, "cy-sig")) == (0, 0)


def test_the_unread_count_reads_the_unread_index_not_every_notification(engine):
    """The count every open page asks for each second: over ix_notifications_unread, the
    agent's unread notifications, where it used to read all they ever had."""
    case_id = bulk_cases(engine, 1)[0]
    ann = make_user(engine, "ann-plan")
    _notify(engine, ann, case_id, 2000, unread=3)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
        for query in (notifications.unread_query(ann), notifications.signature_query(ann)):
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            if conn.dialect.name == "sqlite":
                plan = " ".join(
                    str(row[-1]) for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql))
                )
            else:
                plan = " ".join(str(row[0]) for row in conn.execute(text("EXPLAIN " + sql)))
            assert "ix_notifications_unread" in plan, plan


def test_migration_0028_adds_the_unread_index_and_its_downgrade_drops_it(engine):
    def indexes() -> set[str]:
        with engine.connect() as conn:
            return {i["name"] for i in inspect(conn).get_indexes("notifications")}

    assert "ix_notifications_unread" in indexes()
    config = migrate._config()
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0027")
            conn.commit()
        assert "ix_notifications_unread" not in indexes()
        assert "ix_notifications_user" in indexes()
    finally:  # PostgreSQL's test database is shared by the tests after this one
        migrate.upgrade(engine)
    assert "ix_notifications_unread" in indexes()
