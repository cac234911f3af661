"""Media fetched after the 200 (WhatsApp by media id with the token, Messenger by its CDN URL),
retried, then noted; the token check and the status the connector reports."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from connectors.media import backoff_s, media_due
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


T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def retry_at(engine: Engine) -> datetime:
    return datetime.fromisoformat(meta_of(engine)["media_retry_at"])


def test_failed_downloads_wait_an_exponential_backoff_with_jitter(engine: Engine) -> None:
    """A Graph API that fails three times: no request before each wait is over, one after,
    and each wait within [0.5, 1] of 30 s * 2**(failures - 1) (worked out here by hand)."""
    deliver(engine, "wa_image")
    with fake_graph() as fake:
        fake.media[MEDIA_ID] = ("image/jpeg", IMAGE)
        fake.media_failures = 3
        media = fetcher(engine, fake, media_attempts=5)
        now = T0
        # A WhatsApp download is two requests (the media id's URL, then the file): the fake
        # fails the file; `media_requests` counts file requests.
        for failures, step_s in ((1, 30), (2, 60), (3, 120)):
            assert media.fetch_once(now) == 0
            assert fake.media_requests == failures
            due = retry_at(engine)
            assert timedelta(seconds=step_s / 2) <= due - now <= timedelta(seconds=step_s)
            # A second before it is due: nothing asked of Meta.
            assert media.fetch_once(due - timedelta(seconds=1)) == 0
            assert fake.media_requests == failures
            now = due
        assert media.fetch_once(now) == 1
    assert fake.media_requests == 4
    assert meta_of(engine)["media_fetched"] is True
    assert len(attachments(engine)) == 1


@pytest.mark.parametrize(
    ("attempts", "rand", "expected_s"),
    [
        (1, 0.0, 15.0),  # half the first step: the least jitter leaves
        (1, 0.999, 29.985),  # 30 * (0.5 + 0.4995)
        (2, 0.0, 30.0),
        (4, 0.5, 180.0),  # 30 * 8 * 0.75
        (7, 0.0, 900.0),  # 30 * 64 = 1920 is over the cap: 1800 * 0.5
        (7, 0.999, 1799.1),
        (500, 0.999, 1799.1),  # no overflow however many failures
    ],
)
def test_backoff_steps(attempts: int, rand: float, expected_s: float) -> None:
    assert backoff_s(attempts, rand=lambda: rand) == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("ours", "due"),
    [
        ({}, True),
        ({"media_attempts": 1, "media_retry_at": "2026-12-01T09:00:30+00:00"}, False),
        ({"media_attempts": 1, "media_retry_at": "2026-12-01T08:59:59+00:00"}, True),
        ({"media_attempts": 1, "media_retry_at": "2026-12-01T09:00:00+00:00"}, True),
        ({"media_attempts": 1, "media_retry_at": "not a time"}, True),
        ({"media_attempts": 1, "media_retry_at": 12}, True),
    ],
)
def test_media_due(ours: dict[str, Any], due: bool) -> None:
    assert media_due(ours, T0) is due


def test_whatsapp_media_are_fetched_after_failures_then_stored_once(engine: Engine) -> None:
    deliver(engine, "wa_image")
    with fake_graph() as fake:
        fake.media[MEDIA_ID] = ("image/jpeg", IMAGE)
        fake.media_failures = 2
        media = fetcher(engine, fake)
        # Each pass an hour after the last: past any backoff (capped at 30 minutes).
        assert media.fetch_once(hours(0)) == 0
        assert meta_of(engine)["media_attempts"] == 1
        assert media.fetch_once(hours(1)) == 0
        assert media.fetch_once(hours(2)) == 1
        assert media.fetch_once(hours(3)) == 0  # fetched: not again
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
        for hour in range(5):
            media.fetch_once(hours(hour))
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
