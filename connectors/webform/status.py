"""What the status page shows of a case, and to whom. Reads the store; the rules are pure.

The reader holds the case's link, so they have seen what was sent to or from the identity
that opened the case (the acknowledgement carried the link there), and what was written on
the status page with it. That is what they are shown: the case's state in plain words, the
expected time of our next answer, and those messages' text. Never an agent's note (notes
are another table), never a handle (the page names "you" and "support"), never a message of
another identity of the contact or of another person whose case was merged in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, select

from connectors.webform.abuse import same
from inbox.db import read
from inbox.merges import MERGED
from inbox.models import Attachment, AuditLog, Case, Identity, Message
from inbox.outbox import ACK_QUEUED
from inbox.references import case_tag, format_reference
from normalizer.threads import TOKEN_LENGTH

# A token of the same shape as a real one, compared when the reference is unknown, so an
# unknown reference and a wrong token take the same time.
_DUMMY_TOKEN = "x" * TOKEN_LENGTH
# The case's statuses in the words the page uses (text.py keys).
STATE_WORDS = {
    "new": "state_new",
    "open": "state_open",
    "pending_customer": "state_pending_customer",
    "resolved": "state_resolved",
}


@dataclass(frozen=True)
class Shown:
    """One message as the page shows it."""

    ours: bool  # written by support (an agent's reply), else by the reader
    at: datetime
    text: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class StatusView:
    reference: str
    state: str  # a STATE_WORDS key's value
    status: str
    due_at: datetime | None  # our next answer, while the ball is with us
    late: bool
    last_in: datetime | None
    last_out: datetime | None
    messages: tuple[Shown, ...]
    resolved: bool
    reopen_until: datetime | None  # a resolved case may be reopened until then
    opener_handle: str  # the web identity a follow-up is written as ("" when none)
    # The case's language (chosen on the form or detected): the page's when the reader's
    # browser names none of ours.
    language: str = "en"


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def visible(
    rows: list[dict[str, Any]],
    opener: tuple[str, str] | None,
    opener_id: int | None,
    tag: str = "",
) -> list[dict[str, Any]]:
    """The messages the holder of the case's link has seen, in order (a pure rule).

    `rows` are the case's messages (direction, identity_id, channel, channel_kind, subject,
    meta); `opener` the (kind, handle) of the identity whose first message opened the case;
    `tag` the case's tag with its token: a message written on the status page carries it,
    so whoever wrote it held this link.
    """
    shown = []
    for row in rows:
        if row["direction"] == "inbound":
            written_here = bool(tag) and row["channel"] == "web" and tag in row["subject"]
            if (opener_id is not None and row["identity_id"] == opener_id) or written_here:
                shown.append(row)
        elif row["direction"] == "outbound":
            meta = row.get("meta") or {}
            if (
                opener is not None
                # An agent's reply, and the satisfaction survey with its rating link.
                and meta.get("kind") in ("reply", "survey")
                and row["channel_kind"] == opener[0]
                and meta.get("to") == opener[1]
            ):
                shown.append(row)
    return shown


def find(
    engine: Engine, reference: str, token: str, now: datetime, reopen_days: int
) -> StatusView | None:
    """The page of case `reference` when `token` is its token, else None (one answer for an
    unknown reference, a wrong token and a missing one)."""
    from inbox.channels import IDENTITY_KIND_OF

    with read(engine) as conn:
        case = conn.execute(
            select(Case.id, Case.token, Case.reference, Case.status, Case.contact_id).where(
                Case.reference == reference
            )
        ).one_or_none()
        if not same(token or "", case.token if case is not None else _DUMMY_TOKEN):
            return None
        if case is None or not token:
            return None
        current = _surviving(conn, case.id) if case.status == MERGED else case.id
        state = conn.execute(select(Case).where(Case.id == current)).one()
        ids = sorted({case.id, current})
        # The identity that opened the token's case: its contact's first message. Looked for
        # in the surviving case too, since a merge moves the messages there, and by contact,
        # so the page of a case merged into another shows its own person's side only.
        opener_row = conn.execute(
            select(Message.identity_id)
            .join(Identity, Identity.id == Message.identity_id)
            .where(
                Message.case_id.in_(ids),
                Message.direction == "inbound",
                Identity.contact_id == case.contact_id,
            )
            .order_by(Message.id)
            .limit(1)
        ).one_or_none()
        opener_id = opener_row.identity_id if opener_row is not None else None
        opener: tuple[str, str] | None = None
        if opener_id is not None:
            found = conn.execute(
                select(Identity.kind, Identity.handle).where(Identity.id == opener_id)
            ).one()
            opener = (found.kind, found.handle)
        rows = [
            {
                "id": r.id,
                "direction": r.direction,
                "identity_id": r.identity_id,
                "channel": r.channel,
                "channel_kind": IDENTITY_KIND_OF.get(r.channel, ""),
                "subject": r.subject or "",
                "meta": r.meta,
                "text": r.text,
                "at": _aware(r.received_at),
            }
            for r in conn.execute(
                select(
                    Message.id,
                    Message.direction,
                    Message.identity_id,
                    Message.channel,
                    Message.subject,
                    Message.meta,
                    Message.text,
                    Message.received_at,
                )
                .where(Message.case_id.in_(ids))
                .order_by(Message.received_at, Message.id)
            )
        ]
        shown = visible(rows, opener, opener_id, case_tag(reference, token))
        promise = promised(conn, current)
        files = _files(conn, [r["id"] for r in shown])
    messages = tuple(
        Shown(r["direction"] == "outbound", r["at"], r["text"], files.get(r["id"], ()))
        for r in shown
    )
    status = state.status
    waiting_on_us = status in ("new", "open")
    # Before our first answer the promise is the acknowledgement's; after it, the case's
    # due time.
    due = (
        (promise if state.first_response_at is None and promise else _aware(state.due_at))
        if waiting_on_us
        else None
    )
    resolved = status == "resolved"
    resolved_at = _aware(state.resolved_at)
    reopen_until = (
        resolved_at + timedelta(days=reopen_days) if resolved and resolved_at is not None else None
    )
    return StatusView(
        reference=state.reference or format_reference(state.id),
        state=STATE_WORDS.get(status, "state_open"),
        status=status,
        due_at=due,
        late=due is not None and due < now,
        last_in=max((m.at for m in messages if not m.ours), default=None),
        last_out=max((m.at for m in messages if m.ours), default=None),
        messages=messages,
        resolved=resolved,
        reopen_until=reopen_until,
        opener_handle=opener[1] if opener is not None and opener[0] == "web" else "",
        language=state.language or "en",
    )


def _surviving(conn: Connection, case_id: int) -> int:
    from inbox.merges import surviving_case_id

    return int(surviving_case_id(conn, case_id))


def _files(conn: Connection, message_ids: list[int]) -> dict[int, tuple[str, ...]]:
    if not message_ids:
        return {}
    found: dict[int, list[str]] = {}
    for row in conn.execute(
        select(Attachment.message_id, Attachment.filename)
        .where(Attachment.message_id.in_(message_ids))
        .order_by(Attachment.id)
    ):
        found.setdefault(row.message_id, []).append(row.filename)
    return {k: tuple(v) for k, v in found.items()}


def promised(conn: Connection, case_id: int) -> datetime | None:
    """The time the case's acknowledgement promised (its audit row's `eta_at`): the one
    estimate every channel's acknowledgement gives (normalizer/acks.py `estimate`)."""
    after = conn.execute(
        select(AuditLog.after)
        .where(AuditLog.case_id == case_id, AuditLog.action == ACK_QUEUED)
        .order_by(AuditLog.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if not after or not after.get("eta_at"):
        return None
    return _aware(datetime.fromisoformat(str(after["eta_at"])))


def opened_by(sid: str, *columns: Any) -> Select[Any]:
    """`columns` of the case form submission `sid` opened: the case of its first message
    (the web identity's handle is the submission's id)."""
    return (
        select(*columns)
        .join(Message, Message.case_id == Case.id)
        .join(Identity, Identity.id == Message.identity_id)
        .where(Identity.kind == "web", Identity.handle == sid)
        .order_by(Message.id)
        .limit(1)
    )


def case_of_submission(engine: Engine, sid: str) -> tuple[str, str, datetime] | None:
    """(reference, token, promised time) of the case a form submission opened, once it
    exists: the acknowledgement's promise, else the SLA's due time."""
    with read(engine) as conn:
        row = conn.execute(
            opened_by(sid, Case.reference, Case.token, Case.due_at, Case.id, Case.status)
        ).one_or_none()
        if row is None or row.reference is None:
            return None
        at = promised(conn, row.id) or _aware(row.due_at) or row.due_at
        return row.reference, row.token, at
