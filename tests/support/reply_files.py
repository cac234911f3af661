"""Replies with files, as an agent makes them, for the channels' sender tests: the files are
uploaded through inbox.uploads (as the upload route stores them) and named by a reply
through casework.reply, so the row a sender claims is the one the inbox queues."""

from __future__ import annotations

from sqlalchemy import Engine, select

from inbox import casework, uploads
from inbox.accounts import Principal
from inbox.db import write
from inbox.models import Case
from tests.support.inbox_helpers import make_user

# A 1x1 PNG and a PDF-looking file with bytes that no text handling would keep intact.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db40000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n% not really a pdf, but its bytes must survive the upload\n\x00\x01\xfe\xff\n"


def agent(engine: Engine, name: str = "agent1") -> Principal:
    return Principal(id=make_user(engine, name), name=name, role="agent", via="cli")


def the_reference(engine: Engine) -> str:
    with engine.connect() as conn:
        reference = conn.execute(select(Case.reference)).scalar_one()
    assert isinstance(reference, str)
    return reference


def reply_with_files(
    engine: Engine,
    principal: Principal,
    reference: str,
    text: str,
    files: list[tuple[str, str, bytes]],
    **request: object,
) -> dict[str, object]:
    """Upload `files` (name, declared type, bytes) as `principal` and reply with them."""
    with engine.connect() as conn:
        case_id = conn.execute(select(Case.id).where(Case.reference == reference)).scalar_one()
    ids = []
    with write(engine) as conn:
        for filename, kind, data in files:
            stored = uploads.store(
                conn,
                user_id=principal.id,
                case_id=case_id,
                filename=filename,
                content_type=kind,
                data=data,
            )
            ids.append(int(stored["id"]))
    return casework.reply(
        engine,
        principal,
        reference,
        casework.ReplyRequest(text=text, uploads=tuple(ids), **request),  # type: ignore[arg-type]
        message_id_domain="support.example.com",
    )
