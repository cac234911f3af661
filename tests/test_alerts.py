"""Alerts (issue 23): the conditions by a table, then on SQLite and PostgreSQL an alert raised
once per period and delivered through the outbox: by email through the real relay to an SMTP
sink, and by webhook to a local receiver that checks X-Parity-Signature, answers 500 once,
and gets the retry."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import Engine, select, update

from connectors.config import OutboxSettings
from connectors.outbox import OutboxDrainer
from connectors.webhook import WebhookSender, url_problem
from inbox import alerts
from inbox.alerts import AlertSettings
from inbox.models import AlertEvent, Outbox
from inbox.secrets import Secret
from tests.support.fake_server import serving
from tests.support.inbox_helpers import email_case
from tests.support.outbox_helpers import attempts_of, drainer_for
from tests.support.sink import Sink

WEBHOOK_SECRET = "test-webhook-secret-0123456789"


def report(channels: dict[str, dict[str, Any]], breach: bool = False) -> dict[str, Any]:
    return {
        "channels": channels,
        "parity_breach": breach,
        "parity_ratio": 3.5 if breach else 1.2,
        "parity_ratio_threshold": 2.0,
        "parity_worst_channel": "b",
        "parity_best_channel": "a",
    }


CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], list[tuple[str, str]]]] = [
    ("quiet", report({"a": {"unanswered": 3}}), report({}), {}, []),
    ("breach", report({}, breach=True), report({}), {}, [("parity_breach", "all")]),
    ("breach off", report({}, breach=True), report({}), {"parity_breach": False}, []),
    (
        "unanswered over",
        report({"a": {"unanswered": 26}, "b": {"unanswered": 25}}),
        report({}),
        {},
        [("unanswered", "a")],
    ),
    ("unanswered off", report({"a": {"unanswered": 99}}), report({}), {"unanswered_max": 0}, []),
    (
        # 72 % now against 85 % before: a 13-point drop over 10 judged cases.
        "sla drop",
        report({"a": {"sla_attained_pct": 72.0, "sla_judged": 10}}),
        report({"a": {"sla_attained_pct": 85.0}}),
        {},
        [("sla_drop", "a")],
    ),
    (
        "sla drop, too few cases",
        report({"a": {"sla_attained_pct": 50.0, "sla_judged": 9}}),
        report({"a": {"sla_attained_pct": 90.0}}),
        {},
        [],
    ),
    (
        "sla drop under the points",
        report({"a": {"sla_attained_pct": 80.1, "sla_judged": 40}}),
        report({"a": {"sla_attained_pct": 90.0}}),
        {},
        [],
    ),
    (
        "no baseline",
        report({"a": {"sla_attained_pct": 10.0, "sla_judged": 40}}),
        report({}),
        {},
        [],
    ),
]


@pytest.mark.parametrize(
    ("window", "baseline", "kw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_conditions(
    window: dict[str, Any],
    baseline: dict[str, Any],
    kw: dict[str, Any],
    expected: list[tuple[str, str]],
) -> None:
    found = alerts.evaluate(window, baseline, AlertSettings(**kw))
    assert [(a.condition, a.subject) for a in found] == expected


def test_periods_and_signatures() -> None:
    at = datetime(2026, 12, 7, 15, 59, tzinfo=UTC)
    assert alerts.period_of(at, 24) == "2026-12-07T00"
    assert alerts.period_of(at, 1) == "2026-12-07T15"
    assert alerts.period_of(at + timedelta(minutes=2), 1) == "2026-12-07T16"
    body = b'{"a": 1}'
    # HMAC-SHA256 computed here independently, from the standard library.
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert alerts.signature(b"k", body) == f"sha256={expected}"
    assert url_problem("https://hooks.example.com/parity") is None
    assert url_problem("http://127.0.0.1:8080/x") is None
    assert url_problem("http://hooks.example.com/parity") is not None
    assert url_problem("ftp://hooks.example.com/") is not None


class Receiver:
    """A webhook receiver that checks the signature, failing its first `fail` calls."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.calls: list[tuple[int, dict[str, Any], bool, str]] = []
        self.base_url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        given = request.headers.get("X-Parity-Signature", "")
        mac = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        good = hmac.compare_digest(given, "sha256=" + mac)
        status = 500 if self.fail > 0 else (200 if good else 401)
        self.fail -= 1
        self.calls.append(
            (status, json.loads(body), good, request.headers.get("X-Parity-Delivery", ""))
        )
        return web.Response(status=status, text="ok" if status == 200 else "no")


def _unanswered_cases(engine: Engine, count: int) -> None:
    for n in range(count):
        email_case(engine, f"waiting{n}@example.org", f"Still waiting {n}")


def test_an_alert_is_raised_once_and_delivered_by_mail_and_signed_webhook(
    engine: Engine, sink: Sink
) -> None:
    _unanswered_cases(engine, 3)
    with serving(Receiver(fail=1)) as receiver:
        settings = AlertSettings(
            enabled=True,
            unanswered_max=2,
            email_to=["lead@support.example.com"],
            webhook_url=receiver.base_url + "/hook",
        )
        [first] = alerts.check(engine, settings, 2.0)
        assert (first["condition"], first["raised"]) == ("unanswered", True)
        # The same condition in the same period is not raised again, however often checked.
        [again] = alerts.check(engine, settings, 2.0)
        assert not again["raised"] and again["key"] == first["key"]
        with engine.connect() as conn:
            assert len(list(conn.execute(select(AlertEvent)))) == 1
            rows = list(conn.execute(select(Outbox).where(Outbox.kind == "alert")))
        assert sorted(r.channel for r in rows) == sorted(["webhook", rows[0].channel])
        assert len(rows) == 2

        # Email: through the real relay to the sink.
        assert drainer_for(engine, sink).drain_once().sent >= 1
        mails = [d for d in sink.delivered if d.rcpt_tos == ["lead@support.example.com"]]
        assert len(mails) == 1
        message = mails[0].parsed()
        assert "3 open cases have no answer yet" in message["Subject"]

        # Webhook: 500 first (retried with backoff), then delivered, signed.
        hook = OutboxDrainer(
            engine,
            WebhookSender(Secret(WEBHOOK_SECRET)),
            OutboxSettings(backoff_base_s=30.0),
            worker="test-webhook",
        )
        first_pass = hook.drain_once()
        assert (first_pass.retried, first_pass.sent) == (1, 0)
        [row] = [r for r in rows if r.channel == "webhook"]
        with engine.connect() as conn:
            waiting = conn.execute(select(Outbox).where(Outbox.id == row.id)).one()
        # Backed off: 30 s for the first retry, half fixed, half random.
        assert waiting.state == "queued"
        assert waiting.next_attempt_at >= datetime.now(UTC) + timedelta(seconds=10)
        with engine.begin() as conn:  # the backoff's wait, passed
            conn.execute(
                update(Outbox)
                .where(Outbox.id == row.id)
                .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert hook.drain_once().sent == 1
        statuses = [c[0] for c in receiver.calls]
        assert statuses == [500, 200]
        assert all(c[2] for c in receiver.calls)  # the signature checked out every time
        payload = receiver.calls[1][1]
        assert (payload["condition"], payload["subject"]) == ("unanswered", first["subject"])
        assert payload["detail"]["unanswered"] == 3
        assert receiver.calls[1][3] == str(row.id)
        assert [o for o, _ in attempts_of(engine, row.id)] == ["retry", "sent"]


def test_a_wrong_secret_is_refused_by_the_receiver_and_fails_the_row(engine: Engine) -> None:
    _unanswered_cases(engine, 2)
    with serving(Receiver()) as receiver:
        settings = AlertSettings(
            enabled=True, unanswered_max=1, webhook_url=receiver.base_url + "/hook"
        )
        alerts.check(engine, settings, 2.0)
        hook = OutboxDrainer(
            engine, WebhookSender(Secret("not-the-secret")), OutboxSettings(), worker="t"
        )
        report = hook.drain_once()
    # 401 is a 4xx: permanent, not retried.
    assert report.failed == 1
    assert [(c[0], c[2]) for c in receiver.calls] == [(401, False)]


def test_the_command_checks_now_and_raises_once(engine: Engine, db_url: str, tmp_path) -> None:
    import subprocess
    import sys

    from tests.support.helpers import child_env, child_settings

    _unanswered_cases(engine, 2)
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(
        child_settings(db_url) + '\n[alerts]\nunanswered_max = 1\nemail_to = ["lead@x.example"]\n'
    )
    env = {**child_env(), "PARITY_SETTINGS": str(settings_file)}

    def check() -> list[dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "parity", "alerts", "check", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        result: list[dict[str, Any]] = json.loads(done.stdout)
        return result

    [first] = check()
    assert (first["condition"], first["raised"], len(first["outbox_ids"])) == (
        "unanswered",
        True,
        1,
    )
    [again] = check()
    assert (again["raised"], again["outbox_ids"]) == (False, [])
