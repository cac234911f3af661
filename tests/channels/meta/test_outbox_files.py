"""Replies with files on WhatsApp and Messenger, through the real sender against the fake
Graph API: each file uploaded as multipart (WhatsApp's media endpoint, Messenger's
Attachment Upload API) with its bytes intact, then sent by its id; the text as a caption on
WhatsApp, before the files on Messenger; no file sent twice by a retry; and outside
WhatsApp's window, refused with the reason. The expected calls are written out by hand."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from connectors.meta.outbox import (
    MESSENGER_MEDIA,
    OUTSIDE_WINDOW_FILES,
    WHATSAPP_MEDIA,
    MediaPart,
    MediaRules,
    plan,
)
from inbox.casework import Invalid
from inbox.models import Outbox, utcnow
from inbox.outbox import OutFile
from tests.channels.meta.support import PHONE_NUMBER_ID, error, fake_graph
from tests.channels.meta.test_outbox import age_messages, deliver, drainer
from tests.support.reply_files import PDF, PNG, agent, reply_with_files, the_reference

FILES = [("screen.png", "image/png", PNG), ("invoice.pdf", "application/pdf", PDF)]
MESSAGES = f"/v21.0/{PHONE_NUMBER_ID}/messages"


def the_reply(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Outbox).where(Outbox.kind == "reply")).one()


def uploaded(fake: Any) -> list[tuple[str, str, dict[str, str], str, str, bytes]]:
    return [
        (i, u["path"], u["fields"], u["filename"], u["content_type"], u["data"])
        for i, u in fake.uploaded.items()
    ]


def test_whatsapp_uploads_each_file_and_sends_it_by_its_media_id(engine: Engine) -> None:
    deliver(engine, "wa_text")
    with fake_graph() as fake:
        drainer(engine, fake, "whatsapp").drain_once()  # the acknowledgement
        reply_with_files(engine, agent(engine), the_reference(engine), "Both files.", FILES)
        report = drainer(engine, fake, "whatsapp").drain_once()
        received = list(fake.received)
        files = uploaded(fake)
    assert report.sent == 1
    media = f"/v21.0/{PHONE_NUMBER_ID}/media"
    assert files == [
        ("MEDIA0001", media, {"messaging_product": "whatsapp", "type": "image/png"},
         "screen.png", "image/png", PNG),
        ("MEDIA0002", media, {"messaging_product": "whatsapp", "type": "application/pdf"},
         "invoice.pdf", "application/pdf", PDF),
    ]  # fmt: skip
    envelope = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16315551181",
    }
    assert received[1:] == [
        (MESSAGES, {**envelope, "type": "image",
                    "image": {"id": "MEDIA0001", "caption": "Both files."}}),
        (MESSAGES, {**envelope, "type": "document",
                    "document": {"id": "MEDIA0002", "filename": "invoice.pdf"}}),
    ]  # fmt: skip
    reply = the_reply(engine)
    # wamid.SENT0001 was the acknowledgement.
    assert (reply.state, reply.provider_id) == ("sent", "wamid.SENT0002")


def test_a_failure_part_way_sends_only_the_rest(engine: Engine) -> None:
    deliver(engine, "wa_text")
    with fake_graph() as fake:
        drainer(engine, fake, "whatsapp").drain_once()
        reply_with_files(engine, agent(engine), the_reference(engine), "Both files.", FILES)
        # The image goes; Meta has trouble with the document's upload, then recovers.
        fake.fail_uploads.extend([None, (500, error(2, "Service temporarily unavailable"))])
        ours = drainer(engine, fake, "whatsapp")
        ours.drain_once()  # the image uploaded and sent, the document's upload refused
        first = the_reply(engine)
        assert (first.state, first.attempts) == ("queued", 1)
        assert "Service temporarily unavailable" in first.last_error
        with engine.begin() as conn:
            conn.execute(
                update(Outbox)
                .where(Outbox.kind == "reply")
                .values(next_attempt_at=utcnow() - timedelta(seconds=1))
            )
        report = ours.drain_once()
        kinds = [body.get("type") for _, body in fake.received]
        files = [(u["filename"], u["data"]) for u in fake.uploaded.values()]
    assert report.sent == 1
    # The acknowledgement, the image, then only the document: the image went once.
    assert kinds == ["text", "image", "document"]
    assert files == [("screen.png", PNG), ("invoice.pdf", PDF)]
    assert the_reply(engine).state == "sent"


def test_whatsapp_outside_the_window_refuses_files_with_the_reason(engine: Engine) -> None:
    deliver(engine, "wa_text")
    template = {"name": "case_update", "language": "en_GB"}
    with fake_graph() as fake:
        drainer(engine, fake, "whatsapp").drain_once()
        reply_with_files(engine, agent(engine), the_reference(engine), "Here.", FILES[:1])
        age_messages(engine, "whatsapp", timedelta(hours=25))
        drainer(engine, fake, "whatsapp", whatsapp_reply_template=template).drain_once()
        uploads = dict(fake.uploaded)
        count = len(fake.received)
    reply = the_reply(engine)
    assert (reply.state, reply.last_error) == ("failed", OUTSIDE_WINDOW_FILES)
    assert OUTSIDE_WINDOW_FILES.startswith("outside WhatsApp's 24-hour window")
    assert uploads == {} and count == 1


def test_the_reply_form_refuses_files_outside_the_window_before_queueing(engine: Engine) -> None:
    deliver(engine, "wa_text")
    age_messages(engine, "whatsapp", timedelta(hours=25))
    with pytest.raises(Invalid) as refused:
        reply_with_files(engine, agent(engine), the_reference(engine), "Here.", FILES[:1])
    assert str(refused.value) == (
        "outside WhatsApp's 24-hour window: a template will be sent, and a template cannot "
        "carry files: send them once the customer writes again"
    )
    with engine.connect() as conn:
        assert conn.execute(select(Outbox.id).where(Outbox.kind == "reply")).first() is None
    # Without files the reply is taken (it goes as the template).
    reply_with_files(engine, agent(engine, "agent2"), the_reference(engine), "Here.", [])
    assert the_reply(engine).state == "queued"


def test_messenger_sends_the_text_then_each_attachment_by_its_id(engine: Engine) -> None:
    deliver(engine, "ms_text")
    with fake_graph() as fake:
        drainer(engine, fake, "messenger").drain_once()
        reply_with_files(engine, agent(engine), the_reference(engine), "Both files.", FILES)
        report = drainer(engine, fake, "messenger").drain_once()
        received = list(fake.received)
        files = uploaded(fake)
    assert report.sent == 1
    path = "/v21.0/me/message_attachments"
    assert [(i, p, json.loads(f["message"]), n, k, d) for i, p, f, n, k, d in files] == [
        ("ATT0001", path, {"attachment": {"type": "image", "payload": {"is_reusable": False}}},
         "screen.png", "image/png", PNG),
        ("ATT0002", path, {"attachment": {"type": "file", "payload": {"is_reusable": False}}},
         "invoice.pdf", "application/pdf", PDF),
    ]  # fmt: skip
    to = {"recipient": {"id": "7208451234567890"}, "messaging_type": "RESPONSE"}
    assert received[1:] == [
        ("/v21.0/me/messages", {**to, "message": {"text": "Both files."}}),
        ("/v21.0/me/messages", {**to, "message": {"attachment": {
            "type": "image", "payload": {"attachment_id": "ATT0001"}}}}),
        ("/v21.0/me/messages", {**to, "message": {"attachment": {
            "type": "file", "payload": {"attachment_id": "ATT0002"}}}}),
    ]  # fmt: skip
    assert the_reply(engine).provider_id == "m_SENT0002"


GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


@pytest.mark.parametrize(
    ("rules", "text", "files", "expected"),
    [
        (WHATSAPP_MEDIA, "Hi", [], [MediaPart("text", "Hi")]),
        (WHATSAPP_MEDIA, "Hi", [("a.png", "image/png", PNG)], [MediaPart("image", "Hi", 0)]),
        # A GIF is no WhatsApp image: a document. On Messenger it is an image.
        (WHATSAPP_MEDIA, "", [("a.gif", "image/gif", GIF)], [MediaPart("document", "", 0)]),
        (MESSENGER_MEDIA, "", [("a.gif", "image/gif", GIF)], [MediaPart("image", "", 0)]),
        # Declared a PNG, but the bytes are not one: a document, never shown inline.
        (WHATSAPP_MEDIA, "", [("a.png", "image/png", b"<svg/>")], [MediaPart("document", "", 0)]),
        # A caption takes 1,024 characters; a longer text goes first on its own.
        (
            WHATSAPP_MEDIA,
            "z" * 1025,
            [("a.pdf", "application/pdf", PDF)],
            [MediaPart("text", "z" * 1025), MediaPart("document", "", 0)],
        ),
        # Messenger has no captions: the text first, then the files.
        (
            MESSENGER_MEDIA,
            "Hi",
            [("a.png", "image/png", PNG), ("a.pdf", "application/pdf", PDF)],
            [MediaPart("text", "Hi"), MediaPart("image", "", 0), MediaPart("document", "", 1)],
        ),
    ],
)
def test_the_plan_of_messages(
    rules: MediaRules, text: str, files: list[tuple[str, str, bytes]], expected: list[MediaPart]
) -> None:
    assert plan(rules, text, [OutFile(n, k, d) for n, k, d in files]) == expected
