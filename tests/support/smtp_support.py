"""Shared pieces of the SMTP and daemon tests: settings files, a `parity run` process, an
in-process SMTP server, realistic varied mail, and a concurrent smtplib sender.

Everything here is real: the server is our aiosmtpd connector on a real socket, the client
is smtplib, the store is the test's SQLite or PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import random
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from connectors.smtp.server import SmtpConnector
from connectors.smtp.settings import SmtpSettings
from inbox.db import make_engine
from inbox.models import Intake
from normalizer.intake import IntakeWriter
from parity.workers import STOP_GRACE_S
from tests.support.dns_server import shared_dns

REPO = Path(__file__).resolve().parents[2]
DOMAINS = ["support.example.com", "help.example.net"]
# How long a test gives a `parity run` to stop cleanly after SIGTERM. The daemon's own bound
# is its worker processes' grace (each finishes the chunk it is filing, then is killed) plus
# a few seconds of its own threads: a loaded CI machine took longer than a flat 30 s when a
# worker was still in its first chunk, a failure of the test's patience, not of the daemon.
STOP_WITHIN_S = STOP_GRACE_S + 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# --- settings files --------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return json.dumps(value)  # a JSON string or number is a valid TOML one
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_settings(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """Write a settings.toml: {"connectors.smtp": {"port": 2525}, ...}."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(v)}" for key, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def daemon_settings(
    tmp_path: Path,
    db_url: str,
    *,
    smtp_port: int | None = None,
    web_port: int | None = None,
    web: bool = True,
    extra: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, int, int]:
    smtp_port = smtp_port or free_port()
    web_port = web_port or free_port()
    sections: dict[str, dict[str, Any]] = {
        "database": {"url": db_url, "url_env": "PARITY_TEST_NO_SUCH_VARIABLE"},
        # Leases come back quickly after a SIGKILL, so the tests need not wait two minutes.
        "normalizer": {"lease_seconds": 5},
        "logging": {"level": "INFO"},
        "connectors.smtp": {"port": smtp_port, "support_domains": DOMAINS},
        "connectors.web": {"port": web_port, "enabled": web},
        # The fixture DNS server (tests/fixtures/dns): 127.0.0.1 may send for the tests'
        # domains, so mail sent by smtplib with MAIL FROM at its From is authenticated.
        "mail_auth": {"nameservers": [f"127.0.0.1:{shared_dns().port}"], "timeout_seconds": 1.0},
    }
    for key, values in (extra or {}).items():
        sections.setdefault(key, {}).update(values)
    return write_settings(tmp_path / "settings.toml", sections), smtp_port, web_port


# --- a `parity run` process ------------------------------------------------------------------


class ParityProcess:
    """`parity run` (or any command that execs it) as a child process, logging to a file."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            # Its own process group, so `kill` reaches what it started too (normalizer
            # worker processes, parse children) and the next test's store is never written
            # by a child still finishing this test's batch.
            start_new_session=True,
        )

    @classmethod
    def run(
        cls, settings: Path, *args: str, log_path: Path, env: dict[str, str] | None = None
    ) -> ParityProcess:
        return cls(
            [sys.executable, "-m", "parity", "--settings", str(settings), "run", *args],
            log_path,
            env=env,
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_port(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"parity exited with {self.proc.returncode}:\n{self.log()}")
            if port_open(port):
                return
            time.sleep(0.1)
        raise AssertionError(f"port {port} never opened:\n{self.log()}")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never logged:\n{self.log()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL the process and everything it started, and wait until all are gone.

        The PostgreSQL store is one database per test worker, truncated between tests: a
        worker process of this `parity run` that outlived it would file into the next test.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        group = self.proc.pid  # start_new_session: the group's id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (left := live_in_group(group)) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._log.close()
        assert not left, f"processes {left} of parity (group {group}) outlived SIGKILL"


def live_in_group(group: int) -> list[int]:
    """The processes of process group `group` still running: a zombie no longer writes, and
    its reaping is up to whoever adopted it, which may be a PID 1 that never reaps."""
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                # After the command's ")": state, ppid, pgrp (the command may hold spaces).
                fields = stat.read().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            live.append(int(entry))
    return live


@contextlib.contextmanager
def running(process: ParityProcess) -> Iterator[ParityProcess]:
    try:
        yield process
    finally:
        process.kill()


# --- an in-process server --------------------------------------------------------------------


@dataclass
class InProcessServer:
    port: int
    engine: Engine
    connector: SmtpConnector


@contextlib.contextmanager
def smtp_server(
    db_url: str, *, busy_timeout_ms: int = 5000, **settings: Any
) -> Iterator[InProcessServer]:
    """Our SMTP connector on port 0, on an event loop of its own in a thread.

    The test body stays plain blocking code (smtplib), as a sending server's would be.
    """
    engine = make_engine(db_url, busy_timeout_ms=busy_timeout_ms)
    smtp_settings = SmtpSettings.model_validate({"port": 0, "support_domains": DOMAINS, **settings})
    ready: queue.SimpleQueue[InProcessServer | BaseException] = queue.SimpleQueue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        writer = IntakeWriter(engine)
        connector = SmtpConnector(smtp_settings, writer)
        try:
            await connector.start()
            port = int(connector.address.rsplit(":", 1)[1])
            ready.put(InProcessServer(port, engine, connector))
            await stop.wait()
            await connector.close()
        except BaseException as exc:
            ready.put(exc)
            raise
        finally:
            await asyncio.to_thread(writer.stop)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    started = ready.get(timeout=30)
    if isinstance(started, BaseException):
        raise started
    try:
        yield started
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
        engine.dispose()


# --- mail ------------------------------------------------------------------------------------


@dataclass
class Mail:
    index: int
    mail_from: str
    rcpts: list[str]
    raw: bytes
    message_id: str  # without angle brackets
    smtputf8: bool = False
    marker: str = ""
    attachments: int = 0
    results: list[str] = field(default_factory=list)  # "250", "451", "disconnected", ...

    @property
    def accepted(self) -> bool:
        return "250" in self.results


_WORDS = [
    "account", "locked", "password", "reset", "phone", "stolen", "cannot", "login", "two",
    "factor", "code", "never", "arrives", "billing", "charged", "twice", "refund", "please",
    "urgent", "since", "yesterday", "hacked", "email", "changed",
]  # fmt: skip


def varied_mail(count: int, *, seed: int = 7, tag: str = "t") -> list[Mail]:
    """`count` realistic, distinct mails of six kinds, to one or several support addresses.

    Kinds: plain text; HTML with lines far over 1,000 characters; attachments; UTF-8
    addresses and headers sent with SMTPUTF8; several support recipients in one
    transaction; RFC 2047 encoded headers with a quoted-printable body.
    """
    rng = random.Random(seed)
    mails = []
    for i in range(count):
        kind = i % 6
        marker = f"marker-{tag}-{i}-{rng.getrandbits(32):08x}"
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 60)))
        msg = EmailMessage()
        sender = f"customer{i % 41}@example.org"
        name = rng.choice(["Ann Example", "Bo Svensson", "Chidi Okafor", "Dana Levi"])
        rcpts = ["help@support.example.com"]
        smtputf8 = False
        attachments = 0
        if kind == 0:
            msg["Subject"] = f"Cannot log in ({i})"
            msg.set_content(f"Hello,\n\n{words}\n\n{marker}\n")
        elif kind == 1:
            msg["Subject"] = f"Formatted mail {i}"
            # Real HTML mail: one long line per paragraph, far over RFC 5321's 1,000.
            long_line = "<p>" + (words + " ") * (1 + 3000 // max(1, len(words))) + "</p>"
            if i == 1:
                long_line += "<!--" + "x" * 200_000 + "-->"  # over aiosmtpd's old 100k too
            msg.set_content(f"{words}\n{marker}\n")
            msg.add_alternative(
                f"<html><body>{long_line}<p>{marker}</p></body></html>",
                subtype="html",
                cte="8bit",
            )
        elif kind == 2:
            msg["Subject"] = f"Screenshot of the error {i}"
            msg.set_content(f"See the attached screenshot.\n{marker}\n")
            for n in range(1 + i % 2):
                data = rng.randbytes(rng.randint(2_000, 30_000))
                msg.add_attachment(
                    data, maintype="image", subtype="png", filename=f"screen-{i}-{n}.png"
                )
                attachments += 1
        elif kind == 3:
            smtputf8 = True
            sender = f"zoë{i % 7}@exämple.org"
            name = "Zoë Ünal"
            rcpts = ["hilfe@support.example.com"]
            msg["Subject"] = f"Zugang gesperrt – bitte helfen 🙏 {i}"
            msg.set_content(f"Grüße aus Köln. Ich komme nicht mehr in mein Konto.\n{marker}\n")
        elif kind == 4:
            rcpts = ["help@support.example.com", "billing@help.example.net"]
            if i % 4 == 0:
                rcpts.append("Security@SUPPORT.example.com")
            msg["Subject"] = f"Charged twice {i}"
            msg["Cc"] = "billing@help.example.net, friend@elsewhere.example"
            msg.set_content(f"{words}\n{marker}\n")
        else:
            msg["Subject"] = f"アカウントにログインできません {i}"
            name = "山田 太郎"
            msg.set_content(
                f"パスワードを忘れました。\n{words}\n{marker}\n", cte="quoted-printable"
            )
        local, domain = sender.split("@")
        msg["From"] = Address(name, local, domain)
        msg["To"] = ", ".join(rcpts)
        msg["Date"] = formatdate(1_790_000_000 + i * 60)
        message_id = f"{tag}.{i}.{rng.getrandbits(48):012x}@example.org"
        msg["Message-ID"] = f"<{message_id}>"
        raw = msg.as_bytes(policy=policy.SMTPUTF8 if smtputf8 else policy.SMTP)
        mails.append(Mail(i, sender, rcpts, raw, message_id, smtputf8, marker, attachments))
    return mails


def send_one(client: smtplib.SMTP, mail: Mail) -> str:
    """Send `mail` on an open connection; the result code as text, or the failure's name."""
    options = ["SMTPUTF8"] if mail.smtputf8 else []
    try:
        refused = client.sendmail(mail.mail_from, mail.rcpts, mail.raw, mail_options=options)
    except smtplib.SMTPResponseException as exc:
        return str(exc.smtp_code)
    except smtplib.SMTPRecipientsRefused as exc:
        return ",".join(str(code) for code, _ in exc.recipients.values())
    assert not refused, refused
    return "250"


def send_concurrently(
    port: int,
    mails: list[Mail],
    *,
    connections: int = 8,
    retry_for: float = 0.0,
    on_accepted: Any = None,
) -> None:
    """Send every mail over `connections` persistent connections, one thread each.

    A mail that gets a 4xx or loses its connection is tried again, as a sending server
    would, for up to `retry_for` seconds (0: never). Every answer is kept in `mail.results`.
    """
    todo: queue.SimpleQueue[Mail] = queue.SimpleQueue()
    for mail in mails:
        todo.put(mail)
    remaining = [len(mails)]
    lock = threading.Lock()
    deadline = time.monotonic() + retry_for

    def settle(mail: Mail, result: str) -> None:
        mail.results.append(result)
        retry = result != "250" and (result[0] == "4" or result == "disconnected")
        if retry and time.monotonic() < deadline:
            todo.put(mail)
            return
        with lock:
            remaining[0] -= 1
        if result == "250" and on_accepted is not None:
            on_accepted(mail)

    def connect() -> smtplib.SMTP | None:
        while True:
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=30)
                client.ehlo("client.example.org")
                return client
            except OSError:
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.1)

    def work() -> None:
        client = connect()
        while True:
            with lock:
                if remaining[0] == 0:
                    break
            try:
                mail = todo.get(timeout=0.2)
            except queue.Empty:
                continue
            if client is None:
                client = connect()
                if client is None:
                    settle(mail, "disconnected")
                    continue
            try:
                result = send_one(client, mail)
            except (smtplib.SMTPServerDisconnected, OSError):
                result = "disconnected"
                with contextlib.suppress(Exception):
                    client.close()
                client = None
            settle(mail, result)
        if client is not None:
            with contextlib.suppress(Exception):
                client.quit()

    threads = [threading.Thread(target=work) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)


def wait_until_normalized(engine: Engine, timeout: float = 90.0) -> None:
    """Wait until the daemon's worker has nothing pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            pending = conn.execute(
                select(func.count()).select_from(Intake).where(Intake.state == "pending")
            ).scalar_one()
        if pending == 0:
            return
        time.sleep(0.25)
    raise AssertionError(f"{pending} intake rows still pending after {timeout} s")


# --- the daemon in-process ---------------------------------------------------------------------


class DaemonThread:
    """A real `Daemon` on an event loop of its own in a thread (no signal handlers there)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.loop = asyncio.new_event_loop()
        self.result: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.result = self.loop.run_until_complete(self.daemon.run())

    def __enter__(self) -> DaemonThread:
        self.thread.start()
        return self

    def stop(self) -> int | None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.daemon.stop.set)
            self.thread.join(timeout=60)
        return self.result

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.loop.close()


def wait_for(condition: Any, timeout: float = 30.0, message: str = "") -> Any:
    """Poll `condition()` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {message or condition}")
        time.sleep(0.05)
