"""Long polling against the fake Bot API: updates stored with the offset in one transaction,
a crash before the commit losing nothing, redelivery adding nothing, group messages and
edits counted, a refused token disabling the poller, and the token in no log line."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select

from connectors.telegram.intake import CONNECTOR, TelegramPoller, checkpoint_key
from inbox.models import Blob, Checkpoint, DeadLetter, Intake, Message
from inbox.secrets import Secret
from tests.channels.telegram.support import (
    IGNORED,
    PRIVATE,
    TOKEN,
    FakeBotApi,
    fake_bot_api,
    fixture,
    settings,
)
from tests.support.helpers import normalize

ALL = (*PRIVATE, *IGNORED)


def poller(engine: Engine, fake: FakeBotApi, token: str = TOKEN, **kw: Any) -> TelegramPoller:
    return TelegramPoller(settings(fake.base_url, **kw), engine, Secret(token))


def poll(tg: TelegramPoller) -> int:
    """One getUpdates and its commit, on a loop of its own (the session closed after)."""

    async def once() -> int:
        try:
            return await tg.poll_once()
        finally:
            await tg.api.close()

    return asyncio.run(once())


def offset(engine: Engine) -> Any:
    with engine.connect() as conn:
        value = conn.execute(
            select(Checkpoint.value).where(
                Checkpoint.connector == CONNECTOR, Checkpoint.key == checkpoint_key(Secret(TOKEN))
            )
        ).scalar_one_or_none()
    return value


def keys(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(select(Intake.source_key).where(Intake.channel == "telegram")).scalars()
        )


def expected_keys(names: tuple[str, ...]) -> list[str]:
    """The intake keys of the private fixtures, from the files: chat id and message id."""
    return sorted(
        f"msg:{u['message']['chat']['id']}:{u['message']['message_id']}"
        for u in map(fixture, names)
    )


def top_update(names: tuple[str, ...]) -> int:
    return max(int(fixture(n)["update_id"]) for n in names)


def ours(caplog: pytest.LogCaptureFixture) -> str:
    """Parity's log lines: the fake's own access log (aiohttp.access) prints its URLs."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")


def test_updates_are_stored_with_the_next_offset(engine: Engine) -> None:
    with fake_bot_api() as fake:
        fake.add(*ALL)
        tg = poller(engine, fake)
        assert poll(tg) == len(PRIVATE)
        assert keys(engine) == expected_keys(PRIVATE)
        assert offset(engine) == {"offset": top_update(ALL) + 1}
        # The next call confirms them to Telegram with that offset, and finds nothing new.
        assert poll(tg) == 0
        assert fake.offsets == [None, top_update(ALL) + 1]
        assert fake.updates == []
    details = tg.extras()
    assert details["mode"] == "polling" and details["offset"] == top_update(ALL) + 1
    assert details["stored"] == len(PRIVATE)
    assert details["ignored"] == {"group": 1, "edited": 1, "other": 0}
    assert details["last_update_at"]
    # Every stored update becomes a message.
    normalize(engine)
    with engine.connect() as conn:
        count = conn.execute(
            select(func.count()).select_from(Message).where(Message.channel == "telegram")
        ).scalar_one()
    assert count == len(PRIVATE)


def test_a_crash_before_the_commit_loses_nothing_and_doubles_nothing(engine: Engine) -> None:
    with fake_bot_api() as fake:
        fake.add(*ALL)
        tg = poller(engine, fake)

        def crash(_items: list[Any]) -> None:
            raise RuntimeError("killed between getUpdates and the commit")

        tg.before_commit = crash
        with pytest.raises(RuntimeError):
            poll(tg)
        # Neither the updates nor the offset: Telegram still holds them.
        assert keys(engine) == [] and offset(engine) is None
        restarted = poller(engine, fake)
        assert poll(restarted) == len(PRIVATE)
        assert keys(engine) == expected_keys(PRIVATE)
        assert offset(engine) == {"offset": top_update(ALL) + 1}


def test_a_redelivered_update_adds_nothing(engine: Engine) -> None:
    with fake_bot_api() as fake:
        fake.add("text", "voice")
        tg = poller(engine, fake)
        poll(tg)
        # The offset is lost (a store restored from an older backup): Telegram, never told
        # past the first call, sends the same two updates again.
        with engine.begin() as conn:
            conn.execute(delete(Checkpoint).where(Checkpoint.connector == CONNECTOR))
        assert poll(tg) == 0
        assert fake.offsets[-1] is None
    assert keys(engine) == expected_keys(("text", "voice"))
    assert tg.counts.duplicates == 2


def test_a_refused_token_disables_the_poller_and_is_never_logged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "7755001122:AAwrong-token-that-telegram-refuses"

    async def run() -> TelegramPoller:
        with fake_bot_api() as fake:
            tg = poller(engine, fake, token=wrong)
            stop = asyncio.Event()
            task = asyncio.create_task(tg.run(stop))
            for _ in range(200):
                if tg.state == "disabled":
                    break
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.wait_for(task, 10)
            # Asked once: disabled, no restart loop knocking with the same token.
            assert [name for name, _ in fake.calls] == []
            return tg

    with caplog.at_level(logging.DEBUG):
        tg = asyncio.run(run())
    assert tg.state == "disabled"
    assert "refused the bot token" in (tg.reason or "")
    assert wrong not in ours(caplog) and wrong.partition(":")[2] not in (tg.reason or "")


def test_an_unreachable_api_is_an_error_that_names_no_token(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> TelegramPoller:
        # Nothing listens on this port: connection refused.
        tg = TelegramPoller(settings("http://127.0.0.1:9", timeout_s=2.0), engine, Secret(TOKEN))
        stop = asyncio.Event()
        task = asyncio.create_task(tg.run(stop))
        for _ in range(200):
            if tg.health.last_error:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 10)
        return tg

    with caplog.at_level(logging.DEBUG):
        tg = asyncio.run(run())
    assert tg.health.last_error and "connection failed" in tg.health.last_error
    assert TOKEN not in ours(caplog) and TOKEN not in tg.health.last_error
    assert TOKEN.partition(":")[2] not in ours(caplog)


def test_an_unreadable_update_in_an_answer_becomes_a_dead_letter_with_its_bytes(
    engine: Engine,
) -> None:
    broken = {"update_id": 640117300, "message": {"message_id": "not a number"}}
    with fake_bot_api() as fake:
        fake.add("text")
        fake.updates.append(broken)
        tg = poller(engine, fake)
        assert poll(tg) == 2
    # The offset moves past it: it is stored, not asked for again and again.
    assert offset(engine) == {"offset": 640117301}
    normalize(engine)
    with engine.connect() as conn:
        letters = conn.execute(
            select(DeadLetter.error, Blob.data).join(Blob, Blob.sha256 == DeadLetter.raw_sha256)
        ).all()
    # The update's own bytes, as the connector serialised it alone (compact JSON).
    assert [(r.data, "without a chat or message id" in r.error) for r in letters] == [
        (json.dumps(broken, separators=(",", ":")).encode(), True)
    ]
    assert tg.counts.dead_lettered == 1
