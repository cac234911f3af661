"""Merging two cases into one, and undoing it exactly.

A merge moves the absorbed case's messages (with their receipts and attachments, which hang
off the messages), thread refs, outbox rows and notes to the surviving case, and marks the
absorbed case "merged". A `case_merges` row records the ids it moved and both cases' fields
before the merge, so an undo moves exactly those rows back and restores both cases' fields.
Audit rows never move.

What happens to messages that arrived between the merge and its undo (the rule):
- a message that arrived in the surviving case after the merge goes back to the absorbed case
  when it belongs to the absorbed case's own thread: its In-Reply-To/References/conversation
  refs hit one of the refs the merge moved, or it cites the absorbed case's reference;
- every other new message stays in the surviving case (it came to that case's thread or
  sender, and undo must not guess further);
- agent replies and notes written on the surviving case after the merge stay there.
The undo records what it sent back, and why, in the merge row and the audit log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from inbox import audit, suggestions, turns
from inbox.accounts import Principal
from inbox.casework import Conflict, Invalid, NotFound, _case, _guard
from inbox.db import read, write
from inbox.models import Case, CaseMerge, CaseNote, Message, MessageRef, Outbox, utcnow
from inbox.queries import iso

MERGED = "merged"
# The fields a merge changes; an undo writes back exactly these.
_SOURCE_FIELDS = ("status", "resolved_at", "claimed_by", "lease_until", "last_activity_at")
_INTO_FIELDS = ("status", "due_at", "due_rule", "first_inbound_at", "last_activity_at")


def _snapshot(case: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        f: iso(v) if isinstance(v, datetime) else v
        for f, v in ((f, getattr(case, f)) for f in fields)
    }


def _restore(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key.endswith("_at") or key == "lease_until":
            out[key] = datetime.fromisoformat(value) if value else None
        else:
            out[key] = value
    return out


def merge_json(row: Any, refs: dict[int, str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "source": refs.get(row.source_case_id),
        "into": refs.get(row.into_case_id),
        "merged_at": iso(row.merged_at),
        "merged_by": row.merged_by,
        "moved": {k: len(row.moved.get(k, [])) for k in ("messages", "refs", "outbox", "notes")},
        "undone_at": iso(row.undone_at),
        "undone_by": row.undone_by,
        "undo_details": row.undo_details,
    }


def _refs(conn: Connection, ids: set[int]) -> dict[int, str]:
    return {
        r.id: r.reference
        for r in conn.execute(select(Case.id, Case.reference).where(Case.id.in_(sorted(ids))))
    }


def merge(
    engine: Engine, principal: Principal, source_ref: str, into_ref: str, *, force: bool = False
) -> dict[str, Any]:
    """Merge case `source_ref` into `into_ref`; returns the merge record."""
    now = utcnow()
    with write(engine) as conn:
        source = _case(conn, source_ref, lock=True)
        into = _case(conn, into_ref, lock=True)
        if source.id == into.id:
            raise Invalid("a case cannot be merged into itself")
        for case in (source, into):
            if case.status == MERGED:
                raise Invalid(f"{case.reference} was merged already; undo that merge first")
            _guard(conn, case, principal, now, force)
        moved: dict[str, Any] = {
            "messages": list(
                conn.execute(select(Message.id).where(Message.case_id == source.id)).scalars()
            ),
            # The survivor's own messages at merge time: anything else found in it at undo
            # time arrived after the merge, whatever its (possibly back-dated) received_at.
            "into_messages": list(
                conn.execute(select(Message.id).where(Message.case_id == into.id)).scalars()
            ),
            "refs": list(
                conn.execute(select(MessageRef.id).where(MessageRef.case_id == source.id)).scalars()
            ),
            "outbox": list(
                conn.execute(select(Outbox.id).where(Outbox.case_id == source.id)).scalars()
            ),
            "notes": list(
                conn.execute(select(CaseNote.id).where(CaseNote.case_id == source.id)).scalars()
            ),
        }
        # The ref strings too: the undo rule asks whether a later message threaded to them.
        moved["ref_values"] = sorted(
            set(
                conn.execute(
                    select(MessageRef.ref).where(MessageRef.case_id == source.id)
                ).scalars()
            )
        )
        # Both MinHash signatures as they were: an undo puts them back exactly, then folds in
        # only what arrived since. Stored rather than recomputed from the messages, because
        # a signature is not always a function of the case's messages today (cases older
        # than the index have none), and an undo then costs the same for a case of any size.
        moved["signatures"] = {
            "source": suggestions.saved_signature(conn, source.id),
            "into": suggestions.saved_signature(conn, into.id),
        }
        source_state = _snapshot(source, _SOURCE_FIELDS)
        into_state = _snapshot(into, _INTO_FIELDS)
        for table, column in (
            (Message, Message.case_id),
            (MessageRef, MessageRef.case_id),
            (Outbox, Outbox.case_id),
            (CaseNote, CaseNote.case_id),
        ):
            conn.execute(update(table).where(column == source.id).values(case_id=into.id))
        # The surviving case keeps the earlier promise and the whole span of activity; an
        # open absorbed case reopens a resolved survivor (its question is not answered yet).
        into_values: dict[str, Any] = {
            "first_inbound_at": min(into.first_inbound_at, source.first_inbound_at),
            "last_activity_at": max(into.last_activity_at, source.last_activity_at),
        }
        if source.status != "resolved" and source.due_at < into.due_at:
            into_values.update(due_at=source.due_at, due_rule=source.due_rule)
        if into.status == "resolved" and source.status != "resolved":
            into_values.update(status="open")
        # The turns fold the same way: one wait stays open, the earlier one, and the case's
        # due time is its due time (docs/agents/merges.md).
        waiting, moved["turns"] = turns.fold(
            conn,
            source_id=source.id,
            into_id=into.id,
            source_waits=source.status != "resolved",
            into_waits=into_values.get("status", into.status) != "resolved",
            now=now,
        )
        if waiting is not None:
            into_values.update(due_at=waiting.due_at, due_rule=waiting.due_rule)
        conn.execute(update(Case).where(Case.id == into.id).values(**into_values))
        suggestions.fold_case(conn, source.id, into.id)
        # An undo restores the survivor's status only if nobody changed it since.
        moved["into_status_after"] = into_values.get("status", into.status)
        conn.execute(
            update(Case)
            .where(Case.id == source.id)
            .values(status=MERGED, claimed_by=None, lease_until=None, last_activity_at=now)
        )
        merge_id = int(
            conn.execute(
                insert(CaseMerge)
                .values(
                    source_case_id=source.id,
                    into_case_id=into.id,
                    merged_at=now,
                    merged_by=principal.actor,
                    moved=moved,
                    source_state=source_state,
                    into_state=into_state,
                )
                .returning(CaseMerge.id)
            ).scalar_one()
        )
        details = {
            "merge_id": merge_id,
            "source": source.reference,
            "into": into.reference,
            "messages": len(moved["messages"]),
        }
        turns_after = {
            "moved": len(moved["turns"]["moved"]),
            "closed": moved["turns"]["closed"],
            "open": waiting.id if waiting is not None else None,
        }
        audit.append(
            conn,
            actor=principal.actor,
            action="case.merged",
            case_id=source.id,
            before=source_state,
            after={**details, "status": MERGED},
        )
        audit.append(
            conn,
            actor=principal.actor,
            action="case.absorbed",
            case_id=into.id,
            before=into_state,
            after={**details, "turns": turns_after},
        )
        row = conn.execute(select(CaseMerge).where(CaseMerge.id == merge_id)).one()
        return merge_json(row, {source.id: source.reference, into.id: into.reference})


def _cites(message: Any, reference: str, ref_values: set[str]) -> str | None:
    """Why a message that arrived after the merge belongs to the absorbed case, if it does."""
    thread = message.thread or {}
    signals: list[str] = []
    for key in ("in_reply_to", "references", "conversation"):
        value = thread.get(key) or []
        signals.extend([value] if isinstance(value, str) else [str(v) for v in value])
    if any(s in ref_values for s in signals):
        return "threaded to the absorbed case's refs"
    if reference in (message.subject or "") or reference in (message.text or ""):
        return f"cites {reference}"
    return None


def undo(
    engine: Engine, principal: Principal, merge_id: int, *, force: bool = False
) -> dict[str, Any]:
    """Undo a merge: both cases as they were, plus the rule above for what came since.

    Like a merge, it is refused while another agent holds the surviving case (messages
    would vanish from under them), unless a manager forces it.
    """
    now = utcnow()
    with write(engine) as conn:
        row = conn.execute(select(CaseMerge).where(CaseMerge.id == merge_id)).one_or_none()
        if row is None:
            raise NotFound(f"no merge {merge_id}")
        if row.undone_at is not None:
            raise Conflict(f"merge {merge_id} was undone already")
        # Only a merge made after this one blocks it. A merge into the absorbed case made
        # before it is not in the way: this undo hands back what that one moved in too.
        later = conn.execute(
            select(CaseMerge.id).where(
                CaseMerge.into_case_id == row.source_case_id,
                CaseMerge.undone_at.is_(None),
                CaseMerge.id > merge_id,
            )
        ).first()
        if later is not None:
            raise Conflict(f"undo merge {later.id} first: it merged into the absorbed case")
        onward = conn.execute(
            select(CaseMerge.id).where(
                CaseMerge.source_case_id == row.into_case_id,
                CaseMerge.undone_at.is_(None),
            )
        ).first()
        if onward is not None:
            raise Conflict(f"undo merge {onward.id} first: it merged the surviving case onward")
        refs = _refs(conn, {row.source_case_id, row.into_case_id})
        _guard(conn, _case(conn, refs[row.into_case_id], lock=True), principal, now, force)
        source_ref = refs[row.source_case_id]
        moved = row.moved
        message_ids = set(moved["messages"])
        ref_values = set(moved.get("ref_values", []))
        returned: list[dict[str, Any]] = []
        kept: list[int] = []
        texts: dict[int, str] = {}  # what the normalizer indexed for each later message
        before_merge = message_ids | set(moved.get("into_messages", []))
        for m in conn.execute(
            select(Message)
            .where(Message.case_id == row.into_case_id, Message.direction == "inbound")
            .order_by(Message.id)
        ):
            if m.id in before_merge:
                continue
            if not (m.meta or {}).get("delivery_report"):  # bounces are never indexed
                texts[m.id] = f"{m.subject}\n{m.text}"
            reason = _cites(m, source_ref, ref_values)
            if reason is not None:
                message_ids.add(m.id)
                returned.append({"message_id": m.id, "reason": reason})
            else:
                kept.append(m.id)
        returned_ids = [r["message_id"] for r in returned]
        ref_ids = set(moved["refs"])
        if returned_ids:
            ref_ids |= set(
                conn.execute(
                    select(MessageRef.id).where(MessageRef.message_id.in_(returned_ids))
                ).scalars()
            )
        for table, ids in (
            (Message, message_ids),
            (MessageRef, ref_ids),
            (Outbox, set(moved["outbox"])),
            (CaseNote, set(moved["notes"])),
        ):
            if ids:
                conn.execute(
                    update(table)
                    .where(table.id.in_(sorted(ids)), table.case_id == row.into_case_id)
                    .values(case_id=row.source_case_id)
                )
        _restore_signatures(conn, row, returned_ids, kept, texts)
        if "turns" in moved:  # merges made before turns folded moved none
            turns.unfold(
                conn, moved["turns"], source_id=row.source_case_id, into_id=row.into_case_id
            )
        source_values = _restore(row.source_state)
        into_values = _restore(row.into_state)
        # Activity since the merge is real: keep the later time, never go back before it.
        for case_id, values in (
            (row.source_case_id, source_values),
            (row.into_case_id, into_values),
        ):
            latest = conn.execute(
                select(Message.received_at)
                .where(Message.case_id == case_id)
                .order_by(Message.received_at.desc())
                .limit(1)
            ).scalar_one_or_none()
            if latest is not None and latest > values["last_activity_at"]:
                values["last_activity_at"] = latest
        if returned and source_values["status"] == "resolved":
            # A customer wrote to it while it was merged: the ball is with us again.
            source_values.update(status="open", resolved_at=None)
        current_into = conn.execute(select(Case).where(Case.id == row.into_case_id)).one()
        if current_into.status != moved.get("into_status_after"):
            into_values.pop("status", None)
        conn.execute(update(Case).where(Case.id == row.source_case_id).values(**source_values))
        conn.execute(update(Case).where(Case.id == row.into_case_id).values(**into_values))
        details = {"returned": returned, "kept_in_surviving_case": kept}
        conn.execute(
            update(CaseMerge)
            .where(CaseMerge.id == merge_id)
            .values(undone_at=now, undone_by=principal.actor, undo_details=details)
        )
        summary = {
            "merge_id": merge_id,
            "source": source_ref,
            "into": refs[row.into_case_id],
            "returned_after_merge": returned_ids,
            "turns_returned": len(moved.get("turns", {}).get("moved", [])),
        }
        audit.append(
            conn,
            actor=principal.actor,
            action="case.unmerged",
            case_id=row.source_case_id,
            before={"status": MERGED},
            after={**summary, **row.source_state},
        )
        audit.append(
            conn,
            actor=principal.actor,
            action="case.unabsorbed",
            case_id=row.into_case_id,
            after=summary,
        )
        row = conn.execute(select(CaseMerge).where(CaseMerge.id == merge_id)).one()
        return merge_json(row, refs)


def _restore_signatures(
    conn: Connection, row: Any, returned: list[int], kept: list[int], texts: dict[int, str]
) -> None:
    """Both cases' signatures and bands as before the merge, plus the texts of the messages
    that arrived since, each in the case it now belongs to (as if it had arrived there)."""
    saved = row.moved.get("signatures")
    for case_id, which, later in (
        (row.source_case_id, "source", returned),
        (row.into_case_id, "into", kept),
    ):
        if saved is not None:
            suggestions.restore_signature(conn, case_id, saved[which])
            for message_id in later:
                if message_id in texts:
                    suggestions.index_text(conn, case_id, texts[message_id])
        else:
            # A merge recorded before signatures were saved: rebuild from the case's messages.
            suggestions.restore_signature(conn, case_id, None)
            for m in conn.execute(
                select(Message.subject, Message.text, Message.meta)
                .where(Message.case_id == case_id, Message.direction == "inbound")
                .order_by(Message.id)
            ):
                if not (m.meta or {}).get("delivery_report"):
                    suggestions.index_text(conn, case_id, f"{m.subject}\n{m.text}")


def merges_of(engine: Engine, reference: str) -> list[dict[str, Any]]:
    """Every merge this case took part in, newest first (for the case page's undo button)."""
    with read(engine) as conn:
        case = _case(conn, reference)
        rows = list(
            conn.execute(
                select(CaseMerge)
                .where((CaseMerge.source_case_id == case.id) | (CaseMerge.into_case_id == case.id))
                .order_by(CaseMerge.id.desc())
            )
        )
        refs = _refs(conn, {r.source_case_id for r in rows} | {r.into_case_id for r in rows})
        return [merge_json(r, refs) for r in rows]


def surviving_case_id(conn: Connection, case_id: int) -> int:
    """The case a message for `case_id` belongs in now: follows live merges (at most 16 hops)."""
    for _ in range(16):
        into = conn.execute(
            select(CaseMerge.into_case_id)
            .where(CaseMerge.source_case_id == case_id, CaseMerge.undone_at.is_(None))
            .order_by(CaseMerge.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if into is None:
            return case_id
        case_id = into
    return case_id


def absorbed_contacts(conn: Connection, case_id: int) -> set[int]:
    """Contacts of the cases merged into this one (live merges): the agent said their thread
    is this case's, so their replies join it as the case's own contact's would."""
    return set(
        conn.execute(
            select(Case.contact_id)
            .join(CaseMerge, CaseMerge.source_case_id == Case.id)
            .where(CaseMerge.into_case_id == case_id, CaseMerge.undone_at.is_(None))
        ).scalars()
    )
