"""Many instances on one store: every instance drains the outbox, and nothing is sent twice."""

from __future__ import annotations

import re
import secrets
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from urllib.parse import urlencode

from sqlalchemy import select

from connectors.config import OutboxSettings
from connectors.mail.relay import SmtpRelaySender
from connectors.outbox import OutboxDrainer
from inbox.db import make_engine
from inbox.models import Case, Message, Outbox
from tests.channels.twilio.twilio_support import (
    ACCOUNT,
    OUR_NUMBER,
    PUBLIC,
    TOKEN,
    fake_twilio,
    fixture,
    sign,
)
from tests.support.helpers import ingest, normalize
from tests.support.outbox_helpers import mail, outbox_rows, relay_for
from tests.support.sink import Sink
from tests.support.smtp_support import (
    ParityProcess,
    daemon_settings,
    send_concurrently,
    varied_mail,
    wait_until_normalized,
)

CASES = 40


def test_two_drainers_on_one_store_send_each_acknowledgement_once(db_url, engine, sink: Sink):
    for i in range(CASES):
        ingest(engine, mail(f"Question {i}", sender=f"c{i}@example.org", message_id=f"<q{i}@x>"))
    normalize(engine)
    assert len(outbox_rows(engine)) == CASES
    settings = OutboxSettings(backoff_base_s=0.0, email=relay_for(sink))
    engines = [make_engine(db_url, busy_timeout_ms=10000) for _ in range(2)]  # two processes' pools
    drainers = [
        OutboxDrainer(e, SmtpRelaySender(settings.email, {}), settings, worker=f"host{n}:1")
        for n, e in enumerate(engines)
    ]
    start = threading.Barrier(2)
    sent: dict[int, int] = {}

    def drain(n: int) -> None:
        start.wait()
        total = 0
        while True:
            report = drainers[n].drain_once(max_rows=3)
            total += report.sent
            if not (report.sent or report.retried or report.failed):
                break
        sent[n] = total

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for e in engines:
            e.dispose()
    recipients = Counter(r for d in sink.delivered for r in d.rcpt_tos)
    assert recipients == Counter(f"c{i}@example.org" for i in range(CASES))  # each once
    assert len({d.parsed()["Message-ID"] for d in sink.delivered}) == CASES
    assert sum(sent.values()) == CASES
    assert {r.state for r in outbox_rows(engine)} == {"sent"}


def sms_webhooks(numbers: int, follow_ups: int) -> list[dict[str, str]]:
    """Form posts of incoming texts, as Twilio sends them: one from each of `numbers` numbers,
    then a second text from the first `follow_ups` of them (it joins the first one's case)."""
    template = fixture("sms")
    posts: list[dict[str, str]] = []
    for n in [*range(numbers), *range(follow_ups)]:
        sid = "SM" + secrets.token_hex(16)
        first = len(posts) < numbers
        posts.append(
            {
                **template,
                "MessageSid": sid,
                "SmsSid": sid,
                "SmsMessageSid": sid,
                "From": f"+1415555{2000 + n:04d}",
                "Body": (
                    f"Text {n}: I cannot get into my account, the code never arrives."
                    if first
                    else f"Text {n} again: still locked out, please call me back."
                ),
            }
        )
    return posts


def post_webhooks(port: int, posts: list[dict[str, str]], answers: list[int]) -> None:
    """POST each form to /twilio/sms signed as Twilio signs it; on anything but 200 try again
    for a while, as Twilio retries."""
    for params in posts:
        body = urlencode(params).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sign("/twilio/sms", params),
        }
        deadline = time.monotonic() + 60
        while True:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/twilio/sms", data=body, headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status = int(response.status)
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            if status == 200 or time.monotonic() > deadline:
                answers.append(status)
                break
            time.sleep(0.2)


REFERENCE = re.compile(r"\bC-\d+")


def test_two_full_instances_on_one_store_file_every_message_and_ack_once(
    db_url, engine, sink: Sink, tmp_path
):
    """Two `parity run` (SMTP, the Twilio webhooks, the outbox drainers) under a mixed load.

    Mail over SMTP and texts over Twilio's signed webhooks reach both instances at once,
    some of each through both (a sending server, or Twilio, retrying elsewhere). Every
    message is stored once, and every case is acknowledged once on its channel: email acks
    counted at the relay by Message-ID, SMS acks at the fake Twilio API by the POSTs it got.
    """
    relay = {
        "host": sink.host,
        "port": sink.port,
        "security": "none",
        "from_address": "Example Support <help@support.example.com>",
    }
    mails = varied_mail(60, seed=13, tag="multi")
    texts = sms_webhooks(24, follow_ups=6)
    numbers = {t["From"] for t in texts}
    processes: list[ParityProcess] = []
    with fake_twilio() as twilio_api:
        twilio = {
            "enabled": True,
            "public_url": PUBLIC,
            "api_base_url": twilio_api.base_url,
            "from_number": OUR_NUMBER,
        }
        env = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN}
        smtp_ports, web_ports = [], []
        try:
            for n in range(2):
                directory = tmp_path / f"host{n}"
                directory.mkdir()
                settings, smtp_port, web_port = daemon_settings(
                    directory,
                    db_url,
                    extra={
                        "outbox.email": relay,
                        "outbox": {"backoff_base_s": 0.0},
                        "connectors.twilio": twilio,
                    },
                )
                processes.append(
                    ParityProcess.run(settings, log_path=directory / "parity.log", env=env)
                )
                smtp_ports.append(smtp_port)
                web_ports.append(web_port)
            for process, smtp_port, web_port in zip(processes, smtp_ports, web_ports, strict=True):
                process.wait_for_port(smtp_port)
                process.wait_for_port(web_port)
            # Half to each instance, and the last ones to both (a retry elsewhere).
            mail_halves = [mails[0::2] + mails[-10:], mails[1::2] + mails[-10:]]
            once, both = texts[:-8], texts[-8:]  # eight reach both: Twilio retried elsewhere
            text_halves = [once[0::2] + both, once[1::2] + both]
            answers: list[int] = []
            load = [
                threading.Thread(
                    target=send_concurrently, args=(port, half), kwargs={"connections": 4}
                )
                for port, half in zip(smtp_ports, mail_halves, strict=True)
            ] + [
                threading.Thread(target=post_webhooks, args=(port, half, answers))
                for port, half in zip(web_ports, text_halves, strict=True)
            ]
            for thread in load:
                thread.start()
            for thread in load:
                thread.join(300)
            assert answers == [200] * (len(texts) + 8), Counter(answers)
            accepted = {m.message_id for m in mails if m.accepted}
            assert len(accepted) == len(mails)
            wait_until_normalized(engine)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and {r.state for r in outbox_rows(engine)} & {
                "queued",
                "sending",
            }:
                time.sleep(0.2)
            time.sleep(1.0)  # anything sent twice would arrive now
        finally:
            for process in processes:
                process.signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(60)
                finally:
                    process.kill()
        sms_posts = list(twilio_api.received)

    with engine.connect() as conn:
        inbound = conn.execute(
            select(Message.channel, Message.external_id).where(Message.direction == "inbound")
        ).all()
        sms_cases = set(conn.execute(select(Case.reference).where(Case.channel == "sms")).scalars())
        sent_email_refs = Counter(
            conn.execute(
                select(Case.reference)
                .join(Outbox, Outbox.case_id == Case.id)
                .where(Outbox.channel == "email", Outbox.kind == "ack", Outbox.state == "sent")
            ).scalars()
        )
    # Every message once, though some came in through both instances.
    emails = [e for channel, e in inbound if channel == "email"]
    sms = [e for channel, e in inbound if channel == "sms"]
    assert len(emails) == len(set(emails)) == len(accepted)
    assert sorted(sms) == sorted(t["MessageSid"] for t in texts)
    assert len(inbound) == len(emails) + len(sms)

    # SMS: each number acknowledged exactly once, from our number, naming its one case.
    assert Counter(p["To"] for p in sms_posts) == Counter(numbers)
    assert {p["From"] for p in sms_posts} == {OUR_NUMBER}
    sms_refs = Counter(m for p in sms_posts for m in REFERENCE.findall(p["Body"]))
    assert set(sms_refs) == sms_cases and max(sms_refs.values()) == 1, sms_refs
    assert len(sms_cases) == len(numbers)  # a follow-up joined its number's case

    # Email: every acknowledgement arrived once, one per case.
    rows = outbox_rows(engine)
    states = Counter((r.channel, r.state) for r in rows)
    failed = {r.last_error for r in rows if r.state == "failed"}
    # Internationalized local parts cannot be addressed through this relay (no SMTPUTF8):
    # those fail visibly, once; every other acknowledgement arrived once.
    assert all("non-ASCII" in (e or "") for e in failed), failed
    assert {r.channel for r in rows if r.state == "failed"} <= {"email"}
    assert {state for _channel, state in states} <= {"sent", "failed"}, states
    email_acks = sum(1 for r in rows if r.channel == "email" and r.kind == "ack")
    assert states[("email", "sent")] + states[("email", "failed")] == email_acks > 0
    assert len(sink.delivered) == states[("email", "sent")] > 0, (states, failed)
    per_message = Counter(d.parsed()["Message-ID"] for d in sink.delivered)
    assert max(per_message.values()) == 1
    email_refs = Counter(
        m for d in sink.delivered for m in REFERENCE.findall(str(d.parsed()["Subject"]))
    )
    assert email_refs == sent_email_refs and max(email_refs.values()) == 1, email_refs
    # And the outbox says of SMS exactly what the fake Twilio API received.
    assert states[("sms", "sent")] == len(sms_posts)
