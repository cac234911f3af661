"""A reply with files on SMS goes as an MMS: the real twilio.rest.Client asks the fake Twilio
API to send it with a MediaUrl per file; the fake fetches each URL from our listener (served
on a port, as Twilio reaches it: no login, no cookie) and the test compares the bytes. The
URL works for that file only, until it expires; a changed or stale one is a 404. The
signature rules are also checked as a table, with signatures computed here by hmac."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import Engine, select

from connectors.config import OutboxSettings
from connectors.media_url import check, media_key, signed_url
from connectors.outbox import OutboxDrainer
from connectors.twilio.intake import MEDIA_CONTEXT, MEDIA_PATH, TwilioWebhooks
from connectors.twilio.outbox import TwilioSmsSender, make_client
from inbox.models import Outbox
from inbox.secrets import Secret
from inbox.web import create_app
from normalizer.intake import RawInput, store
from tests.channels.twilio.twilio_support import (
    ACCOUNT,
    TOKEN,
    FakeTwilio,
    fake_twilio,
    fixture,
    settings,
)
from tests.support.fake_server import served_in_thread
from tests.support.helpers import normalize
from tests.support.reply_files import PDF, PNG, agent, reply_with_files, the_reference

# The key, derived by hand: HMAC-SHA256 of the fixed context under the auth token.
KEY = hmac.new(TOKEN.encode(), b"parity twilio mms media url v1", hashlib.sha256).digest()


def a_text_came_in(engine: Engine) -> None:
    sms = fixture("sms")
    from urllib.parse import urlencode

    store(
        engine,
        [
            RawInput(
                connector="twilio",
                channel="sms",
                source_key="sms:" + sms["MessageSid"],
                payload=urlencode(sms).encode(),
                envelope={"kind": "sms", "address": sms["To"]},
            )
        ],
    )
    normalize(engine)


def listener(engine: Engine) -> Any:
    """Our HTTP listener with the Twilio routes, on a port the fake can reach."""

    def make() -> Any:
        async def submit(item: RawInput) -> Any:
            raise AssertionError("nothing is posted to the webhooks here")

        hooks = TwilioWebhooks(settings(), engine, Secret(TOKEN), submit)
        return create_app(engine, routes=hooks.routes())

    return served_in_thread(make, shutdown_timeout=1.0)


def drainer(engine: Engine, fake: FakeTwilio, public_url: str) -> OutboxDrainer:
    section = settings(api_base_url=fake.base_url, public_url=public_url)
    client = make_client(section, ACCOUNT, Secret(TOKEN))
    sender = TwilioSmsSender(
        "sms", section, client, engine, status_callback=False, auth_token=Secret(TOKEN)
    )
    return OutboxDrainer(engine, sender, OutboxSettings(), worker="test")


def the_reply(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Outbox).where(Outbox.kind == "reply")).one()


def test_an_mms_reply_is_fetched_by_twilio_from_a_signed_url(engine: Engine) -> None:
    a_text_came_in(engine)
    files = [("screen.png", "image/png", PNG), ("invoice.pdf", "application/pdf", PDF)]
    with fake_twilio() as fake, listener(engine) as base:
        drainer(engine, fake, base).drain_once()  # the acknowledgement, an SMS
        reply_with_files(engine, agent(engine), the_reference(engine), "Both files.", files)
        started = datetime.now(UTC)
        report = drainer(engine, fake, base).drain_once()
        sent = fake.received[-1]
        fetched = list(fake.fetched)
        # Anyone else holding the URL: the same file while it lasts, nothing else.
        url = fetched[0]["url"]
        again = requests.get(url, timeout=10)
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        other = hashlib.sha256(b"some other blob").hexdigest()
        tampered = [
            url.replace(hashlib.sha256(PNG).hexdigest(), hashlib.sha256(PDF).hexdigest()),
            url.replace("type=image%2Fpng", "type=text%2Fhtml"),
            url.replace(
                f"expires={query['expires'][0]}", f"expires={int(query['expires'][0]) + 1}"
            ),
            url.replace(hashlib.sha256(PNG).hexdigest(), other),
            f"{base}{parts.path}",
        ]
        refused = [requests.get(u, timeout=10).status_code for u in tampered]
    assert report.sent == 1
    assert sent["Body"] == "Both files." and sent["To"] == fixture("sms")["From"]
    assert [(f["status"], f["content_type"], f["data"]) for f in fetched] == [
        (200, "image/png", PNG),
        (200, "application/pdf", PDF),
    ]
    assert sent["MediaUrl"].split(" ") == [f["url"] for f in fetched]
    for f in fetched:
        assert f["url"].startswith(f"{base}/twilio/media/")
    # Good for the setting's 900 s from the send, no longer.
    expires = int(query["expires"][0])
    assert started.timestamp() + 899 <= expires <= started.timestamp() + 905
    assert again.status_code == 200 and again.content == PNG
    assert again.headers["X-Content-Type-Options"] == "nosniff"
    assert refused == [404] * len(tampered)
    reply = the_reply(engine)
    assert reply.state == "sent"


def test_without_a_public_url_an_mms_is_refused_with_the_reason(engine: Engine) -> None:
    a_text_came_in(engine)
    with fake_twilio() as fake:
        reply_with_files(
            engine, agent(engine), the_reference(engine), "Hi", [("a.png", "image/png", PNG)]
        )
        drainer(engine, fake, "").drain_once()
        received = [r for r in fake.received if r.get("Body") == "Hi"]
    reply = the_reply(engine)
    assert reply.state == "failed"
    assert "an MMS needs connectors.twilio.public_url" in reply.last_error
    assert received == []


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SHA = hashlib.sha256(PNG).hexdigest()


def by_hand(sha: str, kind: str, expires: int) -> str:
    return hmac.new(KEY, f"{sha}\n{kind}\n{expires}".encode(), hashlib.sha256).hexdigest()


def test_the_key_and_the_url_are_as_computed_by_hand() -> None:
    assert media_key(Secret(TOKEN), MEDIA_CONTEXT) == KEY
    url = signed_url(
        "https://support.example.com/hooks/", MEDIA_PATH, KEY, SHA, "image/png", NOW, 600
    )
    expires = int(NOW.timestamp()) + 600
    assert url == (
        f"https://support.example.com/hooks/twilio/media/{SHA}"
        f"?type=image%2Fpng&expires={expires}&sig={by_hand(SHA, 'image/png', expires)}"
    )


GOOD = int(NOW.timestamp()) + 60


@pytest.mark.parametrize(
    ("sha", "kind", "expires", "sig", "why"),
    [
        (SHA, "image/png", str(GOOD), by_hand(SHA, "image/png", GOOD), None),
        # Signed for another file, type or time: not this one.
        ("0" * 64, "image/png", str(GOOD), by_hand(SHA, "image/png", GOOD), "bad signature"),
        (SHA, "text/html", str(GOOD), by_hand(SHA, "image/png", GOOD), "bad signature"),
        (SHA, "image/png", str(GOOD + 1), by_hand(SHA, "image/png", GOOD), "bad signature"),
        (SHA, "image/png", str(GOOD), "", "bad signature"),
        (SHA, "image/png", str(GOOD), by_hand(SHA, "image/png", GOOD).upper(), "bad signature"),
        # Signed properly, but its time is up.
        (
            SHA,
            "image/png",
            str(GOOD - 120),
            by_hand(SHA, "image/png", GOOD - 120),
            "expired",
        ),
        ("../../etc/passwd", "image/png", str(GOOD), "x", "not a sha256"),
        (SHA, "image/png\r\nX-Evil: 1", str(GOOD), "x", "not a content type"),
        (SHA, "image/png", "-5", "x", "no expiry"),
        (SHA, "image/png", "9" * 40, "x", "no expiry"),
    ],
)
def test_what_a_media_url_must_be(
    sha: str, kind: str, expires: str, sig: str, why: str | None
) -> None:
    assert check(KEY, sha, kind, expires, sig, NOW) == why


def test_expiry_is_inclusive_of_its_second() -> None:
    at = int(NOW.timestamp())
    assert check(KEY, SHA, "image/png", str(at), by_hand(SHA, "image/png", at), NOW) is None
    later = NOW + timedelta(seconds=1)
    assert check(KEY, SHA, "image/png", str(at), by_hand(SHA, "image/png", at), later) == "expired"
