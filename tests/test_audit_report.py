"""The manager audit report on a seeded data set with known answers, on SQLite and
PostgreSQL: the expected figures are computed here from the raw events with plain Python
(sorting and a hand-written interpolation), never with inbox/report.py.

Also: the command's JSON and CSV, the threshold's breach flag (command, page, health), the
audit API's roles, filters and exports, and the drill-down."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import Engine, insert, select, update

from inbox import audit, report_rows
from inbox import report as report_mod
from inbox.models import AuditLog, AuditSealHead, Case, CaseTurn, Contact, Message
from inbox.report import AuditSettings
from inbox.web import create_app, manager
from inbox.web.config import InboxSettings
from tests.support.inbox_helpers import DOMAIN, Api, email_case, make_user

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Event:
    """One case's raw history, in hours and minutes from its first inbound message."""

    channel: str
    visibility: str
    age_h: float  # first inbound this many hours ago
    response_min: float | None  # first reply by a person, minutes after
    resolved_h: float | None  # resolved this many hours after
    due_h: float  # SLA due this many hours after
    followups: int = 0
    ack: str | None = "sent"
    eta_h: float | None = None  # what the acknowledgement promised, hours after
    later_visibility: str | None = None  # a second inbound message on the other side
    # Follow-ups that waited for us: (hours after the first inbound, reply minutes after the
    # follow-up or None, due hours after the follow-up).
    turns: tuple[tuple[float, float | None, float], ...] = ()
    agent: str | None = None  # the assignee
    reopens: int = 0


EVENTS = [
    # email: private, slow-ish
    Event("email", "private", 200, 90, 30, 4, 1, "sent", 3, turns=((10, 120, 4),), agent="ann"),
    Event("email", "private", 150, 300, 40, 4, 0, "sent", 3, agent="bob", reopens=1),
    Event("email", "private", 100, 45, None, 4, 2, "sent", 3, turns=((5, 30, 4), (20, 500, 4))),
    Event("email", "private", 80, None, None, 4, 1, "sent", 3),  # overdue, unanswered
    Event("email", "private", 2, None, None, 8, 0, "queued", 6),  # not yet due
    Event("email", "private", 60, 600, 20, 8, 0, "withheld", agent="ann"),
    # twitter: public mentions answered fast, one DM
    Event("twitter", "public", 300, 10, 2, 1, 0, "sent", 1, turns=((1, 15, 1),), agent="ann"),
    Event("twitter", "public", 250, 20, 3, 1, 0, "sent", 1, agent="bob"),
    Event(
        "twitter",
        "public",
        120,
        5,
        None,
        1,
        0,
        "sent",
        1,
        later_visibility="private",
        turns=((2, 90, 1), (50, None, 1)),
    ),  # the second follow-up is overdue, unanswered
    Event("twitter", "private", 90, 95, 5, 1, 3, "failed", 1, agent="bob", reopens=2),
    # sms: one case only
    Event("sms", "private", 50, 240, 10, 4, 1, None, turns=((3, None, 4),)),  # resolved: not judged
    # reddit: public, unanswered and open
    Event("reddit", "public", 40, None, None, 2, 0, "sent", 2),
    Event("reddit", "public", 30, 30, 1, 2, 0, "sent", 2, turns=((20, 60, 2),), agent="ann"),
]
# Outside a 30-day period: must not count anywhere.
OLD = Event("email", "private", 24 * 45, 1, 1, 4, 5, "sent", 3)


def seed(engine: Engine, events: list[Event]) -> dict[str, Event]:
    by_ref: dict[str, Event] = {}
    agents = {e.agent for e in events if e.agent}
    users = {name: make_user(engine, name) for name in sorted(agents)}
    with engine.begin() as conn:
        contact = conn.execute(
            insert(Contact).values(name="seed", created_at=NOW).returning(Contact.id)
        ).scalar_one()
        for n, e in enumerate(events):
            start = NOW - timedelta(hours=e.age_h)
            response = start + timedelta(minutes=e.response_min) if e.response_min else None
            resolved = start + timedelta(hours=e.resolved_h) if e.resolved_h else None
            case_id = conn.execute(
                insert(Case)
                .values(
                    token="t" * 12,
                    contact_id=contact,
                    status="resolved" if resolved else ("open" if response else "new"),
                    channel=e.channel,
                    subject=f"seed {n}",
                    due_at=start + timedelta(hours=e.due_h),
                    first_inbound_at=start,
                    first_response_at=response,
                    resolved_at=resolved,
                    last_activity_at=start,
                    created_at=start,
                    followups=e.followups,
                    ack_state=e.ack,
                    reopens=e.reopens,
                    assignee_id=users[e.agent] if e.agent else None,
                    side=e.visibility,
                    first_due_at=start + timedelta(hours=e.due_h),
                    ack_eta_at=start + timedelta(hours=e.eta_h) if e.eta_h is not None else None,
                )
                .returning(Case.id)
            ).scalar_one()
            reference = f"C-{case_id:06d}"
            turns = [(start, response, start + timedelta(hours=e.due_h))]
            for after_h, reply_min, due_h in e.turns:
                began = start + timedelta(hours=after_h)
                replied = began + timedelta(minutes=reply_min) if reply_min else None
                turns.append((began, replied, began + timedelta(hours=due_h)))
            for seq, (began, replied, due) in enumerate(turns):
                conn.execute(
                    insert(CaseTurn).values(
                        case_id=case_id, seq=seq, started_at=began, due_at=due, responded_at=replied
                    )
                )
            # The case's due_at is its open turn's (the last one); turn 0 keeps the first.
            conn.execute(update(Case).where(Case.id == case_id).values(due_at=turns[-1][2]))
            conn.execute(update(Case).where(Case.id == case_id).values(reference=reference))
            sides = [(e.visibility, start)]
            if e.later_visibility:
                sides.append((e.later_visibility, start + timedelta(minutes=1)))
            for i, (side, at) in enumerate(sides):
                conn.execute(
                    insert(Message).values(
                        case_id=case_id,
                        channel=e.channel,
                        direction="inbound",
                        visibility=side,
                        dedup_key=f"seed:{case_id}:{i}",
                        from_handle="someone",
                        received_at=at,
                        thread={},
                        meta={},
                    )
                )
            if e.eta_h is not None:
                audit.append(
                    conn,
                    actor="system",
                    action="acknowledgement.queued",
                    case_id=case_id,
                    after={"eta_at": (start + timedelta(hours=e.eta_h)).isoformat()},
                )
            by_ref[reference] = e
    return by_ref


# --- the expected figures, from the raw events, with plain Python -------------------------


def pct(values: list[float], p: int) -> float | None:
    """Linear interpolation between closest ranks over n-1 steps: the 'inclusive' rule."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * p / 100
    low = math.floor(position)
    if low + 1 >= len(ordered):
        return ordered[low]
    return ordered[low] + (ordered[low + 1] - ordered[low]) * (position - low)


def expected(
    events: list[Event], key: Callable[[Event], str | None] = lambda e: e.channel
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in sorted({k for e in events if (k := key(e)) is not None}):
        mine = [e for e in events if key(e) == name]
        responses = [e.response_min * 60 for e in mine if e.response_min]
        resolutions = [e.resolved_h * 3600 for e in mine if e.resolved_h]
        judged = [e for e in mine if e.response_min or e.age_h > e.due_h]
        met = [e for e in judged if e.response_min and e.response_min <= e.due_h * 60]
        unanswered = [e for e in mine if not e.response_min and not e.resolved_h]
        eligible = [e for e in mine if e.ack is not None]
        # Next turns: answered ones count; unanswered ones only when overdue on an open case.
        later = [(e, t) for e in mine for t in e.turns]
        next_times = [t[1] * 60 for _, t in later if t[1]]
        next_judged = [
            (e, t) for e, t in later if t[1] or (not e.resolved_h and e.age_h > t[0] + t[2])
        ]
        next_met = [1 for _, t in next_judged if t[1] and t[1] <= t[2] * 60]
        ever_resolved = [e for e in mine if e.resolved_h or e.reopens]
        reopened = [e for e in mine if e.reopens]
        out[name] = {
            "volume": len(mine),
            "first_response_p50_s": pct(responses, 50),
            "first_response_p90_s": pct(responses, 90),
            "resolution_p50_s": pct(resolutions, 50),
            "resolution_p90_s": pct(resolutions, 90),
            "sla_attained_pct": round(100 * len(met) / len(judged), 2) if judged else None,
            "unanswered": len(unanswered),
            "oldest_unanswered_age_s": max((e.age_h * 3600 for e in unanswered), default=None),
            "ack_coverage_pct": (
                round(100 * sum(e.ack == "sent" for e in eligible) / len(eligible), 2)
                if eligible
                else None
            ),
            "followups_per_case": round(sum(e.followups for e in mine) / len(mine), 4),
            "next_turns": len(later),
            "next_answered": len(next_times),
            "next_response_p50_s": pct(next_times, 50),
            "next_response_p90_s": pct(next_times, 90),
            "next_sla_judged": len(next_judged),
            "next_response_sla_attained_pct": (
                round(100 * len(next_met) / len(next_judged), 2) if next_judged else None
            ),
            "reopen_rate_pct": (
                round(100 * len(reopened) / len(ever_resolved), 2) if ever_resolved else None
            ),
        }
    return out


def expected_promises(events: list[Event]) -> tuple[float | None, float | None]:
    judged = [e for e in events if e.eta_h is not None and (e.response_min or e.age_h > e.eta_h)]
    kept = [e for e in judged if e.response_min and e.response_min <= e.eta_h * 60]  # type: ignore[operator]
    errors = [e.response_min * 60 - e.eta_h * 3600 for e in judged if e.response_min]  # type: ignore[operator]
    return pct(errors, 50), (round(100 * len(kept) / len(judged), 2) if judged else None)


def expected_ratio(figures: dict[str, dict[str, Any]]) -> float:
    medians = [f["first_response_p50_s"] for f in figures.values() if f["first_response_p50_s"]]
    return float(max(medians) / min(medians))


def check_channels(got: dict[str, Any], want: dict[str, dict[str, Any]]) -> None:
    assert set(got) == set(want)
    for channel, figures in want.items():
        for key, value in figures.items():
            if key.startswith("oldest") and value is not None:
                # Seeded ages count from NOW, the report's from its own "now", which is
                # later by however long the suite has run since this module was imported (a
                # loaded machine took more than the 300 s this once allowed).
                late = (datetime.now(UTC) - NOW).total_seconds() + 1.0
                assert -1.0 <= got[channel][key] - value <= late, (channel, key, late)
            else:
                assert got[channel][key] == pytest.approx(value), (channel, key, got[channel])


def parity_cli(db_url: str, tmp_path: Any, *args: str, threshold: float = 2.0) -> Any:
    settings = tmp_path / "settings.toml"
    settings.write_text(
        f'[database]\nurl = "{db_url}"\n[audit]\nparity_ratio_threshold = {threshold}\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "parity", "--settings", str(settings), "audit", *args],
        capture_output=True,
        text=True,
        check=False,
    )


# --- tests ------------------------------------------------------------------------------------


def test_the_command_reports_the_seeded_figures_as_json_and_csv(engine, db_url, tmp_path):
    seed(engine, [*EVENTS, OLD])
    want = expected(EVENTS)
    ratio = expected_ratio(want)
    assert ratio > 2  # the seed is built to breach the default threshold

    run = parity_cli(db_url, tmp_path, "--since", "30d", "--json", threshold=100)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    check_channels(data["channels"], want)
    assert data["parity_ratio"] == pytest.approx(ratio, rel=1e-3)
    assert data["parity_breach"] is False
    # Public against private goes by each case's FIRST inbound message.
    public = [e for e in EVENTS if e.visibility == "public"]
    assert data["sides"]["public"]["volume"] == len(public)
    assert data["sides"]["private"]["volume"] == len(EVENTS) - len(public)
    assert data["sides"]["public"]["first_response_p50_s"] == pytest.approx(
        pct([e.response_min * 60 for e in public if e.response_min], 50)
    )
    error_p50, kept_pct = expected_promises(EVENTS)
    assert data["total"]["promise_error_p50_s"] == pytest.approx(error_p50)
    assert data["total"]["promise_kept_pct"] == pytest.approx(kept_pct)

    run = parity_cli(db_url, tmp_path, "--since", "30d", "--csv", threshold=100)
    assert run.returncode == 0, run.stderr
    table = {(r["group"], r["name"]): r for r in csv.DictReader(io.StringIO(run.stdout))}
    for channel, figures in want.items():
        row = table[("channel", channel)]
        assert int(row["volume"]) == figures["volume"]
        assert int(row["unanswered"]) == figures["unanswered"]
        p50 = figures["first_response_p50_s"]
        assert (float(row["first_response_p50_s"]) if row["first_response_p50_s"] else None) == (
            pytest.approx(p50) if p50 is not None else None
        )

    # The default threshold (2.0) is breached: said on stderr and in the table; the report
    # itself succeeded, so exit 0, unless asked to fail on a breach (exit status 3).
    run = parity_cli(db_url, tmp_path, "--since", "30d")
    assert run.returncode == 0 and "PARITY BREACH" in run.stderr
    assert "BREACH" in run.stdout
    run = parity_cli(db_url, tmp_path, "--since", "30d", "--fail-on-breach")
    assert run.returncode == 3 and "PARITY BREACH" in run.stderr


@pytest.fixture
async def audit_api(engine: Engine) -> AsyncIterator[Api]:
    app = create_app(engine, InboxSettings(), message_id_domain=DOMAIN)
    manager.install(app, AuditSettings(parity_ratio_threshold=2.0))
    api = Api(engine, TestServer(app))
    await api.server.start_server()
    yield api
    for client in api.clients:
        await client.close()
    await api.server.close()


async def test_managers_see_the_page_and_api_agents_get_403(engine, audit_api):
    refs = seed(engine, EVENTS)
    make_user(engine, "agent1")
    make_user(engine, "boss", role="manager")
    api = audit_api
    paths = [
        "/manager/audit",
        "/api/audit/report?since=30d",
        "/api/audit/cases?channel=email",
        "/api/audit/log",
        "/api/audit/checkpoint",
    ]
    anonymous = await api.client()
    for path in paths:
        await api.call("agent1", "GET", path, expect=403)
        response = await anonymous.get(path, allow_redirects=False)
        # Nobody logged in: the API says 401, the page sends them to the login page.
        assert response.status == (303 if path.startswith("/manager") else 401), path
    page = await api.call("boss", "GET", "/manager/audit?since=30d")
    # An inbox page: the base template's navigation with the Manager link, no inline script
    # (the CSP forbids it), readable labels instead of field names.
    assert "<svg" in page and "Parity breach" in page and "<script>" not in page
    assert 'href="/manager/audit">Manager</a>' in page and 'href="/queue">Queue</a>' in page
    assert "First response (median)" in page and "first_response_p50_s" not in page
    # An agent at the page gets the inbox's 403 page, not JSON.
    forbidden = await api.call("agent1", "GET", "/manager/audit", expect=403)
    assert "Not for your role" in forbidden and "{" not in forbidden.split("<main>")[1]
    assert ">Manager</a>" not in forbidden
    report = await api.call("boss", "GET", "/api/audit/report?since=30d")
    check_channels(report["channels"], expected(EVENTS))
    assert report["parity_breach"] is True

    # Drill-down: a histogram bucket and a table cell give exactly the cases behind them.
    bucket = report_mod.bucket_of(90 * 60)
    found = await api.call(
        "boss", "GET", f"/api/audit/cases?since=30d&channel=email&bucket={bucket}"
    )
    want = [
        r
        for r, e in refs.items()
        if e.channel == "email" and e.response_min and 3600 <= e.response_min * 60 < 4 * 3600
    ]
    assert sorted(found["references"]) == sorted(want) and want
    found = await api.call("boss", "GET", "/api/audit/cases?since=30d&which=unanswered")
    want = [r for r, e in refs.items() if not e.response_min and not e.resolved_h]
    assert sorted(found["references"]) == sorted(want)
    drill = f"/manager/audit/cases?since=30d&amp;channel=email&amp;bucket={bucket}"
    assert drill in page
    # The drill-down is a case list: the queue's rows for exactly those cases.
    listed = await api.call("boss", "GET", drill.replace("&amp;", "&"))
    want = sorted(
        r
        for r, e in refs.items()
        if e.channel == "email" and e.response_min and 3600 <= e.response_min * 60 < 4 * 3600
    )
    assert sorted(re.findall(r'data-reference="(C-\d+)"', listed)) == want
    missed = await api.call("boss", "GET", "/manager/audit/cases?since=30d&which=next_missed")
    assert sorted(re.findall(r'data-reference="(C-\d+)"', missed)) == sorted(
        r
        for r, e in refs.items()
        if any(
            (t[1] and t[1] > t[2] * 60) or (not t[1] and not e.resolved_h and e.age_h > t[0] + t[2])
            for t in e.turns
        )
    )

    # The audit log: filters and exports.
    log = await api.call("boss", "GET", "/api/audit/log?action=acknowledgement.queued")
    assert len(log["entries"]) == sum(e.eta_h is not None for e in EVENTS)
    one = log["entries"][0]["case"]
    only = await api.call("boss", "GET", f"/api/audit/log?case={one}")
    assert [e["case"] for e in only["entries"]] == [one]
    assert (await api.call("boss", "GET", "/api/audit/log?actor=nobody"))["entries"] == []
    everything = (await api.call("boss", "GET", "/api/audit/log"))["entries"]
    exported = await api.call("boss", "GET", "/api/audit/log?format=csv")
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [(int(r["id"]), r["hmac"]) for r in rows] == [(e["id"], e["hmac"]) for e in everything]
    checkpoint = await api.call("boss", "GET", "/api/audit/checkpoint")
    # The checkpoint is a seal of every chain's head, made by this request.
    with engine.connect() as conn:
        sealed = conn.execute(
            select(AuditSealHead.row_id, AuditSealHead.hmac).where(
                AuditSealHead.seal_id == checkpoint["id"]
            )
        ).all()
        assert audit.verify(conn, checkpoint).ok
        stored = conn.execute(
            select(AuditLog.id, AuditLog.case_id, AuditLog.hmac).order_by(AuditLog.id)
        ).all()
    newest_per_chain: dict[int, tuple[int, str]] = {}
    for row_id, case_id, hmac in stored:
        newest_per_chain[case_id or 0] = (row_id, hmac)
    assert checkpoint["kind"] == "seal"
    assert sorted(sealed) == sorted(newest_per_chain.values())


def test_health_field_flags_a_breach_without_customer_data(engine):
    seed(engine, EVENTS)
    manager._health_cache.clear()
    breach = manager.parity_health(engine, AuditSettings(parity_ratio_threshold=2.0))
    assert breach["breach"] is True
    assert breach["ratio"] == pytest.approx(expected_ratio(expected(EVENTS)), rel=1e-3)
    manager._health_cache.clear()
    calm = manager.parity_health(engine, AuditSettings(parity_ratio_threshold=1000.0))
    assert calm["breach"] is False
    assert set(calm) == {"ratio", "threshold", "breach", "period_days"}


def test_a_real_acknowledgement_gives_a_promise_but_no_first_response(engine):
    """Through the real intake and normalizer: the ack's ETA reaches the report (from the
    audit row the normalizer writes), and the acknowledgement is not a first response."""
    reference = email_case(engine, "quiet.customer@example.org", "My invoice is wrong")
    with engine.connect() as conn:
        written = conn.execute(
            select(AuditLog.after).where(AuditLog.action == "acknowledgement.queued")
        ).scalar_one()
        rows = report_rows.fetch(conn, NOW - timedelta(days=400), NOW + timedelta(days=1))
    [row] = [r for r in rows if r.reference == reference]
    assert row.eta_at == datetime.fromisoformat(written["eta_at"])
    assert row.first_response_at is None and row.ack_state == "queued"
    assert row.channel == "email" and row.visibility == "private"


def test_next_response_per_channel_and_agent_known_answers(engine):
    """Next responses, the parity ratio on them, and the per-agent table: against the
    oracle above and against figures worked out by hand from EVENTS."""
    seed(engine, [*EVENTS, OLD])
    with engine.connect() as conn:
        rows = report_rows.fetch(conn, NOW - timedelta(days=30), NOW + timedelta(minutes=1))
    now = datetime.now(UTC)
    data = report_mod.build(
        rows,
        now=now,
        since=NOW - timedelta(days=30),
        until=now,
        threshold=2.0,
        parity_on="next_response",
    )
    check_channels(data["channels"], expected(EVENTS))
    check_channels(data["agents"], expected(EVENTS, key=lambda e: e.agent))
    # By hand. email's next responses: 30, 120, 500 min = 1800, 7200, 30000 s; the median is
    # the middle one; p90 sits at rank 1.8: 7200 + 0.8 * (30000 - 7200) = 25440. Two of the
    # three were within their 4 h.
    email = data["channels"]["email"]
    assert (email["next_response_p50_s"], email["next_response_p90_s"]) == (7200.0, 25440.0)
    assert email["next_response_sla_attained_pct"] == 66.67
    # twitter: 15 and 90 min (900, 5400 s): median 3150, p90 900 + 0.9 * 4500 = 4950; the
    # third follow-up waits unanswered past its due time on an open case: judged, missed.
    twitter = data["channels"]["twitter"]
    assert (twitter["next_response_p50_s"], twitter["next_response_p90_s"]) == (3150.0, 4950.0)
    assert (twitter["next_sla_judged"], twitter["next_response_sla_attained_pct"]) == (3, 33.33)
    # sms: its follow-up went unanswered but the case was resolved: not judged.
    sms = data["channels"]["sms"]
    assert (sms["next_turns"], sms["next_sla_judged"], sms["next_response_p50_s"]) == (1, 0, None)
    # The parity ratio on next responses: email's 7200 over twitter's 3150.
    assert data["parity_on"] == "next_response"
    assert data["parity_ratio"] == round(7200 / 3150, 4)
    assert (data["parity_worst_channel"], data["parity_best_channel"]) == ("email", "twitter")
    # Agents: ann's first responses 10, 30, 90, 600 min: median (30 + 90) / 2 = 60 min; bob's
    # 20, 95, 300: 95 min. bob had two of his three resolved cases reopened.
    agents = data["agents"]
    assert set(agents) == {"ann", "bob"}
    assert agents["ann"]["first_response_p50_s"] == 3600.0
    assert agents["bob"]["first_response_p50_s"] == 5700.0
    assert (agents["bob"]["reopen_rate_pct"], agents["ann"]["reopen_rate_pct"]) == (66.67, 0.0)
    assert "teams" not in data  # no case has a team yet
    # The drill-down behind a cell: the cases with a missed next response.
    missed = report_mod.select_cases(rows, now=now, which="next_missed")
    by_id = {r.reference: r for r in rows}
    assert sorted(by_id[m].channel for m in missed) == ["email", "twitter"]


def test_durations_read_as_people_say_them():
    table = [
        (None, "–"),
        (0, "0 s"),
        (0.4, "0 s"),
        (45, "45 s"),
        (59.6, "1 min"),
        (200, "3 min 20 s"),
        (3600, "1 h"),
        (3660, "1 h 1 min"),
        (3661, "1 h 1 min"),
        (5 * 3600 + 12 * 60 + 30, "5 h 12 min"),
        (2 * 86400 + 4 * 3600 + 59, "2 d 4 h"),
        (86400 + 59, "1 d"),
        (-3900, "-1 h 5 min"),
        (-14199.9, "-3 h 56 min"),
    ]
    for seconds, words in table:
        assert report_mod.duration_words(seconds) == words, seconds


def test_the_readable_table_names_figures_not_fields(engine, db_url, tmp_path):
    seed(engine, EVENTS)
    run = parity_cli(db_url, tmp_path, "--since", "30d", threshold=100)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "first_response_p50_s" not in out and "First response (median)" in out
    assert "Next response (median)" in out and "Agent" in out
    # email's first responses 45, 90, 300, 600 min: median 195 min = 3 h 15 min.
    email_col = out.splitlines()[2].split().index("email")
    assert email_col > 0
    assert "3 h 15 min" in out
    # The period to the minute, not the microsecond.
    assert "." not in out.splitlines()[0].split(" from ")[1]


@pytest.mark.parametrize("which", ["all", "open", "unanswered", "sla_missed", "next_waited"])
def test_a_drill_down_reads_only_its_channel_and_week_and_finds_the_same_cases(
    engine: Engine, which: str
) -> None:
    """The drill-down fetches only the cases of its channel and week from the store; the
    cases it lists are those the whole period's rows give under the same filter."""
    seed(engine, [*EVENTS, OLD])
    now = datetime.now(UTC)
    since = now - timedelta(days=30)
    with engine.connect() as conn:
        everything = report_rows.fetch(conn, since, now)
    weeks = sorted({report_mod.week_of(r.first_inbound_at) for r in everything})
    channels = sorted({r.channel for r in everything})
    assert len(weeks) > 1 and len(channels) > 1  # the narrowing has something to leave out
    for channel in [None, *channels]:
        for week in [None, *weeks]:
            filters = {"channel": channel, "week": week, "which": which}
            expected = report_mod.select_cases(everything, now=now, **filters)
            assert manager._cases(engine, now, since, now, **filters) == expected, filters
            with engine.connect() as conn:
                read = manager._drill_rows(conn, since, now, filters)
            assert all(r.channel == channel for r in read) if channel else True
            if week:
                assert {report_mod.week_of(r.first_inbound_at) for r in read} <= {week}


def test_a_drill_down_into_a_week_that_is_not_a_date_is_refused(engine: Engine) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="week is a week's Monday"):
        manager._cases(engine, now, now - timedelta(days=30), now, week="last")
