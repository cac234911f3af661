"""A real Dovecot for the IMAP tests: rootless, on free high ports, in a temporary directory.

Dovecot refuses uid 0 for mail users, so when the tests run as root the server runs as an
unprivileged system user (created with useradd on first use); otherwise it runs as the
current user. One instance serves plain IMAP (with STARTTLS) and implicit TLS with a
certificate the tests generate, password logins from a passwd-file, XOAUTH2 through the
oauth2 passdb against a small local token endpoint, and the quota plugin with a per-user
limit. Anything that keeps it from starting fails the test: it is never skipped.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs

import pytest
from imapclient import IMAPClient

RUN_AS = "parity-dovecot"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

# Every capability Dovecot 2.3 announces after login, minus MOVE: a full list replaces the
# server's own (a `+` list would only add), so QUOTA, LITERAL+ and NOTIFY are named too.
CAPABILITIES_WITHOUT_MOVE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
    "STATUS=SIZE SAVEDATE LITERAL+ NOTIFY QUOTA"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Certificates:
    """A test CA, a server certificate it signed for 127.0.0.1, and an unrelated CA."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"openssl {' '.join(args[:2])} failed: {done.stderr}")

    for name in ("ca", "other-ca"):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.pem"),
            "-subj", f"/CN=Parity test {name}",
        )  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(directory / "server.key"), "-out", str(directory / "server.csr"),
    )  # fmt: skip
    openssl(
        "x509", "-req", "-days", "2", "-in", str(directory / "server.csr"),
        "-CA", str(directory / "ca.pem"), "-CAkey", str(directory / "ca.key"),
        "-CAcreateserial", "-extfile", str(directory / "san.cnf"),
        "-out", str(directory / "server.pem"),
    )  # fmt: skip
    return Certificates(
        ca=directory / "ca.pem",
        cert=directory / "server.pem",
        key=directory / "server.key",
        other_ca=directory / "other-ca.pem",
    )


class TokenEndpoint:
    """The OAuth2 introspection endpoint Dovecot's oauth2 passdb asks about each token."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                token = (form.get("token") or [""])[0]
                endpoint.requests += 1
                user = endpoint.tokens.get(token)
                answer = {"active": True, "username": user} if user else {"active": False}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/introspect"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Introspection(Protocol):
    """An endpoint the oauth2 passdb validates tokens at: TokenEndpoint, or the fake OAuth2
    provider of the mailbox tests (tests/support/oauth_provider.py)."""

    @property
    def url(self) -> str: ...


def _run_as() -> tuple[int, int]:
    """The uid and gid Dovecot runs as: never root."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwnam(RUN_AS)
    except KeyError:
        done = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_AS],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 and "already exists" not in done.stderr:
            pytest.fail(f"cannot create the user Dovecot runs as: {done.stderr}")
        entry = pwd.getpwnam(RUN_AS)
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True)
class Mailbox:
    """One user on the test server, with what a client needs to reach it."""

    server: Dovecot
    user: str
    password: str

    def client(self, *, tls: bool = False) -> IMAPClient:
        if tls:
            context = ssl.create_default_context(cafile=str(self.server.certs.ca))
            client = IMAPClient(
                "127.0.0.1", self.server.imaps_port, ssl=True, ssl_context=context, timeout=30
            )
        else:
            client = IMAPClient("127.0.0.1", self.server.imap_port, ssl=False, timeout=30)
        client.login(self.user, self.password)
        return client

    @contextlib.contextmanager
    def session(self) -> Iterator[IMAPClient]:
        client = self.client()
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(
        self, folder: str, messages: Sequence[bytes], *, when: datetime | None = None
    ) -> None:
        """APPEND the messages, in order; MULTIAPPEND in chunks where there is no date."""
        with self.session() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            if when is not None:
                for raw in messages:
                    client.append(folder, raw, msg_time=when)
                return
            for start in range(0, len(messages), 200):
                client.multiappend(folder, list(messages[start : start + 200]))

    def uids(self, folder: str) -> list[int]:
        with self.session() as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            return sorted(client.search(["ALL"]))

    def message_ids(self, folder: str) -> list[str]:
        """The Message-ID of every message in `folder`, one entry per message (copies too)."""
        with self.session() as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            found: list[str] = []
            for start in range(0, len(uids), 500):
                data = client.fetch(
                    uids[start : start + 500], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
                )
                for item in data.values():
                    header = item[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode()
                    found.append(header.split(":", 1)[1].strip() if ":" in header else "")
            return found


class Dovecot:
    """One Dovecot instance. `capabilities` replaces the announced capability list."""

    def __init__(
        self,
        certs: Certificates,
        tokens: Introspection,
        *,
        capabilities: str | None = None,
    ) -> None:
        self.certs = certs
        self.tokens = tokens
        self.capabilities = capabilities
        self.uid, self.gid = _run_as()
        # Under /tmp rather than pytest's tmp_path: the unprivileged user must reach it, and
        # pytest's directories are private to the user running the tests.
        self.root = Path(tempfile.mkdtemp(prefix="parity-dovecot-"))
        self.root.chmod(0o755)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: dict[str, str] = {}
        self.passwords: dict[str, str] = {}
        self.quotas: dict[str, int] = {}
        self.taken: set[str] = set()
        for sub in ("run", "state", "mail", "home"):
            (self.root / sub).mkdir()
        shutil.copy(certs.cert, self.root / "server.pem")
        shutil.copy(certs.key, self.root / "server.key")
        self._fill_pool()
        (self.root / "oauth2.conf").write_text(
            "introspection_mode = post\n"
            f"introspection_url = {tokens.url}\n"
            "username_attribute = username\n"
            "active_attribute = active\n"
            "active_value = true\n"
        )
        (self.root / "dovecot.conf").write_text(self._config())
        self._chown()

    @property
    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _config(self) -> str:
        r = self.root
        user = pwd.getpwuid(self.uid).pw_name
        group_line = f"default_internal_group = {_group_name(self.gid)}\n"
        capability = f"  imap_capability = {self.capabilities}\n" if self.capabilities else ""
        return f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
ssl = yes
ssl_cert = <{r}/server.pem
ssl_key = <{r}/server.key
disable_plaintext_auth = no
auth_failure_delay = 1 secs
auth_mechanisms = plain login xoauth2 oauthbearer
default_internal_user = {user}
{group_line}default_login_user = {user}
first_valid_uid = {self.uid}
mail_location = maildir:{r}/mail/%u
# IDLE learns of new mail through inotify; where inotify instances run out (they are counted
# per user, and every instance here runs as one), this fallback still notices within a second.
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  args = {r}/passwd
  mechanisms = plain login
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {r}/oauth2.conf
}}
userdb {{
  driver = passwd-file
  args = {r}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
# Anvil's auth penalty delays every login from an address after a failed one, by up to
# 15 s; all tests log in from 127.0.0.1, so it is switched off (the documented way).
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
mail_plugins = $mail_plugins quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
{capability}}}
plugin {{
  quota = count:User quota
  quota_rule = *:storage=1G
  quota_vsizes = yes
}}
"""

    def _chown(self) -> None:
        if os.geteuid() != 0:
            return
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, self.uid, self.gid)

    # --- users --------------------------------------------------------------------------
    # Dovecot notices a changed passwd-file at most once a second, so a user added just
    # before logging in may not exist yet. Users are therefore written ahead, in a pool,
    # before the server starts, and every test takes fresh ones (with empty mailboxes).

    POOL = 48
    QUOTA_POOL = 3
    QUOTA_KIB = 100

    def _fill_pool(self) -> None:
        for index in range(1, self.POOL + 1):
            self._write_user(f"user{index}", f"pw-user{index}-{os.urandom(4).hex()}")
        for index in range(1, self.QUOTA_POOL + 1):
            self._write_user(
                f"quota{index}", f"pw-quota{index}-{os.urandom(4).hex()}", quota_kib=self.QUOTA_KIB
            )
        self._flush()

    def add_user(self, *, quota_kib: int | None = None) -> Mailbox:
        """A user nobody used before; `quota_kib` may only be the pool's QUOTA_KIB."""
        prefix = "quota" if quota_kib else "user"
        if quota_kib not in (None, self.QUOTA_KIB):
            raise ValueError(f"the pool has quota users of {self.QUOTA_KIB} KiB only")
        for user, password in self.passwords.items():
            if user.startswith(prefix) and user not in self.taken:
                self.taken.add(user)
                return Mailbox(self, user, password)
        raise RuntimeError(f"the pool of {prefix} users is used up; make it larger")

    def set_password(self, user: str, password: str) -> None:
        """Change a password and wait until Dovecot goes by the new one."""
        self._write_user(user, password, quota_kib=self.quotas.get(user))
        self._flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client = IMAPClient("127.0.0.1", self.imap_port, ssl=False, timeout=10)
                client.login(user, password)
                client.logout()
                return
            except Exception:
                time.sleep(0.2)
        pytest.fail(f"Dovecot never took the new password of {user}")

    def _write_user(self, user: str, password: str, *, quota_kib: int | None = None) -> None:
        extra = f"userdb_quota_rule=*:storage={quota_kib}K" if quota_kib else ""
        if quota_kib:
            self.quotas[user] = quota_kib
        self.passwords[user] = password
        home = self.root / "home" / user
        self.lines[user] = f"{user}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{home}::{extra}"

    def _flush(self) -> None:
        path = self.root / "passwd"
        new = path.with_suffix(".new")
        new.write_text("".join(line + "\n" for line in self.lines.values()))
        if os.geteuid() == 0:
            os.chown(new, self.uid, self.gid)
        new.replace(path)  # atomic: the auth process never reads a half-written file

    # --- process ------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        if not Path(DOVECOT).exists():
            pytest.fail("Dovecot is not installed: apt-get install dovecot-imapd dovecot-lmtpd")
        for _attempt in range(3):
            if self._start(timeout):
                return
            if "Address already in use" not in self._output():
                break
            # Another job on this machine took a port between our check and Dovecot's bind.
            self.imap_port, self.imaps_port = free_port(), free_port()
            (self.root / "dovecot.conf").write_text(self._config())
            self._chown()
        output = self._output()
        self.stop()
        pytest.fail(f"Dovecot did not start:\n{output}")

    def _output(self) -> str:
        stderr = self.root / "stderr.log"
        return (stderr.read_text(errors="replace") if stderr.exists() else "") + self.log[-3000:]

    def _start(self, timeout: float) -> bool:
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            kwargs = {"user": self.uid, "group": self.gid, "extra_groups": []}
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "stderr.log", "ab"),  # noqa: SIM115 - the child owns it
            start_new_session=True,
            **kwargs,  # type: ignore[call-overload]
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.imap_port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        """Stop the whole instance, clients included, as a service restart does.

        The master alone leaves running imap processes serving their connections, so the
        process group (the server runs in a session of its own) gets the signal.
        """
        if self.process is None:
            return
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None
        deadline = time.monotonic() + 10
        while _live_members(group):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                return
            time.sleep(0.02)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _live_members(group: int) -> list[int]:
    """Processes of a process group that still run (zombies waiting for init don't count)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


def make_mail(
    index: int,
    *,
    domain: str = "example.org",
    subject: str | None = None,
    body: str | None = None,
    extra_headers: str = "",
) -> bytes:
    """A small, realistic customer mail with a unique Message-ID."""
    date = email.utils.format_datetime(datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
    return (
        f"Return-Path: <customer{index}@{domain}>\r\n"
        f"{extra_headers}"
        f"From: Customer {index} <customer{index}@{domain}>\r\n"
        "To: help@support.example.com\r\n"
        f"Subject: {subject or f'Cannot reset my password (#{index})'}\r\n"
        f"Message-ID: <msg{index}.{domain}@mail.example.org>\r\n"
        f"Date: {date}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body or f'Hello, the reset link in mail {index} says it expired. Please help.'}\r\n"
    ).encode()
