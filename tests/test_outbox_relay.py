"""The outbox against a real relay: retries, permanent failures, TLS, crashes, injection.

The relay is a real SMTP server (aiosmtpd, tests/support/sink.py) answering from a script; the
sender is our SMTP client; the store is SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import select, update

from inbox import outbox
from inbox.models import Case, Outbox, utcnow
from parity.cli import main
from tests.support.dns_server import mail_auth_toml
from tests.support.helpers import child_env, ingest_and_normalize
from tests.support.outbox_helpers import (
    attempts_of,
    case_row,
    drainer_for,
    mail,
    outbox_rows,
    self_signed,
)
from tests.support.sink import Sink


def _queued_ack(engine) -> int:
    outcome = ingest_and_normalize(engine, mail(message_id="<m1@example.org>"))
    (row,) = outbox_rows(engine)
    assert row.state == "queued" and outcome.case_id is not None
    return outcome.case_id


def test_451_twice_then_250_is_sent_once_with_three_attempts(engine, sink: Sink):
    case_id = _queued_ack(engine)
    sink.replies[:] = ["451 4.3.0 Try again later", "451 4.7.1 Greylisted, come back"]
    report = drainer_for(engine, sink).drain_once()
    assert (report.sent, report.retried, report.failed) == (1, 2, 0)
    assert len(sink.delivered) == 1
    # The three tries were the same message: one Message-ID throughout.
    ids = {d.parsed()["Message-ID"] for d in sink.received}
    assert len(sink.received) == 3 and len(ids) == 1
    (row,) = outbox_rows(engine)
    assert (row.state, row.attempts, row.last_error) == ("sent", 3, None)
    assert [o for o, _ in attempts_of(engine, row.id)] == ["retry", "retry", "sent"]
    assert "451 4.3.0 Try again later" in attempts_of(engine, row.id)[0][1]
    assert "451 4.7.1 Greylisted" in attempts_of(engine, row.id)[1][1]
    assert case_row(engine, case_id).ack_state == "sent"


def test_550_fails_visibly_and_is_not_retried(engine, sink: Sink, capsys, tmp_path, db_url):
    case_id = _queued_ack(engine)
    sink.replies[:] = ["550 5.1.1 <ann@example.org>: Recipient address rejected"]
    drainer = drainer_for(engine, sink)
    assert drainer.drain_once().failed == 1
    assert drainer.drain_once().sent == 0
    assert len(sink.received) == 1
    (row,) = outbox_rows(engine)
    assert (row.state, row.attempts) == ("failed", 1)
    assert "550 5.1.1" in row.last_error
    case = case_row(engine, case_id)
    assert case.ack_state == "failed" and "550 5.1.1" in case.ack_reason

    # Visible where an operator looks.
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[database]\nurl = "{db_url}"\nurl_env = "PARITY_TEST_UNSET_URL"\n')
    assert main(["--settings", str(settings), "outbox", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [
        {
            "id": row.id,
            "channel": "email",
            "kind": "ack",
            "recipient": "ann@example.org",
            "case": case.reference,
            "state": "failed",
            "attempts": 1,
            "last_error": row.last_error,
            "subject": row.subject,
            "message_id": row.message_id_header,
            "provider_id": None,
            "created_at": listed[0]["created_at"],
            "next_attempt_at": None,
            "sent_at": None,
        }
    ]
    assert main(["--settings", str(settings), "outbox", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["channels"]["email"]["states"]["failed"] == 1
    assert status["email"]["can_send"] is False  # this settings file names no relay
    # An output format: the relay's key (from the registry now) first, as it always was.
    assert list(status) == ["email", "channels", "senders"]
    # An operator can send it again once the address is fixed.
    assert main(["--settings", str(settings), "outbox", "retry", str(row.id)]) == 0
    assert drainer.drain_once().sent == 1


def test_retries_back_off_and_stop_at_the_maximum(engine, sink: Sink):
    _queued_ack(engine)
    sink.replies[:] = ["421 4.3.2 Service shutting down"] * 10
    drainer = drainer_for(engine, sink, max_attempts=3, backoff_base_s=60.0)
    started = utcnow()
    assert drainer.drain_once().retried == 1
    (row,) = outbox_rows(engine)
    # The first retry waits between half and all of the 60 s base.
    assert started + timedelta(seconds=29) <= row.next_attempt_at
    assert row.next_attempt_at <= utcnow() + timedelta(seconds=61)
    assert drainer.drain_once().retried == 0  # not due yet: nothing is sent
    assert len(sink.received) == 1
    for expected in ("retry", "failed"):
        with engine.begin() as conn:  # let the clock run out
            conn.execute(update(Outbox).values(next_attempt_at=utcnow()))
        drainer.drain_once()
        assert outbox_rows(engine)[0].state == ("queued" if expected == "retry" else "failed")
    (row,) = outbox_rows(engine)
    assert (row.state, row.attempts, len(sink.received)) == ("failed", 3, 3)
    assert row.last_error.startswith("gave up after 3 attempts: ")
    assert drainer.drain_once().sent == 0 and len(sink.received) == 3


def test_an_unreachable_relay_is_retried(engine, sink: Sink):
    _queued_ack(engine)
    sink.stop()  # nothing listens on that port any more
    report = drainer_for(engine, sink, backoff_base_s=30.0).drain_once()
    assert report.retried == 1
    (row,) = outbox_rows(engine)
    assert row.state == "queued" and "connection failed" in row.last_error


def test_starttls_and_auth_when_configured(engine, tmp_path: Path):
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    relay = Sink(tls=context, credentials=("parity", "s3cret-relay-pass")).start()
    try:
        _queued_ack(engine)
        relay_settings = {
            "security": "starttls",
            "ca_file": str(cert),
            "username": "parity",
            "password_env": "PARITY_TEST_RELAY_PASSWORD",
        }
        wrong = drainer_for(
            engine,
            relay,
            relay=relay_settings,
            environ={"PARITY_TEST_RELAY_PASSWORD": "nope"},
            backoff_base_s=30.0,
        )
        assert wrong.drain_once().retried == 1
        assert "credentials" in outbox_rows(engine)[0].last_error
        with engine.begin() as conn:
            conn.execute(update(Outbox).values(next_attempt_at=utcnow()))
        right = drainer_for(
            engine,
            relay,
            relay=relay_settings,
            environ={"PARITY_TEST_RELAY_PASSWORD": "s3cret-relay-pass"},
        )
        assert right.drain_once().sent == 1
        assert relay.logins == ["parity"]
        assert len(relay.delivered) == 1
    finally:
        relay.stop()


def test_a_relay_without_starttls_gets_nothing_in_the_clear(engine, sink: Sink):
    _queued_ack(engine)
    report = drainer_for(
        engine, sink, relay={"security": "starttls"}, backoff_base_s=30.0
    ).drain_once()
    assert report.retried == 1 and sink.received == []
    assert "did not offer STARTTLS" in outbox_rows(engine)[0].last_error


# --- header injection, end to end ---------------------------------------------------------------

INJECTED = (
    # The subject and the display name decode to text with CR/LF and a Bcc line.
    b"From: =?utf-8?q?Ann=0D=0ABcc=3A_evil=40example=2Enet?= <ann@example.org>\r\n"
    b"To: help@support.example.com\r\n"
    b"Subject: =?utf-8?b?SGVscA0KQmNjOiB2aWN0aW1AZXhhbXBsZS5jb20NClgtRXZpbDogMQ==?=\r\n"
    b"Message-ID: <inject-1@example.org>\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"\r\n"
    b"hello\r\n"
)
INJECTED_WORDS = (
    # Encoded words inside the decoded text: Python < 3.11.10 would decode these a second
    # time while writing our headers, turning them into real line breaks.
    b"From: Ann =?utf-8?q?=3D=3Futf-8=3Fq=3FX=3D0D=3D0ABcc=3A=5Fevil=3D40example=2Enet=3F=3D?= "
    b"<ann@example.org>\r\n"
    b"To: help@support.example.com\r\n"
    b"Subject: =?utf-8?q?=3D=3Futf-8=3Fq=3FHi=3D0D=3D0ABcc=3A=5Fvictim=3D40example=2Ecom=3F=3D?="
    b"\r\n"
    b"Message-ID: <inject-2@example.org>\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"\r\n"
    b"hello\r\n"
)
ACK_HEADERS = sorted(
    [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "x-parity-case",
        "auto-submitted",
        "x-auto-response-suppress",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    ]
)


def test_a_from_whose_name_decodes_to_a_line_break_is_never_acknowledged(engine, sink: Sink):
    # A From that does not decode into one clean mailbox names nobody we may write to: the
    # mail opens an anonymous case for agents and nothing is sent (docs/security/smaller.md).
    ingest_and_normalize(engine, INJECTED)
    assert drainer_for(engine, sink).drain_once().sent == 0
    assert sink.delivered == [] and outbox_rows(engine) == []


@pytest.mark.parametrize("raw", [INJECTED_WORDS], ids=["encoded-words"])
def test_inbound_cr_lf_never_adds_a_header_to_the_acknowledgement(engine, sink: Sink, raw):
    ingest_and_normalize(engine, raw)
    assert drainer_for(engine, sink).drain_once().sent == 1
    (delivery,) = sink.delivered
    assert delivery.rcpt_tos == ["ann@example.org"]
    head = delivery.data.split(b"\r\n\r\n", 1)[0]
    names = sorted(
        line.split(b":", 1)[0].decode().lower()
        for line in head.split(b"\r\n")
        if line[:1] not in (b" ", b"\t")
    )
    assert names == ACK_HEADERS
    ack = BytesParser(policy=policy.default).parsebytes(delivery.data)
    assert ack["Bcc"] is None and ack["X-Evil"] is None
    assert [a.addr_spec for a in ack["To"].addresses] == ["ann@example.org"]


# --- crashes -----------------------------------------------------------------------------------


def _settings_file(tmp_path: Path, db_url: str, sink: Sink) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f"""
[database]
url = "{db_url}"
url_env = "PARITY_TEST_UNSET_URL"
{mail_auth_toml()}
[outbox]
lease_seconds = 1
backoff_base_s = 0.0

[outbox.email]
host = "{sink.host}"
port = {sink.port}
security = "none"
timeout_s = 60.0
from_address = "Support <help@support.example.com>"
"""
    )
    return path


def _parity(settings: Path, *args: str) -> subprocess.Popen[bytes]:
    env = child_env()
    return subprocess.Popen(
        [sys.executable, "-m", "parity", "--settings", str(settings), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_sigkill_while_sending_loses_nothing_and_resends_the_same_message_id(
    engine, sink: Sink, tmp_path: Path, db_url: str
):
    case_id = _queued_ack(engine)
    settings = _settings_file(tmp_path, db_url, sink)
    sink.replies[:] = ["stall"]  # take the whole message, then never answer
    child = _parity(settings, "outbox", "send")
    try:
        assert sink.stalled.wait(60), "the sender never reached DATA"
        (row,) = outbox_rows(engine)
        assert row.state == "sending" and row.message_id_header
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    first_try = sink.received[0].parsed()["Message-ID"]
    assert first_try == f"<{row.message_id_header}>"
    assert outbox_rows(engine)[0].state == "sending"  # exactly what the crash left

    time.sleep(1.2)  # the lease of the killed sender runs out
    restart = _parity(settings, "outbox", "send")
    out, err = restart.communicate(timeout=60)
    assert restart.returncode == 0, err.decode()
    assert json.loads(out) == {"recovered": 1, "sent": 1, "retried": 0, "failed": 0}

    (delivery,) = sink.delivered
    assert delivery.parsed()["Message-ID"] == first_try
    (row,) = outbox_rows(engine)
    assert (row.state, row.attempts) == ("sent", 2)
    log = attempts_of(engine, row.id)
    assert [o for o, _ in log] == ["unknown", "sent"]
    assert "interrupted while sending; sent again with the same id" in log[0][1]
    assert case_row(engine, case_id).ack_state == "sent"


def test_a_channel_without_message_ids_is_marked_unknown_after_a_crash(engine):
    """The channel-neutral recovery that SMS, Twitter and Reddit senders share."""
    case_id = _queued_ack(engine)
    with engine.begin() as conn:
        conn.execute(update(Outbox).values(channel="sms", recipient="+447700900123"))
    (claimed,) = outbox.claim(engine, "sms", "dead-worker", limit=5, lease=timedelta(seconds=-1))
    assert outbox.recover(engine, "sms", resend=False) == 1
    (row,) = outbox_rows(engine)
    assert (row.state, row.attempts) == ("unknown", 1)
    assert attempts_of(engine, row.id)[0][0] == "unknown"
    case = case_row(engine, case_id)
    assert case.ack_state == "unknown" and "may or may not" in case.ack_reason
    # Never sent again on its own; the dead worker's late answer changes nothing.
    assert outbox.claim(engine, "sms", "w2", limit=5, lease=timedelta(seconds=60)) == []
    assert not outbox.record(engine, claimed, "dead-worker", outbox.Result("sent"))
    assert outbox_rows(engine)[0].state == "unknown"
    # An agent who checked with the provider can send it again.
    assert outbox.requeue(engine, row.id)
    assert outbox_rows(engine)[0].state == "queued"


def test_a_claim_hands_each_row_to_one_sender(engine):
    with engine.begin() as conn:
        for i in range(60):
            outbox.enqueue(
                conn,
                case_id=None,
                kind="reply",
                channel="email",
                recipient=f"p{i}@example.org",
                body="x",
            )
    taken: dict[str, list[int]] = {}

    def take(name: str) -> None:
        mine: list[int] = []
        while batch := outbox.claim(engine, "email", name, limit=7, lease=timedelta(minutes=5)):
            mine.extend(r.id for r in batch)
        taken[name] = mine

    threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [i for ids in taken.values() for i in ids]
    assert sorted(every) == list(range(1, 61))  # all taken, none twice
    with engine.connect() as conn:
        states = set(conn.execute(select(Outbox.state)).scalars())
    assert states == {"sending"}


def test_an_acknowledgement_too_old_to_be_true_is_not_sent(engine, sink: Sink):
    case_id = _queued_ack(engine)
    with engine.begin() as conn:
        conn.execute(update(Outbox).values(created_at=utcnow() - timedelta(hours=25)))
    assert drainer_for(engine, sink).drain_once().failed == 1
    assert sink.received == []
    assert outbox_rows(engine)[0].last_error.startswith("expired")
    with engine.connect() as conn:
        assert conn.execute(select(Case.ack_state).where(Case.id == case_id)).scalar() == "failed"
