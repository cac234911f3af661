"""Media fetched after the 200 (WhatsApp by media id with the token, Messenger by its CDN URL),
retried, then noted; the token check and the status the connector reports."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Engine, select

from connectors.meta.graph import Graph
from connectors.meta.media import MetaMedia
from inbox.models import Attachment, Blob, Message
from inbox.secrets import Secret
from tests.channels.meta.support import (
    PAGE_TOKEN,
    WA_TOKEN,
    FakeGraph,
    fake_graph,
    settings,
)
from tests.channels.meta.test_outbox import deliver

IMAGE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40  # a JPEG's magic, then bytes
MEDIA_ID = "1314155889291374"  # the wa_image fixture's media id


def fetcher(engine: Engine, fake: FakeGraph, wa_token: str = WA_TOKEN, **kw: Any) -> MetaMedia:
    section = settings(fake.base_url, **kw)
    page = Graph(section, Secret(PAGE_TOKEN))
    graphs = {"whatsapp": Graph(section, Secret(wa_token)), "messenger": page, "instagram": page}
    return MetaMedia(engine, section, graphs)


def attachments(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(Attachment.filename, Attachment.content_type, Attachment.size, Blob.data)
                .join(Blob, Blob.sha256 == Attachment.sha256)
                .order_by(Attachment.id)
            )
        )


def meta_of(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(select(Message.meta).where(Message.channel == "whatsapp")).scalar_one()
    ours: dict[str, Any] = found["meta"]
    return ours


def test_whatsapp_media_are_fetched_after_failures_then_stored_once(engine: Engine) -> None:
    deliver(engine, "wa_image")
    with fake_graph() as fake:
        fake.media[MEDIA_ID] = ("image/jpeg", IMAGE)
        fake.media_failures = 2
        media = fetcher(engine, fake)
        assert media.fetch_once() == 0
        assert meta_of(engine)["media_attempts"] == 1
        assert media.fetch_once() == 0
        assert media.fetch_once() == 1
        assert media.fetch_once() == 0  # fetched: not again
    assert fake.media_requests == 3
    ((name, kind, size, data),) = attachments(engine)
    assert (name, kind, size) == ("media.jpg", "image/jpeg", len(IMAGE))
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(IMAGE).hexdigest()
    assert meta_of(engine)["media_fetched"] is True


def test_media_that_never_come_are_noted_after_the_last_attempt(engine: Engine) -> None:
    deliver(engine, "wa_image")
    with fake_graph() as fake:
        fake.media[MEDIA_ID] = ("image/jpeg", IMAGE)
        fake.media_failures = 100
        media = fetcher(engine, fake, media_attempts=3)
        for _ in range(5):
            media.fetch_once()
    assert fake.media_requests == 3
    assert attachments(engine) == []
    noted = meta_of(engine)
    assert noted["media_fetched"] is True and "500" in noted["media_error"]


def test_media_over_the_bound_are_not_stored(engine: Engine) -> None:
    deliver(engine, "wa_image")
    with fake_graph() as fake:
        fake.media[MEDIA_ID] = ("image/jpeg", IMAGE)
        fetcher(engine, fake, media_attempts=1, media_max_bytes=1000).fetch_once()
    assert attachments(engine) == []
    assert "over 1000 bytes" in meta_of(engine)["media_error"]


def test_the_token_check_and_the_status_details(engine: Engine) -> None:
    deliver(engine, "wa_text")  # an acknowledgement queued on whatsapp
    with fake_graph() as fake:
        good = fetcher(engine, fake)
        good.pass_once()
        bad = fetcher(engine, fake, wa_token="EAAexpired")
        bad.pass_once()
    assert good.health.details["tokens"]["whatsapp"]["valid"] is True
    assert good.health.details["tokens"]["page"]["valid"] is True
    refused = bad.health.details["tokens"]["whatsapp"]
    assert refused["valid"] is False and "code 190" in refused["reason"]
    channels = good.health.details["channels"]
    assert channels["whatsapp"]["outbox"] == {"queued": 1}
    assert channels["messenger"]["outbox"] == {}


def test_a_senders_name_is_asked_once_and_kept(engine: Engine) -> None:
    from inbox.models import Identity

    deliver(engine, "ms_text", "ig_text", "ig_comment")
    with fake_graph() as fake:
        fake.profiles["7208451234567890"] = {"name": "Sam Okafor"}
        fake.profiles["1139876543210456"] = {"username": "sam.ok.photos"}
        media = fetcher(engine, fake)
        # The comment's author came with a username: only the two scoped ids are asked.
        assert media.profiles_once() == 2
        assert media.profiles_once() == 0
    assert fake.profile_requests == 2
    with engine.connect() as conn:
        found = {
            r.handle: (r.display_name, r.facts.get("username"))
            for r in conn.execute(select(Identity.handle, Identity.display_name, Identity.facts))
        }
    assert found["7208451234567890"] == ("Sam Okafor", None)
    assert found["1139876543210456"] == ("sam.ok.photos", "sam.ok.photos")
    assert found["1139876543210999"][0] == "lena.k.photos"
