"""Files agents upload for replies: stored as blobs, owned by their uploader and case.

An upload is taken whole into memory only up to the reply limit (the web handler stops
reading past it), hashed, and kept as a blob like an inbound attachment. It is the
uploader's alone: a reply names upload ids, and an id of another agent's, another case's or
an already sent upload is refused, so ids cannot be guessed into someone else's mail.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, exists, insert, or_, select, update

from inbox.db import insert_ignore, read, write
from inbox.downloads import safe_filename
from inbox.models import (
    Attachment,
    Blob,
    DeadLetter,
    Intake,
    Message,
    ReplyDraft,
    ReplyUpload,
    utcnow,
)

# A content type as a browser declares it: a token/token pair, nothing a header could be
# bent by. Anything else is opaque bytes.
_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")


class UploadRefused(ValueError):
    """An upload id a reply may not use; the message says why."""


def declared_type(value: str) -> str:
    kind = value.split(";", 1)[0].strip().lower()
    return kind if _TYPE.match(kind) else "application/octet-stream"


def store(
    conn: Connection,
    *,
    user_id: int,
    case_id: int,
    filename: str,
    content_type: str,
    data: bytes,
) -> dict[str, Any]:
    """Keep one uploaded file; its JSON (id, filename, content_type, size)."""
    sha = hashlib.sha256(data).hexdigest()
    now = utcnow()
    conn.execute(
        insert_ignore(conn, Blob, ["sha256"]).values(
            sha256=sha, size=len(data), data=data, created_at=now
        )
    )
    name = safe_filename(filename, "attachment")[:128]
    kind = declared_type(content_type)
    upload_id = conn.execute(
        insert(ReplyUpload)
        .values(
            user_id=user_id,
            case_id=case_id,
            sha256=sha,
            filename=name,
            content_type=kind,
            size=len(data),
            created_at=now,
        )
        .returning(ReplyUpload.id)
    ).scalar_one()
    return {"id": upload_id, "filename": name, "content_type": kind, "size": len(data)}


def usable(conn: Connection, *, user_id: int, case_id: int, ids: Sequence[int]) -> list[Any]:
    """The upload rows `ids` name, in that order, if each is this agent's, for this case, and
    not yet sent; UploadRefused naming the first that is not."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    rows = {r.id: r for r in conn.execute(select(ReplyUpload).where(ReplyUpload.id.in_(wanted)))}
    out = []
    for upload_id in wanted:
        row = rows.get(upload_id)
        if row is None or row.user_id != user_id or row.case_id != case_id:
            raise UploadRefused(f"no upload {upload_id} of yours on this case")
        if row.message_id is not None:
            raise UploadRefused(f"upload {upload_id} was already sent")
        out.append(row)
    return out


def payload(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """What an outbox row keeps of its files: the sender reads the blobs at claim time."""
    return [
        {"sha256": r.sha256, "filename": r.filename, "content_type": r.content_type, "size": r.size}
        for r in rows
    ]


def attach(conn: Connection, message_id: int, rows: Sequence[Any]) -> None:
    """The files become the outbound message's attachments (shown and downloadable in the
    timeline like a customer's), and the uploads are marked sent."""
    for r in rows:
        conn.execute(
            insert(Attachment).values(
                message_id=message_id,
                sha256=r.sha256,
                filename=r.filename,
                content_type=r.content_type,
                size=r.size,
            )
        )
    if rows:
        conn.execute(
            update(ReplyUpload)
            .where(ReplyUpload.id.in_([r.id for r in rows]))
            .values(message_id=message_id)
        )


def describe(conn: Connection, *, user_id: int, case_id: int, ids: Sequence[int]) -> list[Any]:
    """The unsent uploads among `ids` that are this agent's on this case (a draft's files)."""
    if not ids:
        return []
    return [
        {"id": r.id, "filename": r.filename, "content_type": r.content_type, "size": r.size}
        for r in conn.execute(
            select(ReplyUpload)
            .where(
                ReplyUpload.id.in_(list(ids)),
                ReplyUpload.user_id == user_id,
                ReplyUpload.case_id == case_id,
                ReplyUpload.message_id.is_(None),
            )
            .order_by(ReplyUpload.id)
        )
    ]


@dataclass(frozen=True)
class Swept:
    uploads: int  # unsent upload rows removed
    blobs: int  # their blobs removed (a blob something else still uses is kept)


def sweep(engine: Engine, *, keep: timedelta, now: datetime | None = None) -> Swept:
    """Remove uploads never sent whose last touch is older than `keep`: the upload itself, or
    the uploader's draft on that case, whichever is later (an agent still writing that draft
    keeps their files). Without this an abandoned reply's files stayed for ever.

    A blob goes too when nothing else refers to it; blobs are content-addressed and shared
    (the same file sent, received, or uploaded by someone else stays)."""
    cutoff = (now or utcnow()) - keep
    recent_draft = exists().where(
        ReplyDraft.user_id == ReplyUpload.user_id,
        ReplyDraft.case_id == ReplyUpload.case_id,
        ReplyDraft.updated_at >= cutoff,
    )
    query = select(ReplyUpload.id, ReplyUpload.sha256).where(
        ReplyUpload.message_id.is_(None), ReplyUpload.created_at < cutoff, ~recent_draft
    )
    # Looked for in a read first: on SQLite every write transaction takes the write lock,
    # and most sweeps find nothing.
    with read(engine) as conn:
        if conn.execute(query.limit(1)).first() is None:
            return Swept(0, 0)
    with write(engine) as conn:
        stale = conn.execute(query).all()
        if not stale:
            return Swept(0, 0)
        conn.execute(delete(ReplyUpload).where(ReplyUpload.id.in_([r.id for r in stale])))
        removed, _kept = drop_unused_blobs(conn, {r.sha256 for r in stale})
        return Swept(len(stale), removed)


def drop_unused_blobs(conn: Connection, candidates: set[str]) -> tuple[int, int]:
    """Delete the blobs among `candidates` that no row refers to any more: (removed, kept).
    Blobs are content-addressed and shared, so one another message, attachment, dead letter
    or upload still uses is kept. The one place that decides whether a blob is in use."""
    shas = sorted(candidates)
    if not shas:
        return 0, 0
    used = set(
        conn.execute(
            select(Blob.sha256).where(
                Blob.sha256.in_(shas),
                or_(
                    exists().where(Intake.raw_sha256 == Blob.sha256),
                    exists().where(Message.raw_sha256 == Blob.sha256),
                    exists().where(Attachment.sha256 == Blob.sha256),
                    exists().where(DeadLetter.raw_sha256 == Blob.sha256),
                    exists().where(ReplyUpload.sha256 == Blob.sha256),
                ),
            )
        ).scalars()
    )
    unused = [sha for sha in shas if sha not in used]
    if unused:
        conn.execute(delete(Blob).where(Blob.sha256.in_(unused)))
    return len(unused), len(used)
