"""A reply with files on Telegram, through the real sender against the fake Bot API: each
file uploaded as multipart (sendPhoto for a photo, sendDocument otherwise) with its bytes
intact, the text as the caption or a message before them, a 429 honoured, and a retry
part-way never sending a file twice. The expected calls are written out by hand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from connectors.config import OutboxSettings
from connectors.outbox import OutboxDrainer
from connectors.telegram.outbox import Part, TelegramSender, plan
from inbox.models import Attachment, Message, MessageRef, Outbox, utcnow
from inbox.outbox import OutFile
from inbox.secrets import Secret
from tests.channels.telegram.support import (
    TOKEN,
    FakeBotApi,
    deliver,
    fake_bot_api,
    refused,
    settings,
)
from tests.support.reply_files import PDF, PNG, agent, reply_with_files, the_reference

CHAT = 718293645


def drainer(engine: Engine, fake: FakeBotApi) -> OutboxDrainer:
    sender = TelegramSender(settings(fake.base_url), Secret(TOKEN), engine)
    return OutboxDrainer(engine, sender, OutboxSettings(backoff_base_s=60.0), worker="test")


def the_reply(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Outbox).where(Outbox.kind == "reply")).one()


def acknowledged(engine: Engine, fake: FakeBotApi) -> str:
    deliver(engine, "text")
    drainer(engine, fake).drain_once()  # the acknowledgement, by sendMessage
    return the_reference(engine)


def test_a_photo_and_a_document_go_with_the_text_as_caption(engine: Engine) -> None:
    with fake_bot_api() as fake:
        reference = acknowledged(engine, fake)
        reply_with_files(
            engine,
            agent(engine),
            reference,
            "Here is the screen and the invoice.",
            [("screen.png", "image/png", PNG), ("invoice.pdf", "application/pdf", PDF)],
        )
        report = drainer(engine, fake).drain_once()
        uploads = list(fake.uploads)
        texts = [m["text"] for m in fake.sent]
    assert report.sent == 1
    assert [
        (u["method"], u["chat_id"], u.get("caption"), u["filename"], u["content_type"], u["data"])
        for u in uploads
    ] == [
        (
            "sendPhoto",
            str(CHAT),
            "Here is the screen and the invoice.",
            "screen.png",
            "image/png",
            PNG,
        ),
        ("sendDocument", str(CHAT), None, "invoice.pdf", "application/pdf", PDF),
    ]
    # Only the acknowledgement went by sendMessage: the text went as the caption.
    assert len(texts) == 1 and "Here is the screen" not in texts[0]
    reply = the_reply(engine)
    # message ids: 101 the acknowledgement, 102 the photo, 103 the document.
    assert (reply.state, reply.provider_id) == ("sent", f"{CHAT}:102")
    with engine.connect() as conn:
        refs = set(conn.execute(select(MessageRef.ref)).scalars())
        names = set(
            conn.execute(
                select(Attachment.filename)
                .join(Message, Message.id == Attachment.message_id)
                .where(Message.direction == "outbound")
            ).scalars()
        )
    # An answer to either part joins the case.
    assert {f"telegram:{CHAT}:102", f"telegram:{CHAT}:103"} <= refs
    assert names == {"screen.png", "invoice.pdf"}


def test_a_text_over_the_caption_limit_goes_first_as_a_message(engine: Engine) -> None:
    text = "Step by step: " + "x" * 1100
    with fake_bot_api() as fake:
        reference = acknowledged(engine, fake)
        reply_with_files(
            engine, agent(engine), reference, text, [("log.txt", "text/plain", b"a\x00b")]
        )
        drainer(engine, fake).drain_once()
        sent = [m["text"] for m in fake.sent]
        uploads = list(fake.uploads)
    assert sent[-1] == text
    assert [(u["method"], u.get("caption"), u["data"]) for u in uploads] == [
        ("sendDocument", None, b"a\x00b")
    ]


def test_a_429_part_way_is_honoured_and_no_file_goes_twice(engine: Engine) -> None:
    with fake_bot_api() as fake:
        reference = acknowledged(engine, fake)
        reply_with_files(
            engine,
            agent(engine),
            reference,
            "Two files.",
            [("a.pdf", "application/pdf", PDF), ("b.png", "image/png", PNG)],
        )
        # The first file goes; Telegram refuses the second for 9 s.
        fake.fail_files.extend(
            [None, (429, refused(429, "Too Many Requests: retry after 9", retry_after=9))]
        )
        sender_drainer = drainer(engine, fake)
        started = utcnow()
        report = sender_drainer.drain_once()
        finished = utcnow()
        assert report.retried == 1
        reply = the_reply(engine)
        assert (reply.state, reply.attempts) == ("queued", 1)
        assert "retry after 9" in reply.last_error
        assert started + timedelta(seconds=8) <= reply.next_attempt_at
        assert reply.next_attempt_at <= finished + timedelta(seconds=10)
        assert [u["filename"] for u in fake.uploads] == ["a.pdf"]
        # Due again: only the second file goes.
        with engine.begin() as conn:
            conn.execute(
                update(Outbox)
                .where(Outbox.id == reply.id)
                .values(next_attempt_at=utcnow() - timedelta(seconds=1))
            )
        report = sender_drainer.drain_once()
        uploads = list(fake.uploads)
    assert report.sent == 1
    assert [(u["method"], u["filename"], u.get("caption"), u["data"]) for u in uploads] == [
        ("sendDocument", "a.pdf", "Two files.", PDF),
        ("sendPhoto", "b.png", None, PNG),
    ]
    assert the_reply(engine).state == "sent"


@pytest.mark.parametrize(
    ("text", "files", "expected"),
    [
        ("Hi", [], [Part("sendMessage", "Hi")]),
        ("Hi", [("a.png", "image/png", PNG)], [Part("sendPhoto", "Hi", 0)]),
        # Declared a PNG, but the bytes are HTML: a document, never a photo.
        ("", [("a.png", "image/png", b"<html>x</html>")], [Part("sendDocument", "", 0)]),
        # A GIF is not a photo Telegram keeps as sent: a document.
        ("", [("a.gif", "image/gif", b"GIF89a....")], [Part("sendDocument", "", 0)]),
        (
            "y" * 1024,
            [("a.pdf", "application/pdf", PDF), ("b.png", "image/png", PNG)],
            [Part("sendDocument", "y" * 1024, 0), Part("sendPhoto", "", 1)],
        ),
        (
            "y" * 1025,
            [("a.pdf", "application/pdf", PDF)],
            [Part("sendMessage", "y" * 1025), Part("sendDocument", "", 0)],
        ),
    ],
)
def test_the_plan_of_calls(
    text: str, files: list[tuple[str, str, bytes]], expected: list[Part]
) -> None:
    assert plan(text, [OutFile(n, k, d) for n, k, d in files]) == expected
