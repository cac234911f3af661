"""Canned replies (issue 22): managers share them, agents use them and keep their own; the
placeholders are filled for the case and the channel's variant is checked against its
limits. Through the API, on SQLite and PostgreSQL. Expected texts are written by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from inbox.models import AuditLog, Case, Contact
from inbox.replykit import eta_text
from tests.support.inbox_helpers import email_case, make_user

pytest_plugins = ["tests.support.inbox_fixtures"]


def _name_contact(engine: Engine, reference: str, name: str, due_in: timedelta) -> None:
    with engine.begin() as conn:
        case = conn.execute(select(Case).where(Case.reference == reference)).one()
        conn.execute(update(Contact).where(Contact.id == case.contact_id).values(name=name))
        conn.execute(
            update(Case).where(Case.id == case.id).values(due_at=datetime.now(UTC) + due_in)
        )


async def test_managers_share_agents_use_and_keep_their_own(api: Any, engine: Engine) -> None:
    make_user(engine, "mia", "manager")
    make_user(engine, "ann")
    make_user(engine, "bob")
    shared = await api.call(
        "mia",
        "POST",
        "/api/canned",
        201,
        json={
            "title": "Password reset",
            "body": "Hello {contact.name},\n\nwe reset it ({case.reference}). {agent.name}",
            "variants": {"sms": "{case.reference}: password reset. {agent.name}"},
        },
    )
    # An agent cannot make a shared one, but can make a personal one.
    refused = await api.call(
        "ann", "POST", "/api/canned", 403, json={"title": "Mine", "body": "Hi"}
    )
    assert "only a manager" in refused["error"]
    mine = await api.call(
        "ann",
        "POST",
        "/api/canned",
        201,
        json={"title": "Thanks", "body": "Thanks, {contact.name}! Answer {eta}.", "personal": True},
    )
    titles = {c["title"] for c in (await api.call("ann", "GET", "/api/canned"))["canned"]}
    assert titles == {"Password reset", "Thanks"}
    titles = {c["title"] for c in (await api.call("bob", "GET", "/api/canned"))["canned"]}
    assert titles == {"Password reset"}  # ann's personal one is hers alone
    # Bob cannot change either: one is shared (managers), the other is not his.
    await api.call(
        "bob", "PUT", f"/api/canned/{shared['canned']['id']}", 403, json={"title": "x", "body": "y"}
    )
    await api.call("bob", "DELETE", f"/api/canned/{mine['canned']['id']}", 404)

    ref = email_case(engine, "kim@example.org", "Locked out", "Please reset.")
    _name_contact(engine, ref, "Kim Lee", timedelta(hours=2, minutes=-1))
    mail = await api.call(
        "ann",
        "GET",
        f"/api/canned/{shared['canned']['id']}/render?case={ref}&channel=email",
    )
    assert mail["text"] == f"Hello Kim Lee,\n\nwe reset it ({ref}). ann"
    assert (mail["variant"], mail["fits"]) == (False, True)
    sms = await api.call(
        "ann", "GET", f"/api/canned/{shared['canned']['id']}/render?case={ref}&channel=sms"
    )
    assert sms["text"] == f"{ref}: password reset. ann" and sms["variant"] is True
    thanks = await api.call(
        "ann", "GET", f"/api/canned/{mine['canned']['id']}/render?case={ref}&channel=email"
    )
    assert thanks["text"] == "Thanks, Kim Lee! Answer within 2 hours."
    with engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(AuditLog).order_by(AuditLog.id))]
    assert actions.count("canned.created") == 2


async def test_variants_are_checked_against_their_channel(api: Any, engine: Engine) -> None:
    make_user(engine, "mia", "manager")
    too_long = await api.call(
        "mia",
        "POST",
        "/api/canned",
        400,
        json={"title": "Long", "body": "ok", "variants": {"twitter": "x" * 281}},
    )
    assert too_long["error"] == (
        "the twitter variant is too long: 281 characters: twitter takes at most 280"
    )
    typo = await api.call(
        "mia", "POST", "/api/canned", 400, json={"title": "Typo", "body": "Hi {contact.nmae}"}
    )
    assert "unknown placeholder {contact.nmae}" in typo["error"]
    unknown = await api.call(
        "mia",
        "POST",
        "/api/canned",
        400,
        json={"title": "Fax", "body": "ok", "variants": {"fax": "ok"}},
    )
    assert unknown["error"] == "no channel 'fax' to reply on"
    parts = await api.call(
        "mia",
        "POST",
        "/api/canned",
        201,
        json={"title": "Two parts", "body": "ok", "variants": {"sms": "y" * 200}},
    )
    assert parts["canned"]["checks"] == [
        {"channel": "sms", "note": "200 characters: sent as 2 sms parts", "parts": 2}
    ]


def test_eta_in_words() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert eta_text(None, now) == "as soon as we can"
    assert eta_text(now - timedelta(minutes=5), now) == "as soon as we can"
    assert eta_text(now + timedelta(minutes=30), now) == "within 30 minutes"
    assert eta_text(now + timedelta(minutes=61), now) == "within 2 hours"
    assert eta_text(now + timedelta(days=3), now) == "within 3 days"
