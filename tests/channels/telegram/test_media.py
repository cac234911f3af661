"""Files fetched with getFile after the store, by the shared media step: retried, stored
once as attachments, over the cap or given up noted on the message."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select

from connectors.base import ConnectorHealth
from connectors.telegram.api import BotApi
from connectors.telegram.intake import fetch_media_once
from inbox.models import Attachment, Blob, Message, utcnow
from inbox.secrets import Secret
from tests.channels.telegram.support import TOKEN, FakeBotApi, deliver, fake_bot_api, settings

PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
PDF = b"%PDF-1.7\n" + b"0123456789" * 300
VOICE = b"OggS" + bytes(200)


def fetch(engine: Engine, fake: FakeBotApi, hour: int = 0, **kw: Any) -> int:
    """One media pass, `hour` hours from now: a pass an hour after the last is past any
    failed download's backoff (capped at 30 minutes, connectors/media.py)."""
    section = settings(fake.base_url, **kw)
    now = utcnow() + timedelta(hours=hour)

    async def once() -> int:
        api = BotApi(section, Secret(TOKEN))
        try:
            return await fetch_media_once(engine, api, section, ConnectorHealth(), now)
        finally:
            await api.close()

    return asyncio.run(once())


def attachments(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(Attachment.filename, Attachment.content_type, Blob.data)
                .join(Blob, Blob.sha256 == Attachment.sha256)
                .order_by(Attachment.filename)
            )
        )


def noted(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        metas = conn.execute(
            select(Message.meta).where(Message.channel == "telegram").order_by(Message.id)
        ).scalars()
        return [dict(m["telegram"]) for m in metas]


def serve_files(fake: FakeBotApi) -> None:
    fake.files["AgACAgQAAxkBAAMSZ1tlarge"] = ("photos/file_12.jpg", PHOTO)
    fake.files["BQACAgQAAxkBAAMUZ1tdoc"] = ("documents/file_3.pdf", PDF)
    fake.files["AwACAgQAAxkBAAMVZ1tvoice"] = ("voice/file_7.oga", VOICE)


def test_files_are_fetched_after_failures_and_stored_once(engine: Engine) -> None:
    deliver(engine, "photo_caption", "document", "voice")
    with fake_bot_api() as fake:
        serve_files(fake)
        fake.file_failures = 2  # the first two downloads answer 502
        assert fetch(engine, fake) == 1
        attempts = sorted(n.get("media_attempts", 0) for n in noted(engine))
        assert attempts == [0, 1, 1]
        # The two that failed wait their backoff: the next pass asks nothing of them.
        assert fetch(engine, fake) == 0
        assert fetch(engine, fake, hour=1) == 2
        # Nothing is left to fetch, and nothing is stored twice.
        assert fetch(engine, fake, hour=2) == 0
    assert [tuple(a) for a in attachments(engine)] == [
        ("invoice-2026-11.pdf", "application/pdf", PDF),
        ("photo.jpg", "image/jpeg", PHOTO),
        ("voice.oga", "audio/ogg", VOICE),
    ]
    assert all(n["media_fetched"] for n in noted(engine))


def test_a_file_over_the_cap_is_noted_at_once(engine: Engine) -> None:
    deliver(engine, "document")
    with fake_bot_api() as fake:
        serve_files(fake)
        # The update says 20431 bytes: over this cap, nothing is downloaded.
        assert fetch(engine, fake, media_max_bytes=20_000) == 0
        assert ("getFile", {"file_id": "BQACAgQAAxkBAAMUZ1tdoc"}) not in fake.calls
    [note] = noted(engine)
    assert note["media_fetched"] and "over the cap" in note["media_error"]
    assert attachments(engine) == []


def test_a_file_telegram_cannot_find_is_given_up_after_the_attempts(engine: Engine) -> None:
    deliver(engine, "voice")
    with fake_bot_api() as fake:  # serves no file: getFile answers 400
        for hour in range(3):
            fetch(engine, fake, hour, media_attempts=2)
        asked = [c for c in fake.calls if c[0] == "getFile"]
    assert len(asked) == 2
    [note] = noted(engine)
    assert note["media_attempts"] == 2 and note["media_fetched"]
    assert "invalid file_id" in note["media_error"]
    assert TOKEN not in note["media_error"]
