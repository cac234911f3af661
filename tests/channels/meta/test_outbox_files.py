"""Replies with files on WhatsApp and Messenger, through the real sender against the fake
Graph API: each file uploaded as multipart (WhatsApp's media endpoint, Messenger's
Attachment Upload API) with its bytes intact, then sent by its id; the text as a caption on
WhatsApp, before the files on Messenger; no file sent twice by a retry; and outside
WhatsApp's window, refused with the reason. On Instagram each file goes by a signed URL on
our listener, which the fake fetches as Meta does (the bytes compared by hashes computed
here). The expected calls are written out by hand."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import Engine, select, update

from connectors.config import OutboxSettings
from connectors.meta.graph import Graph
from connectors.meta.intake import MetaWebhooks
from connectors.meta.outbox import (
    MESSENGER_MEDIA,
    OUTSIDE_WINDOW_FILES,
    WHATSAPP_MEDIA,
    InstagramMedia,
    MediaPart,
    MediaRules,
    MetaSender,
    instagram_media,
    instagram_plan,
    plan,
)
from connectors.outbox import OutboxDrainer
from inbox.casework import Invalid
from inbox.models import Outbox, utcnow
from inbox.outbox import OutFile
from inbox.secrets import Secret
from inbox.web import create_app
from normalizer.intake import RawInput
from tests.channels.meta.support import (
    APP_SECRET,
    PAGE_TOKEN,
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    FakeGraph,
    error,
    fake_graph,
    settings,
)
from tests.channels.meta.test_outbox import age_messages, deliver, drainer
from tests.support.fake_server import served_in_thread
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


# --- Instagram Direct: files by a signed URL Meta fetches from our listener -------------------

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 28
IG_FILES = [("screen.png", "image/png", PNG), ("note.wav", "audio/wav", WAV)]


def listener(engine: Engine) -> Any:
    """Our HTTP listener with the Meta routes, on a port the fake Graph API can reach."""

    def make() -> Any:
        async def submit(item: RawInput) -> Any:
            raise AssertionError("nothing is posted to the webhook here")

        hooks = MetaWebhooks(engine, Secret(VERIFY_TOKEN), Secret(APP_SECRET), submit)
        return create_app(engine, routes=hooks.routes())

    return served_in_thread(make, shutdown_timeout=1.0)


def ig_drainer(engine: Engine, fake: FakeGraph, public_url: str) -> OutboxDrainer:
    section = settings(fake.base_url, public_url=public_url)
    sender = MetaSender(
        "instagram",
        section,
        Graph(section, Secret(PAGE_TOKEN)),
        engine,
        # The key, derived by hand: HMAC-SHA256 of the fixed context under the app secret.
        media_key=IG_KEY,
    )
    return OutboxDrainer(engine, sender, OutboxSettings(), worker="test")


IG_KEY = hmac.new(
    APP_SECRET.encode(), b"parity meta instagram media url v1", hashlib.sha256
).digest()


def test_instagram_sends_the_text_then_each_file_by_a_signed_url(engine: Engine) -> None:
    deliver(engine, "ig_text")
    with fake_graph() as fake, listener(engine) as base:
        ig_drainer(engine, fake, base).drain_once()  # the acknowledgement
        reply_with_files(engine, agent(engine), the_reference(engine), "Both files.", IG_FILES)
        started = utcnow()
        report = ig_drainer(engine, fake, base).drain_once()
        received = list(fake.received)
        fetched = list(fake.fetched)
        # Anyone else holding a URL: the same file while it lasts; a changed one is a 404.
        url = fetched[0]["url"]
        again = requests.get(url, timeout=10)
        png, wav = hashlib.sha256(PNG).hexdigest(), hashlib.sha256(WAV).hexdigest()
        tampered = [
            url.replace(png, wav),
            url.replace("type=image%2Fpng", "type=text%2Fhtml"),
            url.replace("/meta/media/", "/twilio/media/"),
            url.split("?")[0],
        ]
        refused = [requests.get(u, timeout=10).status_code for u in tampered]
    assert report.sent == 1
    # Meta got each file's bytes from our listener, with the type the URL names.
    assert [(f["status"], f["content_type"], hashlib.sha256(f["data"]).hexdigest())
            for f in fetched] == [(200, "image/png", png), (200, "audio/wav", wav)]  # fmt: skip
    to = {"recipient": {"id": "1139876543210456"}, "messaging_type": "RESPONSE"}
    assert received[1:] == [
        ("/v21.0/me/messages", {**to, "message": {"text": "Both files."}}),
        ("/v21.0/me/messages", {**to, "message": {"attachment": {
            "type": "image", "payload": {"url": fetched[0]["url"]}}}}),
        ("/v21.0/me/messages", {**to, "message": {"attachment": {
            "type": "audio", "payload": {"url": fetched[1]["url"]}}}}),
    ]  # fmt: skip
    for f in fetched:
        assert f["url"].startswith(f"{base}/meta/media/")
        query = parse_qs(urlsplit(f["url"]).query)
        # Good for the setting's 900 s from the send, no longer.
        expires = int(query["expires"][0])
        assert started.timestamp() + 899 <= expires <= started.timestamp() + 905
        sha_hex = urlsplit(f["url"]).path.rsplit("/", 1)[1]
        kind = query["type"][0]
        expected = hmac.new(
            IG_KEY, f"{sha_hex}\n{kind}\n{expires}".encode(), hashlib.sha256
        ).hexdigest()
        assert query["sig"] == [expected]
    assert again.status_code == 200 and again.content == PNG
    assert refused == [404] * len(tampered)
    assert the_reply(engine).provider_id == "m_SENT0002"


def test_instagram_a_failure_part_way_sends_only_the_rest(engine: Engine) -> None:
    deliver(engine, "ig_text")
    with fake_graph() as fake, listener(engine) as base:
        ig_drainer(engine, fake, base).drain_once()
        reply_with_files(engine, agent(engine), the_reference(engine), "Both files.", IG_FILES)
        # The text and the image go; Meta has trouble with the audio (the acknowledgement
        # was message 1, so the audio is message 4), then recovers.
        fake.fail_at[4] = (500, error(2, "Service temporarily unavailable"))
        ours = ig_drainer(engine, fake, base)
        ours.drain_once()
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
        sent = [body["message"] for _, body in fake.received[1:]]
    assert report.sent == 1
    # The text, the image, the audio refused, then the audio alone: nothing went twice.
    kinds = [m.get("text") or m["attachment"]["type"] for m in sent]
    assert kinds == ["Both files.", "image", "audio", "audio"]
    assert the_reply(engine).state == "sent"


MP4 = bytes.fromhex("0000001866747970") + b"isom" + b"\x00" * 40
BIG_PNG = PNG + b"\x00" * (8 * 1024 * 1024)
IG_REFUSED = (
    "an Instagram Direct message carries PNG and JPEG images, video (MP4, OGG, AVI, MOV, "
    "WEBM) and audio (AAC, M4A, WAV) only"
)


@pytest.mark.parametrize(
    ("name", "declared", "data", "expected"),
    [
        ("a.png", "image/png", PNG, InstagramMedia("image", "image/png")),
        # An image is told by its bytes: a PNG declared as a JPEG is served as a PNG.
        ("a.jpg", "image/jpeg", PNG, InstagramMedia("image", "image/png")),
        ("a.mp4", "video/mp4", MP4, InstagramMedia("video", "video/mp4")),
        ("a.wav", "audio/wav", WAV, InstagramMedia("audio", "audio/wav")),
        # Whatever was declared: a PNG's bytes declared as a video go as the image they are.
        ("a.mp4", "video/mp4", PNG, InstagramMedia("image", "image/png")),
        # A GIF, a PDF, an SVG dressed as a PNG: refused.
        ("a.gif", "image/gif", GIF, f"a.gif: {IG_REFUSED}"),
        ("a.pdf", "application/pdf", PDF, f"a.pdf: {IG_REFUSED}"),
        ("a.png", "image/png", b"<svg/>", f"a.png: {IG_REFUSED}"),
        ("big.png", "image/png", BIG_PNG,
         f"big.png is {len(BIG_PNG)} bytes; Instagram takes image of at most 8388608 bytes"),
    ],
)  # fmt: skip
def test_what_an_instagram_message_carries(
    name: str, declared: str, data: bytes, expected: object
) -> None:
    assert instagram_media(OutFile(name, declared, data)) == expected


def test_the_instagram_plan_refuses_the_whole_reply_for_one_file() -> None:
    files = [OutFile("a.png", "image/png", PNG), OutFile("b.pdf", "application/pdf", PDF)]
    assert instagram_plan("Hi", files) == f"b.pdf: {IG_REFUSED}"
    assert instagram_plan("Hi", files[:1]) == [MediaPart("text", "Hi"), MediaPart("image", "", 0)]
    assert instagram_plan("", files[:1]) == [MediaPart("image", "", 0)]


def test_instagram_refuses_a_file_it_does_not_take_before_sending_anything(
    engine: Engine,
) -> None:
    deliver(engine, "ig_text")
    with fake_graph() as fake, listener(engine) as base:
        ig_drainer(engine, fake, base).drain_once()
        files = [("screen.png", "image/png", PNG), ("invoice.pdf", "application/pdf", PDF)]
        reply_with_files(engine, agent(engine), the_reference(engine), "Here.", files)
        ig_drainer(engine, fake, base).drain_once()
        count, fetched = len(fake.received), list(fake.fetched)
    reply = the_reply(engine)
    assert (reply.state, reply.last_error) == ("failed", f"invoice.pdf: {IG_REFUSED}")
    assert count == 1 and fetched == []


def test_instagram_without_a_public_url_refuses_files_with_the_reason(engine: Engine) -> None:
    deliver(engine, "ig_text")
    with fake_graph() as fake:
        ig_drainer(engine, fake, "").drain_once()
        reply_with_files(engine, agent(engine), the_reference(engine), "Here.", FILES[:1])
        ig_drainer(engine, fake, "").drain_once()
        count = len(fake.received)
    reply = the_reply(engine)
    assert reply.state == "failed" and count == 1
    assert reply.last_error == (
        "Instagram fetches a reply's files from connectors.meta.public_url, which is not set"
    )


def test_a_comment_reply_row_with_files_is_refused_not_sent_as_text(engine: Engine) -> None:
    # The reply form refuses files on a public reply; a row that has them all the same (one
    # queued before that rule) is refused by the sender rather than posted without them.
    deliver(engine, "ms_text")
    with fake_graph() as fake:
        drainer(engine, fake, "messenger").drain_once()
        reply_with_files(engine, agent(engine), the_reference(engine), "Here.", FILES[:1])
        with engine.begin() as conn:
            row = conn.execute(select(Outbox).where(Outbox.kind == "reply")).one()
            public = {**row.payload, "visibility": "public", "in_reply_to_external_id": "1_2"}
            conn.execute(update(Outbox).where(Outbox.id == row.id).values(payload=public))
        drainer(engine, fake, "messenger").drain_once()
        count, uploads = len(fake.received), dict(fake.uploaded)
    reply = the_reply(engine)
    assert (reply.state, reply.last_error) == (
        "failed",
        "a public reply on messenger goes as text only: reply by private message to send files",
    )
    assert count == 1 and uploads == {}
