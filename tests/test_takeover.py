"""Two poller instances on one store; the active one is killed with SIGKILL and the other
takes over within its `standby_retry_seconds`, with nothing lost or doubled.

IMAP against a real Dovecot, Reddit through praw against the local fake; each pair is two
`parity run --only <connector>` processes. (Twitter's is tests/channels/twitter/test_takeover.py.)
Expected figures come from what the test put upstream (the mails it appended, the items the
fake holds), never from the connector's reports. Every child is killed in `finally`.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from inbox.models import Case, ConnectorState, Intake, Message, Outbox
from tests.channels.reddit.reddit_fake import FakeReddit
from tests.channels.reddit.reddit_support import EVERYTHING, KEYWORDS
from tests.support.dovecot import Certificates, Dovecot, Mailbox, TokenEndpoint, make_certificates
from tests.support.dovecot import make_mail as imap_mail
from tests.support.helpers import child_settings

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = "Parity.Archived"  # "Parity/Archived" in settings, spelled with Dovecot's "."
SUPPORT = "help@support.example.com"
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


# --- two children ----------------------------------------------------------------------------


class Child:
    """One `parity run --only <connector>`, its output in a log file."""

    def __init__(self, settings: Path, connector: str, log: Path, env: dict[str, str]) -> None:
        self.log_path = log
        environ = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        for name in ("PARITY_DATABASE_URL", "PARITY_SETTINGS"):
            environ.pop(name, None)
        argv = [sys.executable, "-m", "parity", "--settings", str(settings), "run"]
        with log.open("ab") as handle:
            self.proc = subprocess.Popen(
                [*argv, "--only", connector],
                cwd=ROOT,
                env=environ,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end: a child never outlives its test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(condition: Callable[[], Any], seconds: float, what: str, children: list[Child]) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    logs = "\n".join(f"--- child {c.pid}:\n{c.log()[-3000:]}" for c in children)
    pytest.fail(f"{what}: not reached in {seconds} s\n{logs}")


def states(engine: Engine, connector: str, pick: Callable[[dict[str, Any]], str]) -> dict[int, str]:
    """The state each instance last reported (`pick` reads it from its details), by pid."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(ConnectorState.instance, ConnectorState.details).where(
                ConnectorState.connector == connector
            )
        ).all()
    return {int(instance.rsplit(":", 1)[1]): pick(details or {}) for instance, details in rows}


def count(engine: Engine, model: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


# --- IMAP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    certs: Certificates = make_certificates(tmp_path_factory.mktemp("certs"))
    tokens = TokenEndpoint()
    server = Dovecot(certs, tokens)
    try:
        server.start()
        yield server
    finally:
        server.remove()
        tokens.close()


def imap_settings(path: Path, db_url: str, mailbox: Mailbox) -> Path:
    path.write_text(
        child_settings(db_url, lease_seconds=5)
        + f"""
[connectors.imap]
enabled = true
poll_seconds = 1
batch_size = 10
archive_batch = 30
standby_retry_seconds = 1

[[connectors.imap.accounts]]
name = "support"
host = "127.0.0.1"
port = {mailbox.server.imap_port}
tls = "none"
username = "{mailbox.user}"
password_env = "PARITY_TEST_IMAP"
address = "{SUPPORT}"
""",
        encoding="utf-8",
    )
    return path


def stored_message_ids(engine: Engine) -> Counter[str]:
    """The Message-ID of every IMAP intake row, counted (a row stored twice counts twice)."""
    from inbox.models import Blob

    with engine.connect() as conn:
        rows = conn.execute(
            select(Blob.data)
            .join(Intake, Intake.raw_sha256 == Blob.sha256)
            .where(Intake.connector == "imap")
        ).scalars()
        found: Counter[str] = Counter()
        for raw in rows:
            match = _MESSAGE_ID.search(raw)
            found[match.group(1).decode() if match else ""] += 1
        return found


def message_ids(mails: list[bytes]) -> Counter[str]:
    found: Counter[str] = Counter()
    for raw in mails:
        match = _MESSAGE_ID.search(raw)
        assert match is not None
        found[match.group(1).decode()] += 1
    return found


def test_imap_standby_takes_over_a_folder_after_a_sigkill_nothing_lost_or_doubled(
    db_url, engine, dovecot, tmp_path
):
    mailbox = dovecot.add_user()
    # Enough mail, in small batches, that the kill lands while the first instance drains.
    first = 1200
    before = [imap_mail(i, domain="takeover.example") for i in range(first)]
    after = [imap_mail(i, domain="after-kill.example") for i in range(100)]
    mailbox.append("INBOX", before)
    settings = imap_settings(tmp_path / "settings.toml", db_url, mailbox)
    env = {"PARITY_TEST_IMAP": mailbox.password}
    children = [Child(settings, "imap", tmp_path / f"child{i}.log", env) for i in range(2)]

    def folder_status(details: dict[str, Any]) -> str:
        # What the folder's poller says: "standby" while another instance polls the folder.
        folders = details.get("accounts", {}).get("support", {}).get("folders", {})
        return str(folders.get("INBOX", {}).get("status", ""))

    def standby() -> int | None:
        # The standby says so in its log at once (its heartbeat in the store may lag 5 s).
        waiting = [c.pid for c in children if "INBOX: another instance polls" in c.log()]
        return waiting[0] if waiting and count(engine, Intake) >= 100 else None

    try:
        # Both up: one drains, the other stands by.
        waiting = wait_for(standby, 90, "one instance standing by", children)
        [active] = [c for c in children if c.pid != waiting]
        [survivor] = [c for c in children if c.pid == waiting]
        # Only the active one has read anything (its log reports the backfill's progress).
        assert "INBOX: backfill:" in active.log()
        assert "INBOX: backfill:" not in survivor.log()
        active.kill()  # SIGKILL: no release; the store frees its lock with its session
        stored_at_kill = sum(stored_message_ids(engine).values())
        assert 0 < stored_at_kill < len(before), "the kill did not land mid-drain"
        # Mail that arrives after the kill, while only the standby is left.
        mailbox.append("INBOX", after)
        total = len(before) + len(after)
        wait_for(
            lambda: count(engine, Intake) >= total and not mailbox.uids("INBOX"),
            240,
            "the survivor drained the folder",
            children,
        )
        assert "imap support/INBOX: took the poller lock over" in survivor.log()
        wait_for(
            lambda: count(engine, Message, Message.direction == "inbound") >= total,
            240,
            "every message filed",
            children,
        )
        reported = states(engine, "imap", folder_status)
    finally:
        for child in children:
            child.stop()

    want = message_ids(before + after)
    assert sum(want.values()) == len(want) == first + 100  # the test's own mails are distinct
    assert stored_message_ids(engine) == want  # each stored once, none missing
    assert Counter(mailbox.message_ids(ARCHIVE)) == want  # each archived once
    assert mailbox.uids("INBOX") == []
    with engine.connect() as conn:
        external = list(
            conn.execute(
                select(Message.external_id).where(
                    Message.channel == "email", Message.direction == "inbound"
                )
            ).scalars()
        )
    assert len(external) == len(set(external)) == len(want)
    assert reported.get(survivor.pid) not in (None, "standby"), reported


# --- Reddit ----------------------------------------------------------------------------------


def reddit_settings(path: Path, db_url: str, fake: FakeReddit) -> Path:
    keywords = ", ".join(f'"{k}"' for k in KEYWORDS)
    path.write_text(
        child_settings(db_url, lease_seconds=5)
        + f"""
[connectors.reddit]
enabled = true
oauth_url = "{fake.url}"
reddit_url = "{fake.url}"
subreddits = ["AcmeCloud"]
keywords = [{keywords}]
initial_lookback_hours = 0
poll_seconds = 1
outbox_poll_seconds = 0.2
# A row a killed instance left "sending" is checked at Reddit soon, not in ten minutes.
sending_lease_seconds = 2
standby_retry_seconds = 1
""",
        encoding="utf-8",
    )
    return path


def reddit_keys(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(Intake.source_key).where(Intake.channel == "reddit")).scalars()
        )


def outbox_states(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(
            conn.execute(select(Outbox.state).where(Outbox.channel == "reddit")).scalars()
        )


def test_reddit_standby_takes_over_after_a_sigkill_nothing_lost_or_doubled(
    db_url, engine, tmp_path
):
    with FakeReddit() as fake:
        settings = reddit_settings(tmp_path / "settings.toml", db_url, fake)
        children = [
            Child(settings, "reddit", tmp_path / f"child{i}.log", fake.environ()) for i in range(2)
        ]

        def roles() -> dict[str, int]:
            """The state each live child reports, by pid (a killed one's last word stays)."""
            live = {c.pid for c in children if c.proc.poll() is None}
            found = states(engine, "reddit", lambda d: str(d.get("state", "")))
            return {state: pid for pid, state in found.items() if pid in live}

        new: set[str] = set()
        try:
            wait_for(lambda: set(reddit_keys(engine)) >= EVERYTHING, 60, "fixtures", children)

            def both() -> dict[str, int] | None:
                found = roles()
                return found if {"running", "standby"} <= set(found) else None

            found = wait_for(
                both,
                30,
                "one running, one standby",
                children,
            )
            [active] = [c for c in children if c.pid == found["running"]]
            [survivor] = [c for c in children if c is not active]
            # Only the lock holder signed in: a standby spends none of the rate budget.
            assert fake.token_requests == 1
            active.kill()
            # New items while only the standby is left: posts, and private messages.
            now = time.time()
            for n in range(4):
                for name in (f"takeover_user{n}", f"takeover_writer{n}"):
                    # Real accounts, so karma lookups and private messages reach them.
                    about = copy.deepcopy(next(iter(fake.users.values())))
                    about["data"]["name"] = name
                    fake.users[name] = about
                post = fake.submission(
                    author=f"takeover_user{n}",
                    title=f"Locked out after the outage ({n})",
                    selftext="My account says locked out since this morning.",
                    created=now + n,
                )
                fake.add("r/acmecloud/new", post)
                letter = fake.message(
                    author=f"takeover_writer{n}",
                    subject=f"Billing question {n}",
                    body="I was charged twice for one month; please refund one.",
                    created=now + n,
                )
                fake.add("message/inbox", letter)
                new |= {post["data"]["name"], letter["data"]["name"]}
            want = EVERYTHING | new
            wait_for(lambda: want <= set(reddit_keys(engine)), 60, "new items", children)
            wait_for(lambda: roles().get("running") == survivor.pid, 30, "survivor", children)

            def settled() -> bool:
                # Every case's acknowledgement decided, and every row sent or failed.
                undecided = count(engine, Case, Case.ack_state.is_(None))
                states_now = outbox_states(engine)
                return (
                    undecided == 0
                    and count(engine, Intake, Intake.state == "done") >= len(want)
                    and bool(states_now)
                    and set(states_now) <= {"sent", "failed"}
                )

            wait_for(settled, 90, "acknowledgements delivered", children)
            time.sleep(1.0)  # anything sent twice would arrive now
        finally:
            for child in children:
                child.stop()

        keys = reddit_keys(engine)
        assert len(keys) == len(set(keys)) and set(keys) >= want
        # Every item the fake sent in is one inbound message (a mention seen in the inbox
        # and in the subreddit's comments is one item: one fullname).
        with engine.connect() as conn:
            external = list(
                conn.execute(
                    select(Message.external_id).where(
                        Message.channel == "reddit", Message.direction == "inbound"
                    )
                ).scalars()
            )
        assert len(external) == len(set(external)) and set(external) >= want
        # No Reddit item answered twice, no private acknowledgement sent twice.
        replies = Counter(form["thing_id"] for form in fake.posted)
        letters = Counter((form["to"], form["subject"]) for form in fake.composed)
        assert replies and max(replies.values()) == 1, replies
        assert not letters or max(letters.values()) == 1, letters
        # The new writers' cases were acknowledged by the survivor, each once.
        for n in range(4):
            assert sum(1 for to, _ in letters if to == f"takeover_writer{n}") == 1, letters
        # What the outbox says went out is exactly what reached Reddit.
        assert outbox_states(engine)["sent"] == len(fake.posted) + len(fake.composed)
