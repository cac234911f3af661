"""Issue 16, attack 1: one hostile mail must not freeze the queue.

Each attack is sent as it was tried: by smtplib to a running `parity run`. Then the hostile
mail is a dead letter (or a message, where it is fine mail that used to be slow), the NEXT
normal mail's case exists, and the process is alive. The head-of-line test asserts the order
of events (the normal mail's case exists while the slow one is still unparsed), never a time.
"""

from __future__ import annotations

import hashlib
import smtplib
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from connectors.registry import parser_table
from inbox.config import StoreSettings
from inbox.models import Blob, Case, DeadLetter, Intake, Message
from normalizer.config import NormalizerSettings
from normalizer.deadletters import replay
from normalizer.worker import Normalizer
from tests.support.helpers import ingest
from tests.support.smtp_support import ParityProcess, daemon_settings, running, wait_for

HEAD = (
    b"From: Mallory <mallory@example.net>\r\nTo: help@support.example.com\r\n"
    b"Subject: hostile\r\nMIME-Version: 1.0\r\n"
)


def quadratic_html(kilobytes: int = 160) -> bytes:
    """The CVE-2025-6069 shape, HTML only: 52.5 s of delay for the next mail before."""
    unit = "<a<a\u2039a".encode()
    body = unit * (kilobytes * 1024 // len(unit))
    return (
        HEAD + b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + body + b"\r\n"
    )


def parameter_heavy() -> bytes:
    """A 250 KB Content-Type made of parameters: it passed the caps and took 45 s."""
    params = b"".join(b";\r\n p%d=v%06d" % (i, i) for i in range(15_000))
    return HEAD + b"Content-Type: multipart/mixed; boundary=b" + params + b"\r\n\r\n--b--\r\n"


def deep(depth: int = 5000) -> bytes:
    out = [HEAD]
    for i in range(depth):
        out.append(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\nbottom\r\n")
    return b"".join(out)


def many_parts(parts: int = 100_000) -> bytes:
    return HEAD + b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + b"--p\r\n\r\n" * parts


def big_html(megabytes: int) -> bytes:
    """Fine HTML that is slow only by its size (~0.7 s of parsing a MB here)."""
    body = b"<div>x</div>" * (megabytes * 1024 * 1024 // 12)
    return HEAD + b"Content-Type: text/html\r\n\r\n" + body + b"\r\n"


def normal(n: int) -> bytes:
    return (
        b"From: Ann Example <ann%d@example.org>\r\nTo: help@support.example.com\r\n"
        b"Subject: Locked out %d\r\nMessage-ID: <normal-%d@example.org>\r\n\r\n"
        b"I cannot log in.\r\n" % (n, n, n)
    )


def send(port: int, raw: bytes, sender: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        assert not client.sendmail(sender, ["help@support.example.com"], raw)


def case_of(engine: Engine, message_id_header: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(Case.reference)
            .join(Message, Message.case_id == Case.id)
            .where(Message.external_id == message_id_header)
        ).scalar()


def intake_of(engine: Engine, raw: bytes) -> tuple[str, str | None] | None:
    """(state, dead letter reason) of the intake row holding exactly `raw`."""
    digest = hashlib.sha256(raw).hexdigest()
    with engine.connect() as conn:
        row = conn.execute(
            select(Intake.state, DeadLetter.error)
            .outerjoin(DeadLetter, DeadLetter.intake_id == Intake.id)
            .where(Intake.raw_sha256 == digest)
        ).first()
    return None if row is None else (row[0], row[1])


ATTACKS = [
    # (name, mail, expected state, words the dead letter's reason must contain)
    ("quadratic html", quadratic_html(), "done", None),
    ("parameter-heavy content-type", parameter_heavy(), "dead", "Content-Type"),
    ("5,000-deep nesting", deep(), "dead", "nesting deeper than"),
    ("100k parts", many_parts(), "dead", "MIME parts"),
]


@pytest.mark.slow
def test_each_attack_by_smtp_then_the_next_mail_is_filed(db_url, engine, tmp_path: Path):
    settings, smtp_port, _ = daemon_settings(tmp_path, db_url, web=False)
    parity = ParityProcess.run(settings, log_path=tmp_path / "parity.log")
    with running(parity):
        parity.wait_for_port(smtp_port)
        for n, (name, raw, state, reason) in enumerate(ATTACKS):
            send(smtp_port, raw, "mallory@example.net")
            send(smtp_port, normal(n), f"ann{n}@example.org")
            wait_for(lambda n=n: case_of(engine, f"normal-{n}@example.org"), 120, name)
            settled = wait_for(
                lambda raw=raw: (
                    (found := intake_of(engine, raw)) and found[0] != "pending" and found
                ),
                120,
                name,
            )
            assert settled[0] == state, (name, settled)
            if reason is not None:
                assert reason in (settled[1] or ""), (name, settled)
            assert parity.proc.poll() is None, f"parity died on {name}:\n{parity.log()}"
        # The quadratic mail is a message with its text and a stored, sanitized view.
        with engine.connect() as conn:
            html_view = conn.execute(
                select(Message.html_view).where(Message.subject == "hostile")
            ).scalar_one()
        assert html_view is not None and "<a<a" not in html_view


@pytest.mark.slow
def test_a_slow_mail_holds_back_neither_the_next_mail_nor_the_daemon(
    db_url, engine, tmp_path: Path
):
    # 16 MB of HTML parses for far longer than the budget: it is killed at the budget.
    settings, smtp_port, _ = daemon_settings(
        tmp_path,
        db_url,
        web=False,
        extra={"normalizer": {"parse_timeout_seconds": 6, "workers": 2}},
    )
    slow = big_html(16)
    parity = ParityProcess.run(settings, log_path=tmp_path / "parity.log")
    with running(parity):
        parity.wait_for_port(smtp_port)
        send(smtp_port, slow, "mallory@example.net")
        # The slow mail is claimed and its parse has started before the normal one arrives.
        wait_for(lambda: intake_of(engine, slow), 60, "the slow mail stored")
        send(smtp_port, normal(1), "ann1@example.org")
        wait_for(lambda: case_of(engine, "normal-1@example.org"), 120, "the normal case")
        # The order of events: the normal mail was filed while the slow one was unparsed.
        assert intake_of(engine, slow) == ("pending", None)
        settled = wait_for(
            lambda: (found := intake_of(engine, slow)) and found[0] == "dead" and found, 120
        )
        assert settled[1] == "parse exceeded 6 s budget"
        send(smtp_port, normal(2), "ann2@example.org")
        wait_for(lambda: case_of(engine, "normal-2@example.org"), 120, "the next case")
        assert parity.proc.poll() is None, parity.log()


def dns_silent() -> bytes:
    """Fine mail from a domain whose name servers never answer (tests/fixtures/dns:
    `drop spf-timeout.example`): every question it causes runs to its timeout."""
    return (
        b"From: Sam <sam@spf-timeout.example>\r\nTo: help@support.example.com\r\n"
        b"Subject: slow dns\r\nMessage-ID: <slow-dns@spf-timeout.example>\r\n\r\n"
        b"Hello.\r\n"
    )


@pytest.mark.slow
def test_a_sender_whose_dns_never_answers_holds_back_nobody_and_is_still_filed(
    db_url, engine, tmp_path: Path
):
    # SPF's question and DMARC's each wait 4 s for an answer that never comes; the mail's
    # DNS budget (8 s) is spent by then. The check runs in a parse child, so the next
    # person's mail is filed meanwhile, and the slow one becomes a message with a
    # `temperror` verdict, never a dead letter (docs/security/senders.md).
    settings, smtp_port, _ = daemon_settings(
        tmp_path,
        db_url,
        web=False,
        extra={"mail_auth": {"timeout_seconds": 4.0, "budget_seconds": 8.0}},
    )
    slow = dns_silent()
    parity = ParityProcess.run(settings, log_path=tmp_path / "parity.log")
    with running(parity):
        parity.wait_for_port(smtp_port)
        send(smtp_port, slow, "sam@spf-timeout.example")
        send(smtp_port, normal(1), "ann1@example.org")
        wait_for(lambda: case_of(engine, "normal-1@example.org"), 120, "the normal case")
        # The order of events: the normal mail was filed while the slow one waited on DNS.
        assert intake_of(engine, slow) == ("pending", None)
        wait_for(lambda: case_of(engine, "slow-dns@spf-timeout.example"), 120, "the slow case")
        with engine.connect() as conn:
            auth = conn.execute(
                select(Message.auth).where(Message.external_id == "slow-dns@spf-timeout.example")
            ).scalar_one()
        assert auth is not None and auth["verdict"] == "temperror", auth
        assert intake_of(engine, slow) == ("done", None)
        assert parity.proc.poll() is None, parity.log()


def test_over_budget_is_a_dead_letter_with_its_raw_bytes_and_replays_once_raised(engine):
    raw = big_html(2)  # about 1.4 s of parsing
    ingest(engine, raw, source_key="slow-html")
    tight = Normalizer(
        engine,
        StoreSettings(),
        NormalizerSettings(parse_timeout_seconds=0.05),
        parsers=parser_table(),
    )
    (outcome,) = tight.drain()
    assert (outcome.state, outcome.error) == ("dead", "parse exceeded 0.05 s budget")
    with engine.connect() as conn:
        letter = conn.execute(select(DeadLetter)).one()
        stored = conn.execute(select(Blob.data).where(Blob.sha256 == letter.raw_sha256)).scalar()
    assert letter.error == "parse exceeded 0.05 s budget"
    assert stored == raw
    # The fix: a budget the input fits in. Replay files it as a message in a case.
    fixed = Normalizer(
        engine,
        StoreSettings(),
        NormalizerSettings(parse_timeout_seconds=120),
        parsers=parser_table(),
    )
    result = replay(engine, fixed, letter.id)
    assert result.case is not None, result
    with engine.connect() as conn:
        message = conn.execute(select(Message).where(Message.raw_sha256 == letter.raw_sha256)).one()
    # Each <div> opens and closes a line: blocks are a blank line apart.
    assert message.text.startswith("x\n\nx\n\nx")
    assert message.html_view is not None and message.html_view.startswith("<div>x</div>")
