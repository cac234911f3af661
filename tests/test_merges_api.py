"""Merge, undo, link and unlink through the JSON API and the `parity` command, on SQLite and
PostgreSQL; the queue and case API carry the merge suggestions a page shows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from inbox.models import AuditLog, Message
from parity.cli import main
from tests.support.inbox_helpers import Api, case_row, email_case, make_user
from tests.test_cli import settings_for

pytest_plugins = ["tests.support.inbox_fixtures"]

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
COMPLAINT = (
    "I have been locked out of my account since yesterday evening. Every time I try to log in "
    "it says my password is wrong, and the reset email never arrives in my inbox or spam "
    "folder. I need to get into my account today because my invoices are in there."
)
# The same complaint pasted from another address with small edits (one word in twenty).
EDITED = COMPLAINT.replace("yesterday evening", "yesterday night").replace("invoices", "bills")


async def test_merge_undo_link_and_suggestions_over_http(api: Api, engine: Engine) -> None:
    make_user(engine, "ada")
    a = email_case(engine, "alice@example.com", "Locked out", COMPLAINT, at=T0)
    b = email_case(
        engine, "alice.w@work.example", "Account locked", EDITED, at=T0 + timedelta(hours=1)
    )
    unrelated = email_case(
        engine, "bob@example.org", "Invoice question", "Why was I charged twice in March?", at=T0
    )

    queue = await api.call("ada", "GET", "/api/queue")
    rows = {r["reference"]: r for r in queue["cases"]}
    assert [s["reference"] for s in rows[a]["suggestions"]] == [b]
    assert [s["reference"] for s in rows[b]["suggestions"]] == [a]
    assert rows[unrelated]["suggestions"] == []
    assert 0.5 <= rows[a]["suggestions"][0]["score"] <= 1.0
    view = await api.call("ada", "GET", f"/api/cases/{a}")
    assert [s["reference"] for s in view["suggestions"]] == [b]
    # The queue page shows the suggestion beside the case, as a link, never as a merge.
    client, _ = await api.session("ada")
    page = await client.get("/queue/rows")
    html = await page.text()
    assert page.status == 200, html
    assert f'similar to <a href="/cases/{b}">{b}</a>' in html
    assert f'similar to <a href="/cases/{a}">{a}</a>' in html

    merged = await api.call("ada", "POST", f"/api/cases/{b}/merge", 201, json={"into": a})
    merge_id = merged["merge"]["id"]
    assert merged["merge"]["source"] == b and merged["merge"]["into"] == a
    # A merged case is no longer open, so it is no longer suggested.
    view = await api.call("ada", "GET", f"/api/cases/{a}")
    assert view["suggestions"] == []
    history = await api.call("ada", "GET", f"/api/cases/{b}/merges")
    assert [m["id"] for m in history["merges"]] == [merge_id]

    undone = await api.call("ada", "POST", f"/api/merges/{merge_id}/undo")
    assert undone["merge"]["undone_by"] == "user:ada"
    await api.call("ada", "POST", f"/api/merges/{merge_id}/undo", 409)
    await api.call("ada", "POST", "/api/merges/999999/undo", 404)
    await api.call("ada", "POST", f"/api/cases/{a}/merge", 400, json={"into": a})

    linked = await api.call(
        "ada",
        "POST",
        "/api/identities/link",
        json={"channel": "email", "handle": "alice.w@work.example", "to_case": a},
    )
    assert linked["moved_cases"] == [b]
    assert case_row(engine, b).contact_id == case_row(engine, a).contact_id
    await api.call(
        "ada",
        "POST",
        "/api/identities/unlink",
        json={"channel": "email", "handle": "alice.w@work.example"},
    )
    assert case_row(engine, b).contact_id != case_row(engine, a).contact_id
    with engine.connect() as conn:
        actions = list(conn.execute(select(AuditLog.action).order_by(AuditLog.id)).scalars())
    assert actions[-6:] == [
        "case.merged",
        "case.absorbed",
        "case.unmerged",
        "case.unabsorbed",
        "identity.linked",
        "identity.unlinked",
    ]


def test_cli_merge_unmerge_link_unlink(
    db_url: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process: the argument parsing and output are the CLI's own; a subprocess per call
    # would cost seconds of interpreter start-up each on this shared machine.
    settings = settings_for(tmp_path, db_url)

    def parity(*args: str) -> tuple[int, Any, str]:
        code = main(["--settings", str(settings), *args])
        out = capsys.readouterr()
        return code, json.loads(out.out) if code == 0 else None, out.err

    def json_out(result: tuple[int, Any, str]) -> Any:
        assert result[0] == 0, result[2]
        return result[1]

    a = email_case(engine, "carol@example.com", "No access", "I cannot log in at all.", at=T0)
    b = email_case(engine, "carol@home.example", "No access", "Still no access.", at=T0)
    a_messages = sorted(m for m in _messages(engine, a))
    b_messages = _messages(engine, b)
    merged = json_out(parity("cases", "merge", b, a))
    assert _messages(engine, a) == sorted(a_messages + b_messages)
    json_out(parity("cases", "unmerge", str(merged["id"])))
    assert _messages(engine, a) == a_messages and _messages(engine, b) == b_messages
    again = parity("cases", "unmerge", str(merged["id"]))
    assert again[0] == 1 and "undone already" in again[2]
    linked = json_out(parity("contacts", "link", "email", "carol@home.example", "--to-case", a))
    assert linked["moved_cases"] == [b]
    json_out(parity("contacts", "unlink", "email", "carol@home.example"))
    assert case_row(engine, b).contact_id != case_row(engine, a).contact_id


def _messages(engine: Engine, reference: str) -> list[int]:
    case_id = case_row(engine, reference).id
    with engine.connect() as conn:
        return sorted(conn.execute(select(Message.id).where(Message.case_id == case_id)).scalars())


async def test_undo_is_refused_while_another_agent_holds_the_survivor(
    api: Api, engine: Engine
) -> None:
    """Undoing takes messages out of the surviving case: as with a merge, not from under an
    agent working on it, unless a manager forces it."""
    make_user(engine, "ada")
    make_user(engine, "bo")
    make_user(engine, "max", "manager")
    a = email_case(engine, "alice@example.com", "Locked out", COMPLAINT, at=T0)
    b = email_case(engine, "alice.w@work.example", "Account locked", EDITED, at=T0)
    merged = await api.call("ada", "POST", f"/api/cases/{b}/merge", 201, json={"into": a})
    merge_id = merged["merge"]["id"]
    await api.call("bo", "POST", f"/api/cases/{a}/claim", json={})

    refused = await api.call("ada", "POST", f"/api/merges/{merge_id}/undo", 409)
    assert refused["holder"] == "bo"
    # An agent cannot force; a manager can.
    await api.call("ada", "POST", f"/api/merges/{merge_id}/undo", 409, json={"force": True})
    undone = await api.call("max", "POST", f"/api/merges/{merge_id}/undo", json={"force": True})
    assert undone["merge"]["undone_by"] == "user:max"
    assert case_row(engine, b).status != "merged"
