"""Media fetched after the 200: the half of every connector's media step that is the same.

A provider's webhook carries links to the media, not the bytes, and answering it must not
wait for a download (promise 1 of docs/architecture/promises.md: store, then acknowledge).
Each connector downloads in its own way (Twilio with the account's credentials, Meta through
the Graph API); what happens next is one rule for every channel, kept here: a failed
download is counted on the message under the connector's key in `Message.meta` and given up
after `max_attempts` with its error noted, and the files of a successful one are stored as
attachments once, even when two instances fetch the same message.

A failed download is not tried again on the very next pass: a provider that is down, or
limiting us, would get the same request every few seconds from every instance. The next try
waits `backoff_s`: exponential in the attempts so far, capped, with jitter so the messages
that failed together do not all come back together (`media_due`).
"""

from __future__ import annotations

import mimetypes
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from inbox.db import insert_ignore, write
from inbox.models import Attachment, Blob, Message, utcnow
from normalizer.intake import sha256


@dataclass(frozen=True)
class MediaFile:
    content_type: str
    data: bytes
    filename: str


def extension(content_type: str) -> str:
    """The usual file extension of a content type ('.jpg'), or '' when there is none."""
    return mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""


# The wait after the first failure, and the longest wait: 30 s, 1 min, 2 min, ... 30 min.
RETRY_BASE_S = 30.0
RETRY_CAP_S = 1800.0


def backoff_s(
    attempts: int,
    *,
    base_s: float = RETRY_BASE_S,
    cap_s: float = RETRY_CAP_S,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after the `attempts`-th failed download: base_s * 2**(attempts-1),
    at most cap_s, times a jitter between 0.5 and 1 (`rand` gives [0, 1)). Never more than
    cap_s, never less than half the exponential step."""
    step = min(cap_s, base_s * 2.0 ** min(max(attempts, 1) - 1, 60))
    return step * (0.5 + 0.5 * rand())


def media_due(ours: Mapping[str, Any], now: datetime) -> bool:
    """Whether a message's media may be tried now: never failed, or its wait is over. A
    retry time that cannot be read counts as over (a stuck message is worse than a retry)."""
    at = ours.get("media_retry_at")
    if not isinstance(at, str):
        return True
    try:
        return datetime.fromisoformat(at) <= now
    except ValueError:
        return True


def note_failure(
    engine: Engine,
    message_id: int,
    meta: dict[str, Any],
    key: str,
    error: str,
    *,
    max_attempts: int,
    now: datetime | None = None,
    rand: Callable[[], float] = random.random,
) -> None:
    """Count a failed download on the message; after `max_attempts` stop trying, noting why,
    and before that, set when the next try is due (`backoff_s`)."""
    ours = dict(meta.get(key) or {})
    attempts = int(ours.get("media_attempts") or 0) + 1
    ours["media_attempts"] = attempts
    ours["media_last_error"] = error[:500]
    if attempts >= max_attempts:
        ours["media_fetched"] = True
        ours["media_error"] = error[:500]
        ours.pop("media_retry_at", None)
    else:
        wait = timedelta(seconds=backoff_s(attempts, rand=rand))
        ours["media_retry_at"] = ((now or utcnow()) + wait).isoformat()
    with write(engine) as conn:
        conn.execute(
            update(Message).where(Message.id == message_id).values(meta={**meta, key: ours})
        )


def attach(engine: Engine, message_id: int, key: str, files: Sequence[MediaFile]) -> int:
    """Store `files` as the message's attachments; how many, 0 if another instance did first.

    The message row is read again inside the write: a second instance that downloaded the same
    media finds `media_fetched` set and adds nothing.
    """
    with write(engine) as conn:
        current = dict(
            conn.execute(select(Message.meta).where(Message.id == message_id)).scalar_one() or {}
        )
        ours = dict(current.get(key) or {})
        if ours.get("media_fetched"):
            return 0
        for file in files:
            digest = sha256(file.data)
            conn.execute(
                insert_ignore(conn, Blob, ["sha256"]),
                [
                    {
                        "sha256": digest,
                        "size": len(file.data),
                        "data": file.data,
                        "created_at": utcnow(),
                    }
                ],
            )
            conn.execute(
                insert(Attachment).values(
                    message_id=message_id,
                    sha256=digest,
                    filename=file.filename[:255],
                    content_type=file.content_type.split(";")[0][:256],
                    size=len(file.data),
                )
            )
        ours["media_fetched"] = True
        conn.execute(
            update(Message).where(Message.id == message_id).values(meta={**current, key: ours})
        )
    return len(files)
