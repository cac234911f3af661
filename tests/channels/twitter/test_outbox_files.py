"""Replies with files on X, through the real tweepy clients against the fake X server: each
file uploaded by v1.1's chunked media upload (signed over X's upload host), then sent in a
DM of its own by its media id, the text with the first; the bytes X received compared with
hashes computed here; a failure part-way retried without any file going twice; a file X
does not take in a DM refused whole before anything is uploaded; and a public reply (a
reply tweet) refused files with the reason. The expected DMs are written out by hand."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from connectors.twitter.outbox import DM_VIDEO, DmMedia, dm_media, dm_parts
from inbox.casework import Invalid
from inbox.models import Outbox, utcnow
from inbox.outbox import OutFile
from tests.channels.twitter.fake_x import ACCOUNT_ID, FakeX
from tests.channels.twitter.support import connector, routes, send_next, settings_for
from tests.support.helpers import normalize
from tests.support.reply_files import PDF, PNG, agent, reply_with_files, the_reference

CHLOE = "1123581321345589144"
CHLOE_DM = "2123733088465847506"
ANN_TWEET = "2123706672739255506"
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
# The first box of an MP4 ("ftyp", brand isom) and a little of what follows.
MP4 = bytes.fromhex("0000001866747970") + b"isom\x00\x00\x02\x00isomiso2" + b"\x00" * 40
FILES = [("screen.png", "image/png", PNG), ("spinner.gif", "image/gif", GIF)]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def only(fake: FakeX, *ids: str) -> None:
    fake.mentions = [t for t in fake.mentions if t["id"] in ids]
    fake.dm_events = [e for e in fake.dm_events if e["id"] in ids]


def the_reply(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Outbox).where(Outbox.kind == "reply")).one()


async def a_dm_case(engine: Engine, fake: FakeX) -> Any:
    """Chloé's DM, its case, and its acknowledgement sent: the connector, ready to send."""
    only(fake, CHLOE_DM)
    fake.processing_wait = 0  # a GIF's processing is done by the first STATUS
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_dms(asyncio.Event())
    normalize(engine, connectors=routes(settings))
    done = send_next(twitter)
    assert done is not None and done[1] == "sent" and done[0].kind == "ack"
    return twitter


def received(fake: FakeX) -> list[tuple[str, str, str | None, str | None, str | None]]:
    """Each reply DM as X has it: to whom, its text, and its medium's category, type and the
    hash of the bytes X put together from the chunks."""
    return [
        (
            dm["to"],
            dm["text"],
            dm["medium"] and dm["medium"]["category"],
            dm["medium"] and dm["medium"]["media_type"],
            dm["medium"] and sha(dm["medium"]["data"]),
        )
        for dm in fake.posted_dms[1:]  # [0] is the acknowledgement
    ]


async def test_each_file_is_uploaded_then_sent_in_a_dm_of_its_own(
    engine: Engine, fake: FakeX
) -> None:
    twitter = await a_dm_case(engine, fake)
    reply_with_files(engine, agent(engine), the_reference(engine), "Both screens.", FILES)
    done = send_next(twitter)
    assert done is not None and done[1] == "sent"
    assert received(fake) == [
        (CHLOE, "Both screens.", "dm_image", "image/png", sha(PNG)),
        (CHLOE, "", "dm_gif", "image/gif", sha(GIF)),
    ]
    # Uploaded by v1.1's chunked upload, on the upload host's path, a video's or GIF's
    # processing asked after once; every DM sent as our account.
    commands = [
        (s.method, s.query.get("command")) for s in fake.seen if s.path == "/1.1/media/upload.json"
    ]
    assert commands == [("POST", None)] * 6 + [("GET", "STATUS")]
    assert {dm["sender_id"] for dm in fake.posted_dms} == {ACCOUNT_ID}
    reply = the_reply(engine)
    # The row is the first DM's; the two DMs' ids are kept on it.
    assert reply.provider_id == fake.posted_dms[1]["id"]
    assert reply.payload["parts_sent"] == [fake.posted_dms[1]["id"], fake.posted_dms[2]["id"]]


async def test_a_failure_part_way_sends_only_the_rest(engine: Engine, fake: FakeX) -> None:
    twitter = await a_dm_case(engine, fake)
    reply_with_files(engine, agent(engine), the_reference(engine), "Both screens.", FILES)
    # The first DM goes; X has trouble with the second, then recovers.
    calls = iter([False, True])
    fake.inject(
        "/messages",
        503,
        "errors/503_service_unavailable.json",
        method="POST",
        when=lambda _query: next(calls, False),
    )
    done = send_next(twitter)
    assert done is not None and done[1] == "retry"
    first = the_reply(engine)
    assert first.state == "queued" and "503" in first.last_error
    assert len(first.payload["parts_sent"]) == 1
    with engine.begin() as conn:
        conn.execute(
            update(Outbox)
            .where(Outbox.kind == "reply")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    done = send_next(twitter)
    assert done is not None and done[1] == "sent"
    # Each file reached the customer once: the image with the text, then the GIF.
    assert received(fake) == [
        (CHLOE, "Both screens.", "dm_image", "image/png", sha(PNG)),
        (CHLOE, "", "dm_gif", "image/gif", sha(GIF)),
    ]
    # The image was uploaded once; the GIF twice (the failed DM's upload is never sent).
    uploaded = sorted(sha(m["data"]) for m in fake.media.values())
    assert uploaded == sorted([sha(PNG), sha(GIF), sha(GIF)])
    assert the_reply(engine).state == "sent"


async def test_a_file_x_does_not_take_refuses_the_whole_reply_before_any_upload(
    engine: Engine, fake: FakeX
) -> None:
    twitter = await a_dm_case(engine, fake)
    files = [("screen.png", "image/png", PNG), ("invoice.pdf", "application/pdf", PDF)]
    reply_with_files(engine, agent(engine), the_reference(engine), "Here.", files)
    done = send_next(twitter)
    assert done is not None and done[1] == "failed"
    reply = the_reply(engine)
    assert reply.last_error == (
        "invoice.pdf: an X Direct Message carries JPEG, PNG, WEBP and GIF images and MP4 video only"
    )
    assert fake.media == {} and received(fake) == []


async def test_a_public_reply_takes_no_files(engine: Engine, fake: FakeX) -> None:
    only(fake, ANN_TWEET)
    settings = settings_for(fake)
    twitter = connector(engine, settings)
    await twitter.poll_mentions(asyncio.Event())
    normalize(engine, connectors=routes(settings))
    with pytest.raises(Invalid) as refused:
        reply_with_files(engine, agent(engine), the_reference(engine), "Look.", FILES[:1])
    assert str(refused.value) == (
        "a public reply on twitter goes as text only: reply by private message to send files"
    )
    with engine.connect() as conn:
        assert conn.execute(select(Outbox.id).where(Outbox.kind == "reply")).first() is None


BIG_PNG = PNG + b"\x00" * (5 * 1024 * 1024)
BIG_GIF = GIF + b"\x00" * (15 * 1024 * 1024)


@pytest.mark.parametrize(
    ("name", "declared", "data", "expected"),
    [
        ("a.png", "image/png", PNG, DmMedia("image/png", "dm_image", 5 * 1024 * 1024, "an image")),
        # Told by the bytes: a PNG declared as a JPEG goes as what it is.
        ("a.jpg", "image/jpeg", PNG, DmMedia("image/png", "dm_image", 5 * 1024 * 1024, "an image")),
        ("a.gif", "image/gif", GIF, DmMedia("image/gif", "dm_gif", 15 * 1024 * 1024, "a GIF")),
        ("a.mp4", "video/mp4", MP4, DM_VIDEO),
        # An MP4's bytes declared as something else, and a "video" that is not one.
        ("a.bin", "application/octet-stream", MP4, "a.bin: an X Direct Message carries "
         "JPEG, PNG, WEBP and GIF images and MP4 video only"),
        ("a.mp4", "video/mp4", b"<html>", "a.mp4: an X Direct Message carries "
         "JPEG, PNG, WEBP and GIF images and MP4 video only"),
        ("a.svg", "image/png", b"<svg/>", "a.svg: an X Direct Message carries "
         "JPEG, PNG, WEBP and GIF images and MP4 video only"),
        ("big.png", "image/png", BIG_PNG, f"big.png is {len(BIG_PNG)} bytes; X takes an image "
         "of at most 5242880 bytes in a Direct Message"),
        ("big.gif", "image/gif", BIG_GIF, f"big.gif is {len(BIG_GIF)} bytes; X takes a GIF "
         "of at most 15728640 bytes in a Direct Message"),
    ],
)  # fmt: skip
def test_what_a_dm_carries(name: str, declared: str, data: bytes, expected: object) -> None:
    assert dm_media(OutFile(name, declared, data)) == expected


@pytest.mark.parametrize(
    ("text", "count", "expected"),
    [
        ("Hi", 0, [("Hi", None)]),
        ("Hi", 1, [("Hi", 0)]),
        ("Hi", 3, [("Hi", 0), ("", 1), ("", 2)]),
        ("", 2, [("", 0), ("", 1)]),
    ],
)
def test_one_medium_per_dm_the_text_with_the_first(
    text: str, count: int, expected: list[tuple[str, int | None]]
) -> None:
    assert dm_parts(text, count) == expected
