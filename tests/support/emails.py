"""Email fixtures and small store helpers shared by the threading, dedup and CLI tests.

The fixtures in tests/fixtures/email are written by us after what real clients send. Those
that cite a case carry `C-000001` and the token placeholder `aaaaaaaaaaaa`; `retag` swaps in
the real reference and token, so a test never depends on which id the database hands out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from inbox.models import Case, Identity, Message, Receipt
from tests.support.helpers import FIXTURES

# Friday 20 November 2026, a minute after Ann's first mail left Gmail.
T0 = datetime(2026, 11, 20, 8, 14, 30, tzinfo=UTC)
PLACEHOLDER_REFERENCE = b"C-000001"
PLACEHOLDER_TOKEN = b"aaaaaaaaaaaa"

# The two attachments of thunderbird_attachments.eml, as the client had them on disk.
SCREENSHOT_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c49444154789c63f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)
STATEMENT_PDF = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
)


def eml(name: str) -> bytes:
    return (FIXTURES / "email" / name).read_bytes()


def retag(raw: bytes, reference: str, token: str | None = None) -> bytes:
    """The fixture citing `reference` (and carrying `token`) instead of the placeholders."""
    raw = raw.replace(PLACEHOLDER_REFERENCE, reference.encode())
    if token is not None:
        raw = raw.replace(PLACEHOLDER_TOKEN, token.encode())
    return raw


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def case_row(engine: Engine, reference: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Case).where(Case.reference == reference)).one()


def set_case(engine: Engine, reference: str, **values: Any) -> None:
    """Arrange a case's state directly, as an agent's action would have left it."""
    with engine.begin() as conn:
        conn.execute(update(Case).where(Case.reference == reference).values(**values))


def link_identity(engine: Engine, contact_id: int, handle: str, name: str = "") -> None:
    """An agent links another address to a contact."""
    with engine.begin() as conn:
        conn.execute(
            insert(Identity).values(
                kind="email",
                handle=handle,
                display_name=name,
                contact_id=contact_id,
                verified=True,
                facts={},
                created_at=T0,
            )
        )


def message_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(Message.id)).all())


def receipts_of(engine: Engine, message_id: int | None) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(Receipt).where(Receipt.message_id == message_id).order_by(Receipt.id)
            )
        )
