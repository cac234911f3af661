"""The webhook on the HTTP listener: the secret token checked before anything is read,
stored through intake before the 200, a redelivery adding nothing, an unreadable body kept
as a dead letter with its bytes, group messages counted and answered 200."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, func, select

from connectors.telegram.intake import PATH, TelegramWebhook
from inbox.models import Blob, DeadLetter, Intake, Message
from inbox.secrets import Secret
from inbox.web import create_app
from normalizer.intake import RawInput, Stored, store
from tests.channels.telegram.support import (
    SECRET,
    TOKEN,
    body_of,
    fake_bot_api,
    fixture,
    settings,
)
from tests.support.helpers import normalize

HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def stored_in_thread(engine: Engine, item: RawInput) -> Stored:
    return (await asyncio.to_thread(store, engine, [item]))[0]


class Hook:
    """The inbox app with the Telegram route, as the daemon mounts it, on port 0."""

    def __init__(self, engine: Engine) -> None:
        self.hook = TelegramWebhook(
            settings(mode="webhook"),
            engine,
            Secret(TOKEN),
            Secret(SECRET),
            lambda item: stored_in_thread(engine, item),
        )
        self.client: TestClient[Any, Any] = TestClient(
            TestServer(create_app(engine, routes=self.hook.routes()))
        )

    async def __aenter__(self) -> Hook:
        await self.client.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def post(self, body: bytes, secret: str | None = SECRET) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[HEADER] = secret
        response = await self.client.post(PATH, data=body, headers=headers)
        return response.status, await response.text()


def intake_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(Intake).where(Intake.channel == "telegram")
            ).scalar_one()
        )


def test_a_good_secret_stores_before_the_200_and_a_redelivery_adds_nothing(
    engine: Engine,
) -> None:
    async def run() -> list[tuple[int, str]]:
        async with Hook(engine) as hook:
            answers = [await hook.post(body_of(fixture("text")))]
            # Stored by the time the 200 came back.
            assert intake_count(engine) == 1
            answers.append(await hook.post(body_of(fixture("text"))))
            answers.append(await hook.post(body_of(fixture("photo_caption"))))
            return answers

    answers = asyncio.run(run())
    assert [status for status, _ in answers] == [200, 200, 200]
    assert [text for _, text in answers] == ['{"stored": 1}', '{"stored": 0}', '{"stored": 1}']
    with engine.connect() as conn:
        rows = conn.execute(
            select(Intake.source_key, Blob.data)
            .join(Blob, Blob.sha256 == Intake.raw_sha256)
            .order_by(Intake.id)
        ).all()
    # The body is kept exactly as Telegram posted it.
    assert [(r.source_key, r.data) for r in rows] == [
        ("msg:718293645:17", body_of(fixture("text"))),
        ("msg:718293645:18", body_of(fixture("photo_caption"))),
    ]
    normalize(engine)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Message)).scalar_one() == 2


def test_a_wrong_or_missing_secret_is_403_and_nothing_is_stored(engine: Engine) -> None:
    async def run() -> tuple[list[int], dict[str, Any]]:
        async with Hook(engine) as hook:
            statuses = [
                (await hook.post(body_of(fixture("text")), secret=s))[0]
                for s in (None, "", "wrong-secret", SECRET + "x", SECRET[:-1])
            ]
            return statuses, hook.hook.health.details

    statuses, details = asyncio.run(run())
    assert statuses == [403] * 5
    assert intake_count(engine) == 0
    assert details["bad_secret"] == 5 and details["mode"] == "webhook"


def test_an_unreadable_body_with_the_secret_is_a_dead_letter_with_its_bytes(
    engine: Engine,
) -> None:
    raw = b'{"update_id": 640117299, "message": {"message_id": "seven"'

    async def run() -> tuple[int, str]:
        async with Hook(engine) as hook:
            return await hook.post(raw)

    status, _ = asyncio.run(run())
    # Answering an error would only bring the same bytes back: kept, then 200.
    assert status == 200
    with engine.connect() as conn:
        keys = list(conn.execute(select(Intake.source_key)).scalars())
    assert keys == ["unreadable:" + hashlib.sha256(raw).hexdigest()]
    normalize(engine)
    with engine.connect() as conn:
        letters = conn.execute(
            select(DeadLetter.error, Blob.data).join(Blob, Blob.sha256 == DeadLetter.raw_sha256)
        ).all()
    assert len(letters) == 1
    assert letters[0].data == raw and "not JSON" in letters[0].error


def test_group_messages_and_edits_are_answered_and_counted_not_stored(engine: Engine) -> None:
    async def run() -> tuple[list[int], dict[str, Any]]:
        async with Hook(engine) as hook:
            statuses = [
                (await hook.post(body_of(fixture(name))))[0] for name in ("group", "edited")
            ]
            return statuses, hook.hook.health.details

    statuses, details = asyncio.run(run())
    assert statuses == [200, 200]
    assert intake_count(engine) == 0
    assert details["ignored"] == {"group": 1, "edited": 1, "other": 0}


def test_the_webhook_is_registered_with_its_secret_when_the_url_is_set(engine: Engine) -> None:
    url = "https://support.example.com/telegram/webhook"

    async def run(base_url: str) -> dict[str, Any]:
        hook = TelegramWebhook(
            settings(base_url, mode="webhook", webhook_url=url),
            engine,
            Secret(TOKEN),
            Secret(SECRET),
            lambda item: stored_in_thread(engine, item),
            poll_seconds=0.05,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(hook.run(stop))
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 10)
        return hook.health.details

    with fake_bot_api() as fake:
        details = asyncio.run(run(fake.base_url))
        registered = [body for name, body in fake.calls if name == "setWebhook"]
    # Once, with the secret Telegram will send back and only the updates we take in.
    assert registered == [{"url": url, "secret_token": SECRET, "allowed_updates": ["message"]}]
    assert details["mode"] == "webhook"
