"""Two `parity run --only telegram` processes polling one bot: the active one is killed with
SIGKILL and the standby takes the lock and the offset over, with nothing lost or doubled.

Expected figures come from the updates the test put into the fake Bot API, never from the
connector's reports. Every child is stopped in `finally`.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from inbox.models import Case, Intake, Outbox
from parity.cli import main
from tests.channels.telegram.support import PRIVATE, TOKEN, fake_bot_api, fixture
from tests.support.helpers import child_env, child_settings
from tests.test_takeover import Child, count, states, wait_for


def keys(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(Intake.source_key).where(Intake.channel == "telegram")).scalars()
        )


def new_person(n: int) -> dict[str, Any]:
    """A private text from someone new, after every fixture's update."""
    update = copy.deepcopy(fixture("text"))
    person = 8_100_000_000 + n
    update["update_id"] = 640_118_000 + n
    message = update["message"]
    message["message_id"] = 1
    message["from"] = {"id": person, "is_bot": False, "first_name": f"Writer{n}"}
    message["chat"] = {"id": person, "first_name": f"Writer{n}", "type": "private"}
    message["text"] = f"Locked out after the outage ({n})"
    return update


def key_of(update: dict[str, Any]) -> str:
    return f"msg:{update['message']['chat']['id']}:{update['message']['message_id']}"


def test_the_standby_takes_over_after_a_sigkill_nothing_lost_or_doubled(
    db_url: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = [fixture(name) for name in PRIVATE]
    later = [new_person(n) for n in range(4)]
    with fake_bot_api() as fake:
        fake.updates.extend(copy.deepcopy(first))
        path = tmp_path / "settings.toml"
        path.write_text(
            child_settings(db_url, lease_seconds=5)
            + f"""
[connectors.telegram]
enabled = true
api_base_url = "{fake.base_url}"
poll_timeout_s = 0
standby_retry_seconds = 1
timeout_s = 5.0
"""
        )
        env = {**child_env(), "TELEGRAM_BOT_TOKEN": TOKEN}
        children = [Child(path, "telegram", tmp_path / f"child{i}.log", env) for i in range(2)]
        try:
            want = {key_of(u) for u in first}
            wait_for(lambda: set(keys(engine)) >= want, 60, "the fixtures", children)

            def roles() -> dict[str, int] | None:
                live = {c.pid for c in children if c.proc.poll() is None}
                found = states(engine, "telegram", lambda d: str(d.get("state", "")))
                by_state = {state: pid for pid, state in found.items() if pid in live}
                return by_state if {"running", "standby"} <= set(by_state) else None

            found = wait_for(roles, 30, "one running, one standby", children)
            [active] = [c for c in children if c.pid == found["running"]]
            [survivor] = [c for c in children if c is not active]
            active.kill()
            # New people write while only the standby is left.
            fake.updates.extend(copy.deepcopy(later))
            want |= {key_of(u) for u in later}
            wait_for(lambda: set(keys(engine)) >= want, 60, "the new updates", children)

            def survivor_runs() -> bool:
                found = states(engine, "telegram", lambda d: str(d.get("state", "")))
                return found.get(survivor.pid) == "running"

            wait_for(survivor_runs, 30, "the survivor polling", children)
            # It polls on from the stored offset: status shows it past every update.
            top = max(u["update_id"] for u in [*first, *later])

            def survivor_offset() -> bool:
                found = states(engine, "telegram", lambda d: str(d.get("offset")))
                return found.get(survivor.pid) == str(top + 1)

            wait_for(survivor_offset, 30, "the survivor's offset in its status", children)
            chats = {u["message"]["chat"]["id"] for u in [*first, *later]}

            def settled() -> bool:
                return (
                    count(engine, Case, Case.channel == "telegram") == len(chats)
                    and count(engine, Outbox, Outbox.state == "sent") == len(chats)
                    and count(engine, Intake, Intake.state == "pending") == 0
                )

            wait_for(settled, 90, "every case acknowledged", children)
            time.sleep(1.5)  # anything sent twice would arrive now
        finally:
            for child in children:
                child.stop()
        sent = Counter(message["chat_id"] for message in fake.sent)
    stored = keys(engine)
    # Nothing lost, nothing doubled: each update once, each person acknowledged once.
    assert sorted(stored) == sorted(want)
    assert sent == Counter(dict.fromkeys(chats, 1))
    # `parity connectors status --json` shows each instance's mode, offset and counts.
    capsys.readouterr()
    main(["--settings", str(path), "connectors", "status", "--json"])
    [telegram] = [c for c in json.loads(capsys.readouterr().out) if c["name"] == "telegram"]
    shown = {i["instance"].rsplit(":", 1)[1]: i["details"] for i in telegram["instances"]}
    survived = shown[str(survivor.pid)]
    assert (survived["mode"], survived["offset"]) == ("polling", top + 1)
    # The survivor took in exactly what came after the kill (the killed one's last
    # heartbeat may predate its last poll, so its own count is not compared).
    assert survived["stored"] == len(later)
    assert survived["last_update_at"]
