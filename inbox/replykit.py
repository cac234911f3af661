"""What an agent writes a reply with: uploads, the draft kept per agent and case, and canned
replies. The store side; the pure parts (placeholders, limits, copies) are inbox.compose.

Drafts are the agent's own: nobody else reads them, and sending the reply removes it
(casework.reply). Canned replies are shared (made by managers) or personal (any agent's
own); both are audited when made, changed or deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, or_, select, update

from inbox import audit, uploads
from inbox.accounts import Principal, has_role
from inbox.casework import MAX_TEXT, Invalid, NotFound, _case, known_addresses
from inbox.channels import CHANNEL_FACTS, REPLY_CHANNEL_NAMES
from inbox.compose import check_length, fill, unknown_placeholders
from inbox.db import insert_ignore, read, write
from inbox.models import CannedReply, Contact, ReplyDraft, utcnow
from inbox.queries import iso

MAX_TITLE = 128
# Canned replies one agent sees: shared plus personal. A picker of more is not a picker.
MAX_CANNED = 500


def upload(
    engine: Engine,
    principal: Principal,
    reference: str,
    *,
    filename: str,
    content_type: str,
    data: bytes,
) -> dict[str, Any]:
    """Keep a file for a reply on this case; the reply names it by the id returned."""
    with write(engine) as conn:
        case = _case(conn, reference)
        return uploads.store(
            conn,
            user_id=principal.id,
            case_id=case.id,
            filename=filename,
            content_type=content_type,
            data=data,
        )


# --- drafts ----------------------------------------------------------------------------------


def _clean_draft(draft: dict[str, Any]) -> dict[str, Any]:
    return {
        "text": str(draft.get("text") or "")[:MAX_TEXT],
        "target": str(draft.get("target") or "")[:600],
        "cc": [str(a)[:320] for a in draft.get("cc") or []][:20],
        "bcc": [str(a)[:320] for a in draft.get("bcc") or []][:20],
        "attachments": [int(a) for a in draft.get("attachments") or []][:100],
        "markdown": bool(draft.get("markdown", True)),
    }


def get_draft(engine: Engine, principal: Principal, reference: str) -> dict[str, Any]:
    """My draft on this case (empty when there is none), with its files described, and the
    addresses the case knows (for the CC/BCC picker)."""
    with read(engine) as conn:
        case = _case(conn, reference)
        row = conn.execute(
            select(ReplyDraft).where(
                ReplyDraft.user_id == principal.id, ReplyDraft.case_id == case.id
            )
        ).one_or_none()
        draft = _clean_draft(dict(row.draft) if row is not None else {})
        files = uploads.describe(
            conn, user_id=principal.id, case_id=case.id, ids=draft["attachments"]
        )
        draft["attachments"] = [f["id"] for f in files]
        return {
            "draft": draft,
            "files": files,
            "updated_at": iso(row.updated_at) if row is not None else None,
            "known_addresses": known_addresses(conn, case),
        }


def save_draft(
    engine: Engine, principal: Principal, reference: str, draft: dict[str, Any]
) -> dict[str, Any]:
    """Keep (replace) my draft on this case."""
    clean = _clean_draft(draft)
    now = utcnow()
    with write(engine) as conn:
        case = _case(conn, reference)
        key = {"user_id": principal.id, "case_id": case.id}
        conn.execute(
            insert_ignore(conn, ReplyDraft, ["user_id", "case_id"]).values(
                **key, draft=clean, updated_at=now
            )
        )
        conn.execute(
            update(ReplyDraft)
            .where(ReplyDraft.user_id == principal.id, ReplyDraft.case_id == case.id)
            .values(draft=clean, updated_at=now)
        )
    return {"draft": clean, "updated_at": iso(now)}


def discard_draft(engine: Engine, principal: Principal, reference: str) -> None:
    with write(engine) as conn:
        case = _case(conn, reference)
        conn.execute(
            delete(ReplyDraft).where(
                ReplyDraft.user_id == principal.id, ReplyDraft.case_id == case.id
            )
        )


# --- canned replies --------------------------------------------------------------------------


def eta_text(due_at: datetime | None, now: datetime) -> str:
    """{eta}: when the customer may expect an answer, from the case's due time, in words
    that stay true whatever their time zone ("within 2 hours", "today")."""
    if due_at is None:
        return "as soon as we can"
    if due_at.tzinfo is None:
        due_at = due_at.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    minutes = int((due_at - now).total_seconds() // 60)
    if minutes <= 0:
        return "as soon as we can"
    if minutes < 60:
        return f"within {max(minutes, 1)} minutes"
    hours = -(-minutes // 60)
    if hours < 48:
        return f"within {hours} hours"
    return f"within {-(-hours // 24)} days"


def check_canned(title: str, body: str, variants: dict[str, str]) -> list[dict[str, Any]]:
    """Refuse a canned reply with an unknown placeholder, an unknown channel or a variant
    longer than its channel takes; the length checks of its variants otherwise."""
    if not title.strip() or len(title) > MAX_TITLE:
        raise Invalid(f"a title has 1 to {MAX_TITLE} characters")
    if not body.strip() or len(body) > MAX_TEXT:
        raise Invalid(f"a body has 1 to {MAX_TEXT} characters")
    checks = []
    for text in (body, *variants.values()):
        unknown = unknown_placeholders(text)
        if unknown:
            raise Invalid(
                "unknown placeholder "
                + ", ".join("{" + u + "}" for u in unknown)
                + "; the placeholders are {contact.name}, {case.reference}, {agent.name}, {eta}"
            )
    for channel, text in variants.items():
        if channel not in REPLY_CHANNEL_NAMES:
            raise Invalid(f"no channel {channel!r} to reply on")
        check = check_length(channel, text)
        if not check.fits:
            raise Invalid(f"the {channel} variant is too long: {check.note}")
        checks.append({"channel": channel, "note": check.note, "parts": check.parts})
    return checks


def _json(row: Any, me: int) -> dict[str, Any]:
    return {
        "id": row.id,
        "title": row.title,
        "body": row.body,
        "variants": dict(row.variants or {}),
        "personal": row.owner_id is not None,
        "mine": row.owner_id == me,
        "created_by": row.created_by,
        "updated_at": iso(row.updated_at),
    }


def _visible(principal: Principal) -> Any:
    return or_(CannedReply.owner_id.is_(None), CannedReply.owner_id == principal.id)


def list_canned(engine: Engine, principal: Principal) -> list[dict[str, Any]]:
    """The canned replies I may use: shared ones and my personal ones, by title."""
    with read(engine) as conn:
        rows = conn.execute(
            select(CannedReply)
            .where(_visible(principal))
            .order_by(CannedReply.title, CannedReply.id)
            .limit(MAX_CANNED)
        )
        return [_json(r, principal.id) for r in rows]


def _may_edit(principal: Principal, owner_id: int | None) -> bool:
    # Shared replies speak for the team: only managers make or change them.
    if owner_id is None:
        return has_role(principal.role, "manager")
    return owner_id == principal.id


def create_canned(
    engine: Engine,
    principal: Principal,
    *,
    title: str,
    body: str,
    variants: dict[str, str],
    personal: bool,
) -> dict[str, Any]:
    checks = check_canned(title, body, variants)
    owner = principal.id if personal else None
    if not _may_edit(principal, owner):
        raise PermissionError("only a manager makes shared canned replies; make it personal")
    now = utcnow()
    with write(engine) as conn:
        new_id = conn.execute(
            insert(CannedReply)
            .values(
                title=title.strip(),
                body=body,
                variants=variants,
                owner_id=owner,
                created_by=principal.name,
                created_at=now,
                updated_at=now,
            )
            .returning(CannedReply.id)
        ).scalar_one()
        audit.append(
            conn,
            actor=principal.actor,
            action="canned.created",
            after={"id": new_id, "title": title.strip(), "personal": personal},
        )
        row = conn.execute(select(CannedReply).where(CannedReply.id == new_id)).one()
        return {**_json(row, principal.id), "checks": checks}


def _own_row(conn: Connection, principal: Principal, canned_id: int) -> Any:
    row = conn.execute(
        select(CannedReply).where(CannedReply.id == canned_id, _visible(principal))
    ).one_or_none()
    if row is None:
        raise NotFound(f"no canned reply {canned_id}")
    if not _may_edit(principal, row.owner_id):
        raise PermissionError("only a manager changes a shared canned reply")
    return row


def update_canned(
    engine: Engine,
    principal: Principal,
    canned_id: int,
    *,
    title: str,
    body: str,
    variants: dict[str, str],
) -> dict[str, Any]:
    checks = check_canned(title, body, variants)
    with write(engine) as conn:
        row = _own_row(conn, principal, canned_id)
        conn.execute(
            update(CannedReply)
            .where(CannedReply.id == canned_id)
            .values(title=title.strip(), body=body, variants=variants, updated_at=utcnow())
        )
        audit.append(
            conn,
            actor=principal.actor,
            action="canned.changed",
            before={"id": canned_id, "title": row.title},
            after={"id": canned_id, "title": title.strip()},
        )
        new = conn.execute(select(CannedReply).where(CannedReply.id == canned_id)).one()
        return {**_json(new, principal.id), "checks": checks}


def delete_canned(engine: Engine, principal: Principal, canned_id: int) -> None:
    with write(engine) as conn:
        row = _own_row(conn, principal, canned_id)
        conn.execute(delete(CannedReply).where(CannedReply.id == canned_id))
        audit.append(
            conn,
            actor=principal.actor,
            action="canned.deleted",
            before={"id": canned_id, "title": row.title},
        )


def render_canned(
    engine: Engine, principal: Principal, canned_id: int, reference: str, channel: str
) -> dict[str, Any]:
    """A canned reply filled in for this case and channel: the channel's variant where
    there is one, else the body; with how it fits the channel. The agent edits it before
    sending; nothing is sent from here."""
    if channel not in CHANNEL_FACTS:
        raise Invalid(f"no channel {channel!r}")
    now = utcnow()
    with read(engine) as conn:
        row = conn.execute(
            select(CannedReply).where(CannedReply.id == canned_id, _visible(principal))
        ).one_or_none()
        if row is None:
            raise NotFound(f"no canned reply {canned_id}")
        case = _case(conn, reference)
        contact = conn.execute(
            select(Contact.name).where(Contact.id == case.contact_id)
        ).scalar_one_or_none()
    variants = dict(row.variants or {})
    source = variants.get(channel) or row.body
    values = {
        "contact.name": contact or "there",
        "case.reference": case.reference,
        "agent.name": principal.name,
        "eta": eta_text(case.due_at, now),
    }
    text = fill(source, values)
    check = check_length(channel, text)
    return {
        "id": row.id,
        "title": row.title,
        "channel": channel,
        "variant": channel in variants,
        "text": text,
        "fits": check.fits,
        "parts": check.parts,
        "note": check.note,
    }
