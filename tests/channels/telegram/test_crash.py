"""A real crash: `parity run --only telegram` killed with SIGKILL in the middle of storing a
getUpdates answer, then a restart: nothing stored is lost, nothing is stored twice, and the
offset never runs ahead of what is stored.

The crash point is made by the outside world, never by patching Parity: once the first
answer is committed (the next call carries its offset), the database refuses the next
commit (a lock held by the test) until the child has been killed.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine, select

from connectors.telegram.intake import CONNECTOR, checkpoint_key
from inbox.models import Intake
from inbox.secrets import Secret
from normalizer.intake import load_checkpoint
from tests.channels.telegram.support import PRIVATE, TOKEN, fake_bot_api, fixture
from tests.support.crash import WriteBlocker
from tests.support.helpers import child_env, child_settings
from tests.test_takeover import Child, wait_for

BATCH = 3


def keys(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(Intake.source_key).where(Intake.channel == "telegram")).scalars()
        )


def key_of(name: str) -> str:
    message = fixture(name)["message"]
    return f"msg:{message['chat']['id']}:{message['message_id']}"


def offset(engine: Engine) -> object:
    saved = load_checkpoint(engine, CONNECTOR, checkpoint_key(Secret(TOKEN)))
    return saved.get("offset") if saved else None


def test_a_sigkill_mid_commit_loses_nothing_and_stores_nothing_twice(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    first, second = PRIVATE[:BATCH], PRIVATE[BATCH:]
    after_first = max(fixture(n)["update_id"] for n in first) + 1
    after_all = max(fixture(n)["update_id"] for n in PRIVATE) + 1
    blocker = WriteBlocker(db_url)
    locked = threading.Event()
    path = tmp_path / "settings.toml"
    env = {**child_env(), "TELEGRAM_BOT_TOKEN": TOKEN}
    with fake_bot_api() as fake:
        fake.add(*PRIVATE)

        def crash_point(sent: int | None) -> None:
            # This call confirms the first answer, so it is committed: the next commit (the
            # second answer's) is refused until the child is dead.
            if sent == after_first and not locked.is_set():
                blocker.lock()
                locked.set()

        fake.before_updates.append(crash_point)
        path.write_text(
            child_settings(db_url)
            + f"""
[connectors.telegram]
enabled = true
api_base_url = "{fake.base_url}"
poll_timeout_s = 0
poll_limit = {BATCH}
standby_retry_seconds = 1
timeout_s = 5.0
"""
        )
        child = Child(path, "telegram", tmp_path / "child.log", env)
        try:
            wait_for(locked.is_set, 60, "the second getUpdates", [child])
            blocker.wait_for_blocked_insert()
            child.kill()  # SIGKILL: the second answer was fetched, its commit never happened
        finally:
            child.stop()
            blocker.release()
        # The first answer and its offset are stored; the second, and an offset past it, not.
        assert sorted(keys(engine)) == sorted(map(key_of, first))
        assert offset(engine) == after_first
        # Restarted, it asks again from the stored offset: Telegram still holds the rest.
        again = Child(path, "telegram", tmp_path / "again.log", env)
        try:
            wait_for(lambda: offset(engine) == after_all, 60, "the restart's poll", [again])
        finally:
            again.stop()
    stored = keys(engine)
    assert sorted(stored) == sorted(map(key_of, PRIVATE))
    assert len(stored) == len(set(stored))
    # The restart's first call carried the stored offset, as the killed child's last did.
    assert fake.offsets.count(after_first) >= 2
    assert all(key_of(n) in stored for n in second)
