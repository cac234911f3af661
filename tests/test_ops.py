"""Operations: /healthz and /metrics without login and without customer data, on both stores."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, insert, text

from inbox import logcontext, queries
from inbox.db import make_engine, write
from inbox.metrics import parity_ratio
from inbox.models import ConnectorState, utcnow
from inbox.secrets import Secret
from parity import logs
from parity.daemon import Daemon
from parity.settings import parse
from parity.status import scrub
from tests.support.helpers import ingest, normalize
from tests.support.inbox_helpers import mail

GARBAGE = b"\x00\x01\x02 this is not a message at all"
CUSTOMER = "ann.customer@example.org"
SUBJECT = "My passport number is X1234"


async def _get(db_url: str, path: str) -> tuple[int, str]:
    settings = parse({"database": {"url": db_url, "url_env": "PARITY_TEST_NO_SUCH_VAR"}})
    daemon = Daemon(settings)
    client = TestClient(TestServer(daemon.web_app()))
    await client.start_server()
    try:
        response = await client.get(path)  # no session, no token
        return response.status, await response.text()
    finally:
        await client.close()
        daemon.engine.dispose()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _state(engine: Engine, connector: str, **values: Any) -> None:
    with write(engine) as conn:
        conn.execute(
            insert(ConnectorState),
            [{"connector": connector, "heartbeat_at": utcnow(), **values}],
        )


async def test_metrics_counters_match_what_was_sent(engine, db_url):
    sent = 5
    for i in range(sent):
        ingest(engine, mail(f"c{i}@example.org", f"Question {i}", "Hello", msgid=f"m{i}@x"))
    # The same message through a second connector: one dedup hit, not a sixth message.
    again = mail("c0@example.org", "Question 0", "Hello", msgid="m0@x")
    ingest(engine, again, connector="imap")
    ingest(engine, GARBAGE)
    normalize(engine)

    status, text = await _get(db_url, "/metrics")
    assert status == 200
    samples = _samples(text)
    assert samples[("parity_messages_in_total", (("channel", "email"),))] == sent
    assert samples[("parity_dedup_hits_total", ())] == 1
    assert samples[("parity_dead_letters_total", (("channel", "email"),))] == 1
    assert samples[("parity_intake_pending", ())] == 0
    # Every stored input that became (or matched) a message is in the intake histogram.
    assert samples[("parity_intake_latency_seconds_count", ())] == sent + 1
    assert samples[("parity_intake_latency_seconds_bucket", (("le", "+Inf"),))] == sent + 1
    assert samples[("parity_cases", (("status", "new"),))] == sent
    assert CUSTOMER not in text and "Question" not in text and "c0@example.org" not in text


async def test_healthz_reports_every_instance_and_no_customer_data(engine, db_url):
    ingest(engine, mail(CUSTOMER, SUBJECT, "Hello", msgid="h1@x"))
    normalize(engine)
    long_ago = utcnow() - timedelta(hours=1)
    # Another host's IMAP poller: running, quota and an error naming a customer.
    _state(
        engine,
        "imap",
        instance="mail-2:41",
        running=True,
        last_success_at=long_ago,
        last_error=f"550 rejected <{CUSTOMER}> from +44 20 7946 0958",
        last_error_at=long_ago,
        details={"accounts": {"support": {"quota": {"percent": 91}}}},
    )
    _state(
        engine,
        "twitter",
        instance="x-1:7",
        running=True,
        details={"rate_limits": {"dm_events": {"remaining": 12, "limit": 15}}},
    )
    status, text = await _get(db_url, "/healthz")
    body = json.loads(text)
    states = {c["name"]: c for c in body["connector_states"]}
    assert states["imap"]["state"] == "up"
    assert states["imap"]["instances"][0]["instance"] == "mail-2:41"
    assert states["imap"]["accounts"]["support"]["quota"]["percent"] == 91
    assert 3500 < states["imap"]["lag_s"] < 3700
    assert states["imap"]["last_error"] == "550 rejected <<address>> from <number>"
    assert states["twitter"]["rate_limits"] == {
        "x-1:7": {"dm_events": {"remaining": 12, "limit": 15}}
    }
    # Disabled ones say why; this process's web listener is the one connector it runs.
    assert states["reddit"]["state"] == "disabled" and states["reddit"]["disabled_reason"]
    assert body["database"] == "ok"
    assert CUSTOMER not in text and "passport" not in text and "7946" not in text
    # Nothing runs SMTP or the web listener in this test (no `parity run`): they are down,
    # so the whole is degraded, as a load balancer or monitor should see it.
    assert {n for n, c in states.items() if c["state"] == "down"} == {"smtp", "web"}
    assert (status, body["status"]) == (503, "degraded")


def _timestamps(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string in the body that is, or is named as, a point in time."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and (key.endswith("_at") or item[:4].isdigit()):
                found.append((f"{path}.{key}", item))
            else:
                found += _timestamps(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _timestamps(item, f"{path}[{index}]")
    return found


async def test_every_timestamp_healthz_and_metrics_give_parses(engine, db_url):
    at = utcnow().replace(microsecond=120034) - timedelta(minutes=5)
    _state(
        engine,
        "imap",
        instance="mail-2:41",
        running=True,
        last_success_at=at,
        last_error="timeout",
        last_error_at=at,
        details={"listening": "127.0.0.1:1143", "last_poll_at": at.isoformat()},
    )
    _status, text = await _get(db_url, "/healthz")
    stamps = _timestamps(json.loads(text))
    named = {path.rsplit(".", 1)[-1] for path, _ in stamps}
    assert {"last_success_at", "heartbeat_at"} <= named, named
    for path, stamp in stamps:
        if path.endswith("listening"):
            assert stamp == "127.0.0.1:1143"
            continue
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # fails on "<number>"
        if path.endswith(("last_success_at", "last_error_at")):
            assert abs((parsed.replace(tzinfo=None) - at.replace(tzinfo=None)).total_seconds()) < 1
    assert "<number>" not in text
    # /metrics gives no times as text; every sample is a number Prometheus can read.
    _status, metrics = await _get(db_url, "/metrics")
    for value in _samples(metrics).values():
        assert isinstance(value, float)


async def test_healthz_never_reports_a_dead_instance_up(engine, db_url):
    # An instance that ran IMAP died: its heartbeat went stale.
    _state(
        engine, "imap", instance="gone:1", running=True, heartbeat_at=utcnow() - timedelta(hours=1)
    )
    status, text = await _get(db_url, "/healthz")
    body = json.loads(text)
    states = {c["name"]: c for c in body["connector_states"]}
    # Stale, and not enabled in this process's settings: reported disabled, never up.
    assert states["imap"]["state"] == "disabled"
    assert states["imap"]["instances"] == []
    assert status == 503


def test_scrub_masks_addresses_and_numbers_at_any_depth():
    table = [
        ("to bob@example.com", "to <address>"),
        ({"k": ["call +1 (415) 555-0100 now"]}, {"k": ["call <number> now"]}),
        ({"a@b.example": 3}, {"<address>": 3}),
        ("port 5432 refused", "port 5432 refused"),
        # Health's own times and addresses are not phone numbers (they were mangled to
        # "<number>T23:45:13Z" and "<number>:8080").
        ("2026-12-07T23:45:13Z", "2026-12-07T23:45:13Z"),
        ("2026-12-07T23:45:13.120034+00:00", "2026-12-07T23:45:13.120034+00:00"),
        ("2026-12-07 23:45", "2026-12-07 23:45"),
        ("listening on 127.0.0.1:8080", "listening on 127.0.0.1:8080"),
        ("from +447700900123 at 2026-12-07T10:00:00Z", "from <number> at 2026-12-07T10:00:00Z"),
        ("call 415.555.0100", "call <number>"),
        ("x" * 500, "x" * 199 + "…"),
    ]
    for value, expected in table:
        assert scrub(value) == expected


def test_parity_ratio_is_worst_over_best():
    assert parity_ratio({"email": 60.0, "sms": 240.0, "twitter": 120.0}) == 4.0
    assert parity_ratio({"email": 60.0}) is None


# --- structured logs ---------------------------------------------------------------------------


def _json_lines(capsys: Any) -> list[dict[str, Any]]:
    err: str = capsys.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_json_lines_name_the_connector_and_case_and_mask_secrets(engine, capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    secret = Secret("hunter2-relay-password-77", "PARITY_TEST_RELAY_PASSWORD")
    try:
        logs.configure("DEBUG", json_lines=True)
        capsys.readouterr()
        good = ingest(engine, mail(CUSTOMER, "Refund", "Hello", msgid="log1@x"), connector="imap")
        ingest(engine, GARBAGE, connector="smtp")
        outcomes = {o.intake_id: o for o in normalize(engine)}
        with logcontext.bound(connector="email-outbox"):
            logging.getLogger("connectors.mail.relay").warning(
                "relay refused login %s", secret.reveal()
            )
        lines = _json_lines(capsys)
    finally:
        root.handlers[:], root.level = saved
    filed = [line for line in lines if line["message"] == f"intake {good.intake_id} done"]
    assert len(filed) == 1
    message_id = outcomes[good.intake_id].message_id
    assert message_id is not None
    reference = queries.case_of_message(engine, message_id)
    assert (filed[0]["connector"], filed[0]["case"]) == ("imap", reference)
    dead = [line for line in lines if "dead-lettered" in line["message"]]
    assert [(d["connector"], d["case"], d["level"]) for d in dead] == [("smtp", None, "WARNING")]
    refused = [line for line in lines if line["message"].startswith("relay refused")]
    assert refused == [
        {**refused[0], "message": "relay refused login ***", "connector": "email-outbox"}
    ]
    assert all(secret.reveal() not in json.dumps(line) for line in lines)


def test_a_dead_hosts_lock_frees_within_the_keepalive_time(pg_database):
    # The server ends a backend whose client stopped answering after idle + interval * count.
    engine = make_engine(pg_database, keepalive_s=12)
    try:
        with engine.connect() as conn:
            shown = [
                int(conn.execute(text(f"SHOW tcp_keepalives_{k}")).scalar_one())
                for k in ("idle", "interval", "count")
            ]
    finally:
        engine.dispose()
    assert shown == [12, 4, 3]
    assert shown[0] + shown[1] * shown[2] <= 2 * 12


async def test_metrics_and_healthz_count_live_normalizer_worker_processes(engine, db_url):
    # Two nodes' workers beating now, one stopped cleanly, one whose host vanished.
    _state(engine, "normalizer", instance="work-1:10", running=True, details={"processed": 5})
    _state(engine, "normalizer", instance="work-2:11", running=True, details={"processed": 7})
    _state(engine, "normalizer", instance="work-3:12", running=False)
    with write(engine) as conn:
        conn.execute(
            insert(ConnectorState),
            [
                {
                    "connector": "normalizer",
                    "instance": "gone-1:13",
                    "running": True,
                    "heartbeat_at": utcnow() - timedelta(minutes=5),
                }
            ],
        )
    _status, text = await _get(db_url, "/metrics")
    assert _samples(text)[("parity_normalizer_processes", ())] == 2
    _status, text = await _get(db_url, "/healthz")
    workers = json.loads(text)["normalizer"]
    assert workers["processes"] == 2
    assert sorted(w["instance"] for w in workers["instances"]) == ["work-1:10", "work-2:11"]
