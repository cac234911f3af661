"""Replies with files on X, through the real tweepy clients against the fake X server: each
file uploaded by v1.1's chunked media upload (signed over X's upload host), then sent in a
DM of its own by its media id, the text with the first; the bytes X received compared with
hashes computed here; a failure part-way retried without any file going twice; a file X
does not take in a DM refused whole before anything is uploaded; and a public reply (a
reply tweet) refused files with the reason; X's processing of a GIF or video waited for
under media_processing_timeout_s, so that a STATUS answering "in progress" for ever gives
the reply back to the outbox for later instead of holding it. The expected DMs are written
out by hand."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from connectors.twitter.api import ProcessingStep, processing_error, processing_step
from connectors.twitter.outbox import DM_VIDEO, DmMedia, dm_media, dm_parts
from inbox.casework import Invalid
from inbox.models import Outbox, utcnow
from inbox.outbox import OutFile
from tests.channels.twitter.fake_x import ACCOUNT_ID, FakeX
from tests.channels.twitter.support import connector, routes, send_next, settings_for, until
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


def statuses(fake: FakeX) -> int:
    return sum(1 for s in fake.seen if s.query.get("command") == "STATUS")


def due_now(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Outbox)
            .where(Outbox.kind == "reply")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def the_reply(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Outbox).where(Outbox.kind == "reply")).one()


async def a_dm_case(
    engine: Engine, fake: FakeX, *, stopping: threading.Event | None = None, **overrides: Any
) -> Any:
    """Chloé's DM, its case, and its acknowledgement sent: the connector, ready to send."""
    only(fake, CHLOE_DM)
    fake.processing_wait = 0  # a GIF's processing is done by the first STATUS
    settings = settings_for(fake, **overrides)
    twitter = connector(engine, settings, stopping=stopping)
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
    due_now(engine)
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


# --- X's processing of a GIF or a video -----------------------------------------------------


async def test_a_medium_x_processes_a_while_goes_once_processed(
    engine: Engine, fake: FakeX
) -> None:
    twitter = await a_dm_case(engine, fake)
    fake.processing_rounds = 2  # "in_progress" twice, then "succeeded"
    fake.status_wait = 1
    reply_with_files(engine, agent(engine), the_reference(engine), "Spinner.", FILES[1:])
    done = send_next(twitter)
    assert done is not None and done[1] == "sent"
    assert received(fake) == [(CHLOE, "Spinner.", "dm_gif", "image/gif", sha(GIF))]
    # Asked after FINALIZE's "pending", after each "in_progress", and no more.
    assert statuses(fake) == 3


async def test_processing_for_ever_gives_the_reply_back_for_later(
    engine: Engine, fake: FakeX
) -> None:
    twitter = await a_dm_case(engine, fake, media_processing_timeout_s=2)
    # "in_progress" with check_after_secs 0, for ever: a sender that waits without a bound
    # sends the GIF once the fake gives up (after 50 answers), and fails this test.
    fake.processing_rounds = None
    fake.status_wait = 0
    reply_with_files(engine, agent(engine), the_reference(engine), "Spinner.", FILES[1:])
    done = send_next(twitter)
    assert done is not None and done[1] == "retry"
    reply = the_reply(engine)
    assert reply.state == "queued" and reply.attempts == 1
    assert reply.next_attempt_at > utcnow()
    assert received(fake) == []
    waited = re.fullmatch(
        r"X was still processing spinner\.gif after (\d+) s "
        r"\(media_processing_timeout_s = 2 for the reply's files\)",
        reply.last_error,
    )
    assert waited is not None and int(waited.group(1)) >= 2
    # At least a second between two STATUS requests, whatever X's check_after_secs: in 2 s
    # at most one right after FINALIZE's answer, one a second later and one at the deadline.
    assert 1 <= statuses(fake) <= 3
    # Later, X processes the upload it is given again, and the reply goes once.
    fake.processing_rounds = 0
    due_now(engine)
    done = send_next(twitter)
    assert done is not None and done[1] == "sent"
    assert received(fake) == [(CHLOE, "Spinner.", "dm_gif", "image/gif", sha(GIF))]
    assert len(fake.media) == 2  # the upload given up on is never sent


async def test_the_wait_for_processing_is_the_replys_not_each_files(
    engine: Engine, fake: FakeX
) -> None:
    """Two GIFs X processes for about 2 s each, 3 s for the reply: the first goes, the
    second is given back for later, where a wait per file would send both in about 4 s (and
    a reply of many videos would outlast the outbox's sending lease)."""
    twitter = await a_dm_case(engine, fake, media_processing_timeout_s=3)
    # FINALIZE's "pending" (check at once), two "in_progress" of 1 s, then "succeeded": ~2 s
    fake.processing_rounds = 2
    fake.status_wait = 1
    gifs = [("spinner.gif", "image/gif", GIF), ("loader.gif", "image/gif", GIF)]
    reply_with_files(engine, agent(engine), the_reference(engine), "Two.", gifs)
    done = send_next(twitter)
    assert done is not None and done[1] == "retry"
    assert received(fake) == [(CHLOE, "Two.", "dm_gif", "image/gif", sha(GIF))]
    assert "X was still processing loader.gif" in the_reply(engine).last_error
    # Later, with the reply's time anew, only the second DM goes.
    due_now(engine)
    done = send_next(twitter)
    assert done is not None and done[1] == "sent"
    assert received(fake) == [
        (CHLOE, "Two.", "dm_gif", "image/gif", sha(GIF)),
        (CHLOE, "", "dm_gif", "image/gif", sha(GIF)),
    ]


# A video of five chunks of 1 MiB (the last one short), the size tweepy's own upload uses.
CLIP = MP4 + bytes(range(256)) * (4 * 4096 + 1)


def appends(fake: FakeX) -> int:
    return fake.upload_commands.count("APPEND")


async def test_an_upload_slower_than_the_replys_time_goes_later(
    engine: Engine, fake: FakeX
) -> None:
    """Each APPEND takes a second, the reply has 3 s for its files: the upload stops between
    two chunks once the time is out, the reply is given back for later (where an upload
    that sends every chunk whatever the clock would hold the row past its sending lease on
    a slow link), and goes whole on a later try."""
    twitter = await a_dm_case(engine, fake, media_processing_timeout_s=3)
    fake.append_delay = 1.0
    reply_with_files(engine, agent(engine), the_reference(engine), "A clip.", [
        ("clip.mp4", "video/mp4", CLIP)
    ])  # fmt: skip
    chunks = -(-len(CLIP) // (1024 * 1024))
    assert chunks == 5
    done = send_next(twitter)
    assert done is not None and done[1] == "retry"
    reply = the_reply(engine)
    assert reply.state == "queued" and reply.attempts == 1
    assert reply.last_error == (
        "the upload of clip.mp4 to X did not fit in the reply's time for its files "
        "(media_processing_timeout_s = 3)"
    )
    # A chunk begun within the 3 s may end after them, and no other begins: 3 or 4 APPENDs
    # on a quiet machine, fewer on a loaded one, never all five.
    assert 1 <= appends(fake) < chunks
    assert received(fake) == [] and statuses(fake) == 0
    # Later, on a quick link, the reply goes with the whole file.
    fake.append_delay = 0.0
    due_now(engine)
    before = appends(fake)
    done = send_next(twitter)
    assert done is not None and done[1] == "sent"
    assert received(fake) == [(CHLOE, "A clip.", "dm_video", "video/mp4", sha(CLIP))]
    assert appends(fake) - before == chunks


async def test_a_stop_ends_an_upload_between_two_chunks(engine: Engine, fake: FakeX) -> None:
    """A second an APPEND, 300 s for the reply: stopping the connector ends the upload before
    its next chunk, and gives the reply back uncounted for the next run."""
    twitter = await a_dm_case(engine, fake, media_processing_timeout_s=300)
    fake.append_delay = 1.0
    reply_with_files(engine, agent(engine), the_reference(engine), "A clip.", [
        ("clip.mp4", "video/mp4", CLIP)
    ])  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(twitter.run(stop))
    try:
        await until(lambda: appends(fake) >= 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert appends(fake) < 5
    reply = the_reply(engine)
    assert reply.state == "queued" and reply.attempts == 0
    assert reply.last_error == "stopped while uploading clip.mp4"
    assert reply.claimed_by is None and received(fake) == []


async def test_a_medium_x_cannot_process_fails_the_reply(engine: Engine, fake: FakeX) -> None:
    twitter = await a_dm_case(engine, fake)
    fake.processing_rounds = 1
    fake.status_wait = 1
    fake.processing_result = "failed"
    reply_with_files(engine, agent(engine), the_reference(engine), "A clip.", [
        ("clip.mp4", "video/mp4", MP4)
    ])  # fmt: skip
    done = send_next(twitter)
    assert done is not None and done[1] == "failed"
    reply = the_reply(engine)
    assert reply.last_error == "X could not process clip.mp4: Unsupported video format"
    assert received(fake) == [] and statuses(fake) == 2


class Waits(threading.Event):
    """A stop event that is never set and notes every wait the sender makes on it: how long
    each was to last (a wait for X's processing is one on the connector's stop event)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.asked.append(timeout)
        return super().wait(timeout)


@pytest.mark.parametrize(
    ("finalize_done", "processing_wait", "expected_waits", "expected_statuses"),
    [
        # FINALIZE already says "succeeded": sent at once, no STATUS, no wait.
        (True, 0, [], 0),
        # FINALIZE says "pending", check after 0 s: STATUS at once, which says "succeeded".
        (False, 0, [], 1),
        # FINALIZE says "pending", check after 1 s: X's word is followed, once.
        (False, 1, [1.0], 1),
    ],
)
async def test_a_gif_x_has_processed_goes_without_waiting(
    engine: Engine,
    fake: FakeX,
    finalize_done: bool,
    processing_wait: int,
    expected_waits: list[float],
    expected_statuses: int,
) -> None:
    waits = Waits()
    twitter = await a_dm_case(engine, fake, stopping=waits)
    fake.processing_rounds = 0
    fake.finalize_done = finalize_done
    fake.processing_wait = processing_wait
    reply_with_files(engine, agent(engine), the_reference(engine), "Spinner.", FILES[1:])
    done = send_next(twitter)
    assert done is not None and done[1] == "sent"
    assert received(fake) == [(CHLOE, "Spinner.", "dm_gif", "image/gif", sha(GIF))]
    assert waits.asked == expected_waits
    assert statuses(fake) == expected_statuses


async def test_an_image_goes_without_asking_or_waiting(engine: Engine, fake: FakeX) -> None:
    waits = Waits()
    twitter = await a_dm_case(engine, fake, stopping=waits)
    reply_with_files(engine, agent(engine), the_reference(engine), "Screen.", FILES[:1])
    done = send_next(twitter)
    assert done is not None and done[1] == "sent"
    assert waits.asked == [] and statuses(fake) == 0


async def test_a_stop_ends_the_wait_and_the_reply_goes_on_the_next_run(
    engine: Engine, fake: FakeX
) -> None:
    """X processes the GIF for ever, 10 s between two STATUS requests, 300 s for the reply:
    stopping the connector ends the wait at once, and gives the reply back to the queue
    uncounted with its first DM (the image) kept; the next run sends only the GIF."""
    twitter = await a_dm_case(engine, fake, media_processing_timeout_s=300)
    fake.processing_rounds = None
    fake.status_wait = 10
    reply_with_files(engine, agent(engine), the_reference(engine), "Both screens.", FILES)
    stop = asyncio.Event()
    task = asyncio.create_task(twitter.run(stop))
    try:
        await until(lambda: statuses(fake) >= 2)  # waiting the 10 s X asked for
    finally:
        stop.set()
        # Well within the 10 s wait under way: only the stop can end it this soon.
        await asyncio.wait_for(task, 8)
    asked = statuses(fake)
    reply = the_reply(engine)
    assert reply.state == "queued" and reply.attempts == 0
    assert reply.last_error == "stopped while X was processing spinner.gif"
    assert reply.next_attempt_at <= utcnow()
    assert reply.claimed_by is None
    assert received(fake) == [(CHLOE, "Both screens.", "dm_image", "image/png", sha(PNG))]
    assert reply.payload["parts_sent"] == [fake.posted_dms[1]["id"]]
    # The next run (another process): X now processes the GIF it is given again.
    fake.processing_rounds = 0
    again = connector(engine, settings_for(fake))
    try:
        done = send_next(again)
    finally:
        again.api.close()
    assert done is not None and done[1] == "sent"
    assert received(fake) == [
        (CHLOE, "Both screens.", "dm_image", "image/png", sha(PNG)),
        (CHLOE, "", "dm_gif", "image/gif", sha(GIF)),
    ]
    assert statuses(fake) == asked + 1  # nothing more was asked after the stop
    assert the_reply(engine).state == "sent"


ERROR = {"code": 1, "name": "InvalidMedia", "message": "Unsupported video format"}


@pytest.mark.parametrize(
    ("info", "elapsed", "expected"),
    [
        # No processing_info (an image), or done: ready, even past the deadline.
        (None, 0.0, ProcessingStep("ready")),
        ({"state": "succeeded", "progress_percent": 100}, 500.0, ProcessingStep("ready")),
        ({"state": "failed", "error": ERROR}, 0.0, ProcessingStep("failed")),
        ({"state": "failed"}, 500.0, ProcessingStep("failed")),
        # An error while "in progress" is a failure too (tweepy stops waiting on one).
        ({"state": "in_progress", "error": ERROR}, 0.0, ProcessingStep("failed")),
        # X's check_after_secs, between the floor (1 s) and the cap (10 s).
        ({"state": "pending", "check_after_secs": 5}, 0.0, ProcessingStep("wait", 5.0)),
        ({"state": "in_progress", "check_after_secs": 2.5}, 0.0, ProcessingStep("wait", 2.5)),
        ({"state": "in_progress", "check_after_secs": 0}, 0.0, ProcessingStep("wait", 1.0)),
        ({"state": "in_progress", "check_after_secs": -30}, 0.0, ProcessingStep("wait", 1.0)),
        ({"state": "in_progress", "check_after_secs": 3600}, 0.0, ProcessingStep("wait", 10.0)),
        # No more than the time left, but still the floor when less than it is left.
        ({"state": "in_progress", "check_after_secs": 5}, 117.0, ProcessingStep("wait", 3.0)),
        ({"state": "in_progress", "check_after_secs": 5}, 119.5, ProcessingStep("wait", 1.0)),
        # Past the deadline: give up.
        ({"state": "in_progress", "check_after_secs": 5}, 120.0, ProcessingStep("give_up")),
        ({"state": "pending", "check_after_secs": 1}, 121.0, ProcessingStep("give_up")),
        # Values that are not numbers count as 0: the floor.
        ({"state": "in_progress", "check_after_secs": "5"}, 0.0, ProcessingStep("wait", 1.0)),
        ({"state": "in_progress", "check_after_secs": True}, 0.0, ProcessingStep("wait", 1.0)),
        ({"state": "in_progress", "check_after_secs": float("nan")}, 0.0,
         ProcessingStep("wait", 1.0)),
        ({"state": "in_progress", "check_after_secs": float("inf")}, 0.0,
         ProcessingStep("wait", 1.0)),
        ({"state": "in_progress"}, 0.0, ProcessingStep("wait", 1.0)),
        # A state X does not document, none, or no object: waited on, under the deadline.
        ({"state": "queued", "check_after_secs": 4}, 0.0, ProcessingStep("wait", 4.0)),
        ({}, 0.0, ProcessingStep("wait", 1.0)),
        ("in_progress", 0.0, ProcessingStep("wait", 1.0)),
        ("in_progress", 120.0, ProcessingStep("give_up")),
    ],
)  # fmt: skip
def test_what_to_do_while_x_processes(
    info: object, elapsed: float, expected: ProcessingStep
) -> None:
    assert processing_step(info, elapsed, timeout=120.0) == expected


@pytest.mark.parametrize(
    ("info", "elapsed", "expected"),
    [
        # FINALIZE's answer: done, or nothing to process, goes at once (no STATUS at all).
        (None, 0.0, ProcessingStep("ready")),
        ({"state": "succeeded"}, 0.0, ProcessingStep("ready")),
        ({"state": "failed", "error": ERROR}, 0.0, ProcessingStep("failed")),
        # X's check_after_secs is followed, under the cap; 0 (or none, or not a number)
        # means the first STATUS is asked at once: no floor before it.
        ({"state": "pending", "check_after_secs": 0}, 0.0, ProcessingStep("wait", 0.0)),
        ({"state": "pending"}, 0.0, ProcessingStep("wait", 0.0)),
        ({"state": "pending", "check_after_secs": -5}, 0.0, ProcessingStep("wait", 0.0)),
        ({"state": "pending", "check_after_secs": "1"}, 0.0, ProcessingStep("wait", 0.0)),
        ({"state": "pending", "check_after_secs": 0.5}, 0.0, ProcessingStep("wait", 0.5)),
        ({"state": "pending", "check_after_secs": 1}, 0.0, ProcessingStep("wait", 1.0)),
        ({"state": "pending", "check_after_secs": 3600}, 0.0, ProcessingStep("wait", 10.0)),
        # The reply's time already spent on earlier files still bounds it.
        ({"state": "pending", "check_after_secs": 5}, 118.0, ProcessingStep("wait", 2.0)),
        ({"state": "pending", "check_after_secs": 0}, 120.0, ProcessingStep("give_up")),
    ],
)  # fmt: skip
def test_the_first_check_follows_finalizes_answer_without_a_floor(
    info: object, elapsed: float, expected: ProcessingStep
) -> None:
    assert processing_step(info, elapsed, timeout=120.0, first=True) == expected


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"state": "failed", "error": ERROR}, "Unsupported video format"),
        ({"state": "failed", "error": {"code": 1, "name": "InvalidMedia"}}, "InvalidMedia"),
        ({"state": "failed", "error": "broken"}, "processing failed"),
        ({"state": "failed"}, "processing failed"),
        (None, "processing failed"),
    ],
)
def test_why_x_could_not_process(info: object, expected: str) -> None:
    assert processing_error(info) == expected
