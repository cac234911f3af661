"""Read side of the store: the queue, one case with its messages, dead letters, as plain data.

These shapes are what `parity ... --json` prints and what the JSON API serves, so other tools
depend on their field names: add fields, never rename them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from inbox.db import read
from inbox.models import (
    Attachment,
    Blob,
    Case,
    Contact,
    DeadLetter,
    Identity,
    Intake,
    Message,
    Receipt,
)

OPEN_STATUSES = ("new", "open", "pending_customer")


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, the one time format of every output."""
    if value is None:
        return None
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def queue_order() -> tuple[Any, ...]:
    """The queue's order: due time, then age, then id. Channel is deliberately absent."""
    return (Case.due_at.asc(), Case.first_inbound_at.asc(), Case.id.asc())


def list_cases(
    engine: Engine,
    *,
    statuses: Sequence[str] = OPEN_STATUSES,
    channel: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Cases in queue order. A channel filter changes which cases are shown, never the order."""
    with read(engine) as conn:
        query = select(Case).where(Case.status.in_(statuses)).order_by(*queue_order())
        if channel is not None:
            query = query.where(
                Case.id.in_(select(Message.case_id).where(Message.channel == channel))
            )
        if limit is not None:
            query = query.limit(limit).offset(offset)
        cases = list(conn.execute(query))
        ids = [c.id for c in cases]
        channels = _channels(conn, ids)
        counts = _message_counts(conn, ids)
        contacts = _contacts(conn, {c.contact_id for c in cases})
        return [
            _case_summary(
                c, channels.get(c.id, [c.channel]), counts.get(c.id, 0), contacts[c.contact_id]
            )
            for c in cases
        ]


def _case_summary(
    case: Any, channels: list[str], count: int, contact: dict[str, Any]
) -> dict[str, Any]:
    return {
        "reference": case.reference,
        "status": case.status,
        "due_at": iso(case.due_at),
        "channels": channels,
        "channel": case.channel,
        "contact": contact,
        "message_count": count,
        "subject": case.subject,
        "first_inbound_at": iso(case.first_inbound_at),
        "last_activity_at": iso(case.last_activity_at),
        "first_response_at": iso(case.first_response_at),
        "resolved_at": iso(case.resolved_at),
        "followups": case.followups,
        "due_rule": case.due_rule,
        "claims_reference": case.claims_reference,
        # "Unverified: claims to be from ...": set when an unauthenticated mail opened the case.
        "unverified_from": getattr(case, "unverified_from", None),
        "acknowledgement": {"state": case.ack_state, "reason": case.ack_reason},
        "callback_requested_at": iso(getattr(case, "callback_requested_at", None)),
    }


def _chunks(ids: Sequence[int], size: int = 900) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _channels(conn: Connection, case_ids: Sequence[int]) -> dict[int, list[str]]:
    """Every channel each case has seen, in the order it first appeared."""
    result: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(case_ids):
        rows = conn.execute(
            select(Message.case_id, Message.channel, func.min(Message.received_at).label("first"))
            .where(Message.case_id.in_(chunk), Message.direction == "inbound")
            .group_by(Message.case_id, Message.channel)
            .order_by(Message.case_id, "first", Message.channel)
        )
        for row in rows:
            result[row.case_id].append(row.channel)
    return result


def _message_counts(conn: Connection, case_ids: Sequence[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for chunk in _chunks(case_ids):
        rows = conn.execute(
            select(Message.case_id, func.count())
            .where(Message.case_id.in_(chunk))
            .group_by(Message.case_id)
        )
        counts.update({row[0]: row[1] for row in rows})
    return counts


def _contacts(conn: Connection, contact_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    ids = sorted(contact_ids)
    contacts: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(ids):
        for row in conn.execute(select(Contact).where(Contact.id.in_(chunk))):
            contacts[row.id] = {"id": row.id, "name": row.name, "identities": []}
        for ident in conn.execute(
            select(Identity).where(Identity.contact_id.in_(chunk)).order_by(Identity.id)
        ):
            contacts[ident.contact_id]["identities"].append(
                {
                    "channel": ident.kind,
                    "handle": ident.handle,
                    "name": ident.display_name,
                    "verified": ident.verified,
                    "facts": ident.facts,
                }
            )
    return contacts


def case_detail(engine: Engine, reference: str) -> dict[str, Any] | None:
    with read(engine) as conn:
        case = conn.execute(select(Case).where(Case.reference == reference)).one_or_none()
        if case is None:
            return None
        messages = list(
            conn.execute(
                select(Message)
                .where(Message.case_id == case.id)
                .order_by(Message.received_at, Message.id)
            )
        )
        message_ids = [m.id for m in messages]
        receipts: dict[int, list[dict[str, Any]]] = defaultdict(list)
        attachments: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for chunk in _chunks(message_ids):
            for r in conn.execute(
                select(Receipt).where(Receipt.message_id.in_(chunk)).order_by(Receipt.id)
            ):
                receipts[r.message_id].append(
                    {
                        "connector": r.connector,
                        "address": r.address,
                        "received_at": iso(r.received_at),
                    }
                )
            for a in conn.execute(
                select(Attachment).where(Attachment.message_id.in_(chunk)).order_by(Attachment.id)
            ):
                attachments[a.message_id].append(
                    {
                        "id": a.id,
                        "sha256": a.sha256,
                        "filename": a.filename,
                        "content_type": a.content_type,
                        "size": a.size,
                    }
                )
        summary = _case_summary(
            case,
            _channels(conn, [case.id]).get(case.id, [case.channel]),
            len(messages),
            _contacts(conn, [case.contact_id])[case.contact_id],
        )
        linked = None
        if case.linked_case_id is not None:
            linked = conn.execute(
                select(Case.reference).where(Case.id == case.linked_case_id)
            ).scalar_one_or_none()
        summary["linked_case"] = linked
        summary["messages"] = [
            {
                "id": m.id,
                "channel": m.channel,
                "direction": m.direction,
                "visibility": m.visibility,
                "received_at": iso(m.received_at),
                "sent_at": iso(m.sent_at),
                "from": m.from_handle,
                "from_name": m.from_name,
                "subject": m.subject,
                "text": m.text,
                "has_html": m.html is not None,
                "automated": m.automated,
                # Inbound email's sender authentication (spf, dkim, dmarc, arc, from_domain,
                # verdict); None on other channels and on mail filed before it was checked.
                "auth": m.auth,
                "external_id": m.external_id,
                "receipts": receipts.get(m.id, []),
                "attachments": attachments.get(m.id, []),
            }
            for m in messages
        ]
        return summary


def list_dead_letters(engine: Engine, *, include_resolved: bool = False) -> list[dict[str, Any]]:
    with read(engine) as conn:
        # Plain columns: on a Connection an entity in select() comes back flattened, so
        # `row.DeadLetter` would not exist.
        query = (
            select(*DeadLetter.__table__.c, Blob.size.label("raw_size"))
            .join(Blob, Blob.sha256 == DeadLetter.raw_sha256)
            .order_by(DeadLetter.id)
        )
        if not include_resolved:
            query = query.where(DeadLetter.resolved.is_(False))
        return [
            {
                "id": row.id,
                "connector": row.connector,
                "channel": row.channel,
                "intake_id": row.intake_id,
                "error": row.error,
                "raw_sha256": row.raw_sha256,
                "raw_size": row.raw_size,
                "created_at": iso(row.created_at),
                "replays": row.replays,
                "replayed_at": iso(row.replayed_at),
                "resolved": row.resolved,
            }
            for row in conn.execute(query)
        ]


def case_of_message(engine: Engine, message_id: int) -> str | None:
    with read(engine) as conn:
        return conn.execute(
            select(Case.reference)
            .join(Message, Message.case_id == Case.id)
            .where(Message.id == message_id)
        ).scalar_one_or_none()


def dead_letter_detail(engine: Engine, dead_letter_id: int) -> dict[str, Any] | None:
    """One dead letter with its raw input (`raw`, bytes) and what became of a replay."""
    with read(engine) as conn:
        row = conn.execute(
            select(*DeadLetter.__table__.c, Blob.size.label("raw_size"), Blob.data)
            .join(Blob, Blob.sha256 == DeadLetter.raw_sha256)
            .where(DeadLetter.id == dead_letter_id)
        ).one_or_none()
        if row is None:
            return None
        result: dict[str, Any] = {
            "id": row.id,
            "connector": row.connector,
            "channel": row.channel,
            "intake_id": row.intake_id,
            "error": row.error,
            "raw_sha256": row.raw_sha256,
            "raw_size": row.raw_size,
            "created_at": iso(row.created_at),
            "replays": row.replays,
            "replayed_at": iso(row.replayed_at),
            "resolved": row.resolved,
        }
        result["raw"] = bytes(row.data)
        result["case"] = None
        if row.intake_id is not None:
            result["case"] = conn.execute(
                select(Case.reference)
                .join(Message, Message.case_id == Case.id)
                .join(Intake, Intake.message_id == Message.id)
                .where(Intake.id == row.intake_id)
            ).scalar_one_or_none()
        return result
