"""The SMTP connector with a real client (smtplib), on SQLite and PostgreSQL.

Store, then acknowledge: every 250 means the raw message is durable, even across a SIGKILL;
storage trouble answers 451, never 5xx; relay denial (550) and the size limit (552) are the
only permanent refusals.
"""

from __future__ import annotations

import secrets
import smtplib
import sqlite3
import ssl
import subprocess
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from connectors.smtp.server import recipient_allowed
from inbox import queries
from inbox.db import make_engine
from inbox.models import Attachment, Case, Intake, Message, Receipt
from tests.support.helpers import normalize
from tests.support.smtp_support import (
    DOMAINS,
    Mail,
    ParityProcess,
    daemon_settings,
    running,
    send_concurrently,
    send_one,
    smtp_server,
    varied_mail,
    wait_until_normalized,
)


def _mail(
    subject: str, body: str, *, to: str = "help@support.example.com", extra: str = ""
) -> bytes:
    return (
        f"From: Ann Example <ann@example.org>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@example.org>\r\n"
        f"Date: Fri, 20 Nov 2026 10:00:00 +0000\r\n"
        f"{extra}"
        f"\r\n"
        f"{body}\r\n"
    ).encode()


def _count(engine, model, *where) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def check_every_accepted_mail_stored_once_in_a_case(engine, mails: list[Mail]) -> None:
    """Each mail that got a 250: one intake row, one message, in a case, with its receipts."""
    accepted = [m for m in mails if m.accepted]
    with engine.connect() as conn:
        rows = conn.execute(
            select(Message.id, Message.external_id, Message.text, Message.html, Message.case_id)
        ).all()
        by_external = Counter(r.external_id for r in rows)
        cases = set(conn.execute(select(Case.id)).scalars())
        for mail in accepted:
            assert by_external[mail.message_id] == 1, (mail.index, mail.results)
            row = next(r for r in rows if r.external_id == mail.message_id)
            assert row.case_id in cases
            assert mail.marker in row.text + (row.html or "")
            intake = conn.execute(
                select(func.count()).select_from(Intake).where(Intake.message_id == row.id)
            ).scalar_one()
            assert intake == 1, (mail.index, mail.results)
            receipts = list(
                conn.execute(select(Receipt.address).where(Receipt.message_id == row.id)).scalars()
            )
            assert sorted(receipts) == sorted(r.lower() for r in mail.rcpts)
            attachments = conn.execute(
                select(func.count()).select_from(Attachment).where(Attachment.message_id == row.id)
            ).scalar_one()
            assert attachments == mail.attachments
        pending = conn.execute(
            select(func.count()).select_from(Intake).where(Intake.state != "done")
        ).scalar_one()
    assert pending == 0, "something was not normalized (dead letter or still pending)"


# --- the relay rule, as a table ------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("help@support.example.com", True),
        ("<help@support.example.com>", True),
        ("HELP@SUPPORT.EXAMPLE.COM", True),
        ("help@support.example.com.", True),  # a fully qualified name with its root dot
        ("hilfe@help.example.net", True),
        ("victim@foreign.example.org", False),
        ("help@support.example.com.evil.example", False),
        ("help@sub.support.example.com", False),  # a subdomain is another domain
        ("help@example.com", False),
        ("@support.example.com:victim@foreign.example.org", False),  # source route
        ('"help@support.example.com"@foreign.example.org', False),
        ("help", False),
        ("", False),
        ("help@", False),
    ],
)
def test_only_support_domains_are_accepted(address, allowed):
    assert recipient_allowed(address, DOMAINS) is allowed


def test_an_internationalized_support_domain_matches_in_either_form():
    domains = ["bücher.example"]
    assert recipient_allowed("hilfe@bücher.example", domains)
    assert recipient_allowed("hilfe@xn--bcher-kva.example", domains)
    assert recipient_allowed("hilfe@BÜCHER.example", domains)
    assert not recipient_allowed("hilfe@bucher.example", domains)


# --- 200 varied mails over 8 connections, through `parity run` -------------------------------


def test_200_varied_mails_over_8_connections_are_each_stored_once_in_a_case(db_url, tmp_path):
    settings, smtp_port, _ = daemon_settings(tmp_path, db_url, web=False)
    mails = varied_mail(200, tag="many")
    with running(ParityProcess.run(settings, log_path=tmp_path / "parity.log")) as parity:
        parity.wait_for_port(smtp_port)
        send_concurrently(smtp_port, mails, connections=8)
        engine = make_engine(db_url)
        try:
            wait_until_normalized(engine)
            assert Counter(r for m in mails for r in m.results) == {"250": 200}, parity.log()
            check_every_accepted_mail_stored_once_in_a_case(engine, mails)
            assert _count(engine, Message) == 200
            assert _count(engine, Intake) == 200
        finally:
            engine.dispose()


def test_sigkill_during_a_run_loses_and_doubles_nothing_that_got_250(db_url, tmp_path):
    settings, smtp_port, _ = daemon_settings(tmp_path, db_url, web=False)
    mails = varied_mail(200, tag="kill", seed=11)
    log_path = tmp_path / "parity.log"
    first = ParityProcess.run(settings, log_path=log_path)
    first.wait_for_port(smtp_port)
    accepted_before_kill: list[Mail] = []
    kill_now = threading.Event()

    def on_accepted(mail: Mail) -> None:
        accepted_before_kill.append(mail)
        if len(accepted_before_kill) >= 50:
            kill_now.set()

    sender = threading.Thread(
        target=send_concurrently,
        args=(smtp_port, mails),
        kwargs={"connections": 8, "retry_for": 90.0, "on_accepted": on_accepted},
    )
    sender.start()
    assert kill_now.wait(timeout=60), first.log()
    first.kill()  # SIGKILL: no clean-up of any kind
    killed_at = len([m for m in mails if m.accepted])
    with running(ParityProcess.run(settings, log_path=log_path)) as second:
        second.wait_for_port(smtp_port)
        sender.join(timeout=120)
        assert not sender.is_alive()
        engine = make_engine(db_url)
        try:
            wait_until_normalized(engine)
            # The kill really happened mid-run: some mails were sent after it.
            assert 50 <= killed_at < 200
            assert any("disconnected" in m.results for m in mails), "the kill hit no session"
            assert all(m.accepted for m in mails), [m.results for m in mails if not m.accepted]
            check_every_accepted_mail_stored_once_in_a_case(engine, mails)
            assert _count(engine, Message) == 200
            assert _count(engine, Intake) == 200
        finally:
            engine.dispose()


# --- dedup: the same mail twice, and to two support addresses ----------------------------------


def _case_messages(engine) -> list[dict[str, Any]]:
    cases = queries.list_cases(engine)
    return [
        m for c in cases for m in (queries.case_detail(engine, c["reference"]) or {})["messages"]
    ]


def test_the_same_mail_twice_and_to_two_addresses_is_one_message_with_its_receipts(db_url):
    once = _mail("Locked out", "Please help, I am locked out.")
    both = _mail("Charged twice", "The card was charged twice.", to="help@support.example.com")
    relayed = _mail("Refund", "Where is my refund?")
    with smtp_server(db_url) as server:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            # The same bytes to the same address twice: a sender's retry after a lost 250.
            for _ in range(2):
                assert not client.sendmail("ann@example.org", ["help@support.example.com"], once)
            # One transaction, two support addresses (one of each domain).
            assert not client.sendmail(
                "ann@example.org", ["help@support.example.com", "Billing@Help.Example.NET"], both
            )
            # The same mail in two transactions to two addresses, the second copy with a
            # trace header another hop added: other bytes, the same message.
            assert not client.sendmail("ann@example.org", ["help@support.example.com"], relayed)
            hop = b"Received: from mx2.example.org by parity; Fri, 20 Nov 2026 10:00:05 +0000\r\n"
            assert not client.sendmail(
                "ann@example.org", ["refunds@help.example.net"], hop + relayed
            )
        engine = server.engine
        assert _count(engine, Intake) == 4  # the retry of `once` added nothing
        normalize(engine)
    engine = make_engine(db_url)
    try:
        messages = {m["subject"]: m for m in _case_messages(engine)}
        assert set(messages) == {"Locked out", "Charged twice", "Refund"}
        receipts = {s: sorted(r["address"] for r in m["receipts"]) for s, m in messages.items()}
        assert receipts == {
            "Locked out": ["help@support.example.com"],
            "Charged twice": ["billing@help.example.net", "help@support.example.com"],
            "Refund": ["help@support.example.com", "refunds@help.example.net"],
        }
        assert all(r["connector"] == "smtp" for m in messages.values() for r in m["receipts"])
        assert _count(engine, Message) == 3
    finally:
        engine.dispose()


# --- never a relay ---------------------------------------------------------------------------


def test_a_foreign_recipient_gets_550_and_nothing_is_stored(db_url):
    foreign = [
        "victim@foreign.example.org",
        "help@support.example.com.evil.example",
        "help@sub.support.example.com",
        "<@support.example.com:victim@foreign.example.org>",  # a source route, relay syntax
    ]
    with smtp_server(db_url) as server:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.ehlo("mx.spammer.example")
            client.mail("spam@spammer.example")
            for address in foreign:
                code, reply = client.rcpt(address)
                assert code == 550, (address, reply)
            # With every recipient refused there is nothing to send data for.
            with pytest.raises(smtplib.SMTPDataError) as no_data:
                client.data(b"Subject: buy\r\n\r\nnow\r\n")
            assert no_data.value.smtp_code == 503
            client.rset()
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                client.sendmail("spam@spammer.example", foreign, b"Subject: buy\r\n\r\nnow\r\n")
            assert {code for code, _ in refused.value.recipients.values()} == {550}
            # A mixed transaction: the support address is served, the foreign one is not.
            refused_some = client.sendmail(
                "ann@example.org",
                ["help@support.example.com", "victim@foreign.example.org"],
                _mail("Mixed", "One of us, one not."),
            )
            assert {a: c for a, (c, _) in refused_some.items()} == {
                "victim@foreign.example.org": 550
            }
        engine = server.engine
        with engine.connect() as conn:
            envelopes = list(conn.execute(select(Intake.envelope)).scalars())
        assert [e["rcpt_tos"] for e in envelopes] == [["help@support.example.com"]]


# --- storage refusing writes: 451, never 5xx -----------------------------------------------------


def _send_expecting(client: smtplib.SMTP, raw: bytes, code: str) -> None:
    mail = Mail(0, "ann@example.org", ["help@support.example.com"], raw, "")
    assert send_one(client, mail) == code
    assert client.noop()[0] == 250  # the session survives a refusal


def test_storage_refusing_writes_gets_451_then_a_retry_gets_250(db_url, tmp_path):
    held = _mail("Held", "Sent while the store refuses writes.")
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        # Another process holds the write lock longer than our busy timeout.
        with smtp_server(db_url, busy_timeout_ms=200) as server:
            blocker = sqlite3.connect(str(url.database), isolation_level=None)
            try:
                with smtplib.SMTP("127.0.0.1", server.port) as client:
                    _send_expecting(client, _mail("Before", "Stored normally."), "250")
                    blocker.execute("BEGIN EXCLUSIVE")
                    for _ in range(3):
                        _send_expecting(client, held, "451")
                    blocker.execute("ROLLBACK")
                    _send_expecting(client, held, "250")
            finally:
                blocker.close()
            health = server.connector.health
            assert health.last_error and "storage unavailable" in health.last_error
            assert _count(server.engine, Intake) == 2
        return
    # PostgreSQL: we are a superuser here, and superusers ignore privileges, so the server
    # runs as a role of its own, which loses INSERT for a while.
    role = f"parity_smtp_{secrets.token_hex(4)}"
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        conn.execute(
            text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
        )
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    try:
        role_url = url.set(username=role).render_as_string(hide_password=False)
        with smtp_server(role_url) as server:
            with smtplib.SMTP("127.0.0.1", server.port) as client:
                _send_expecting(client, _mail("Before", "Stored normally."), "250")
                with admin.connect() as conn:
                    conn.execute(
                        text(f'REVOKE INSERT ON ALL TABLES IN SCHEMA public FROM "{role}"')
                    )
                for _ in range(3):
                    _send_expecting(client, held, "451")
                with admin.connect() as conn:
                    conn.execute(text(f'GRANT INSERT ON ALL TABLES IN SCHEMA public TO "{role}"'))
                _send_expecting(client, held, "250")
            health = server.connector.health
            assert health.last_error and "storage unavailable" in health.last_error
        assert _count(admin, Intake) == 2
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
                {"r": role},
            )
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


# --- the size limit: the only other 5xx --------------------------------------------------------


def test_over_the_size_limit_gets_552_and_long_lines_are_fine(db_url):
    limit = 64 * 1024
    with smtp_server(db_url, max_message_bytes=limit) as server:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.ehlo("mx.example.org")
            assert client.has_extn("size") and int(client.esmtp_features["size"]) == limit
            big = _mail("Too big", "x" * 70 + ("\r\n" + "y" * 70) * 1000)
            # smtplib declares the size up front (SIZE=), and MAIL is refused with 552.
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail("ann@example.org", ["help@support.example.com"], big)
            assert refused.value.smtp_code == 552
            client.rset()
            # A client that does not declare it is refused with 552 after the data.
            client.mail("ann@example.org")
            client.rcpt("help@support.example.com")
            assert client.data(big)[0] == 552
            # One line longer than the whole limit is a message that is too big: 552 too.
            client.mail("ann@example.org")
            client.rcpt("help@support.example.com")
            assert client.data(_mail("One line", "z" * (limit + 10)))[0] == 552
            # Under the limit, a 50,000-character line (real HTML mail) is stored.
            fine = _mail("Long line", "<p>" + "w" * 50_000 + "</p>")
            assert not client.sendmail("ann@example.org", ["help@support.example.com"], fine)
        engine = server.engine
        with engine.connect() as conn:
            stored = list(conn.execute(select(Intake.source_key)).scalars())
        assert len(stored) == 1
        outcomes = normalize(engine)
        assert [o.state for o in outcomes] == ["done"]
    engine = make_engine(db_url)
    try:
        (message,) = _case_messages(engine)
        assert message["subject"] == "Long line" and "w" * 50_000 in message["text"]
    finally:
        engine.dispose()


def test_shutdown_answers_421_to_open_sessions_and_loses_nothing(db_url):
    with smtp_server(db_url) as server:
        client = smtplib.SMTP("127.0.0.1", server.port)
        assert not client.sendmail(
            "ann@example.org", ["help@support.example.com"], _mail("Before", "Stored.")
        )
        port = server.port
    # The server stopped while our session was open: it said goodbye with 421.
    assert client.noop()[0] == 421
    client.close()
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", port, timeout=2)
    engine = make_engine(db_url)
    try:
        assert _count(engine, Intake) == 1
    finally:
        engine.dispose()


# --- STARTTLS ----------------------------------------------------------------------------------


def test_starttls_is_offered_with_a_certificate_and_mail_flows_over_it(db_url, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=parity.localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # the test connects to 127.0.0.1, the cert names a host
    with smtp_server(db_url) as plain, smtplib.SMTP("127.0.0.1", plain.port) as client:
        client.ehlo("mx.example.org")
        assert not client.has_extn("starttls")
    with smtp_server(db_url, tls_cert=str(cert), tls_key=str(key)) as server:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.ehlo("mx.example.org")
            assert client.has_extn("starttls")
            assert client.starttls(context=context)[0] == 220
            client.ehlo("mx.example.org")
            assert isinstance(client.sock, ssl.SSLSocket)
            assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
            assert not client.sendmail(
                "ann@example.org", ["help@support.example.com"], _mail("Over TLS", "Secret.")
            )
        assert server.connector.health.details["starttls"] is True
        assert _count(server.engine, Intake) == 1
