"""Erasure of a person (GDPR art. 17) and retention of resolved cases.

`erase_contact` removes everything Parity holds about one contact: the content of their
cases (message bodies and headers, raw input, attachments, notes, field values, outbound
bodies and recipients, drafts, similarity signatures, survey comments, the threading keys and
signatures merge records keep), their identities' handles and names,
their dead letters, and the values in audit rows that name them. `erase_cases` does the
per-case part alone; retention calls it for cases resolved longer ago than the setting.

What stays is what the figures need: each case's timing facts (created, first inbound, first
response, resolved, due, turns), channel, status, language and the shape of its messages
(direction, visibility, time), so the manager report reads the same before and after.

The audit chain stays verifiable because rows written since migration 0020 have their HMAC
over a keyed digest of each value (inbox/audit.py); erasing replaces a value by that digest.
Rows written before 0020 cover their values directly and are left as they are; the count of
such rows that still name the person is reported. docs/operations/erasure.md.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, exists, func, or_, select, update

from inbox import audit, uploads
from inbox.db import insert_ignore, is_sqlite, write
from inbox.models import (
    AckBucket,
    AlertEvent,
    Attachment,
    AuditLog,
    Blob,
    Case,
    CaseBand,
    CaseField,
    CaseMerge,
    CaseNote,
    CaseSignature,
    Checkpoint,
    ConnectorState,
    Contact,
    CsatSurvey,
    DeadLetter,
    Identity,
    Intake,
    Message,
    MessageRef,
    Outbox,
    OutboxAttempt,
    Receipt,
    ReplyDraft,
    ReplyUpload,
    utcnow,
)

# What an erased blob reference points at: the blob of no bytes (content-addressed, so every
# erased reference shares it and it reveals nothing).
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Audit values under these keys are content (a note's text, a recipient, an identity, a
# field's value, a claim...): erased in the chains of erased cases whatever they contain.
PERSONAL_KEYS = frozenset(
    {"text", "recipient", "identity", "handle", "value", "claims", "subject", "name", "from"}
)
# Shorter needles would erase unrelated values ("Al" is in "Already").
MIN_NEEDLE = 3


class NotFound(LookupError):
    pass


@dataclass
class Erased:
    """What one erasure removed, for the operator and the audit row (counts, no content)."""

    contact_id: int | None = None
    cases: list[int] = field(default_factory=list)
    messages: int = 0
    attachments: int = 0
    blobs_removed: int = 0
    blobs_kept_shared: int = 0
    identities: int = 0
    outbox: int = 0
    dead_letters: int = 0
    audit_values: int = 0
    audit_rows_before_0020: int = 0

    def counts(self) -> dict[str, Any]:
        return {
            "contact_id": self.contact_id,
            "cases": len(self.cases),
            "messages": self.messages,
            "attachments": self.attachments,
            "blobs_removed": self.blobs_removed,
            "blobs_kept_shared": self.blobs_kept_shared,
            "identities": self.identities,
            "outbox": self.outbox,
            "dead_letters": self.dead_letters,
            "audit_values": self.audit_values,
            "audit_rows_before_0020": self.audit_rows_before_0020,
        }


# --- pure decisions --------------------------------------------------------------------------


def needles_of(values: Iterable[str | None]) -> list[str]:
    """The strings that identify a person in free text, lower-cased, longest first (so a
    containing needle is tried before its parts), without ones too short to be specific."""
    found = {v.strip().lower() for v in values if v and len(v.strip()) >= MIN_NEEDLE}
    return sorted(found, key=lambda v: (-len(v), v))


def mentions(value: Any, needles: Sequence[str]) -> bool:
    """Whether a JSON leaf names the person: a string containing one of the needles."""
    if not isinstance(value, str) or not needles:
        return False
    lowered = value.lower()
    return any(n in lowered for n in needles)


ERASED_TEXT = "(erased)"


def scrubbed(value: Any, needles: Sequence[str]) -> Any:
    """A JSON tree with every string that names the person replaced by ERASED_TEXT, for
    state that only quotes people in passing (a relay's refusal, an alert's detail): the
    rest of it stays useful to operators."""
    if isinstance(value, dict):
        return {k: scrubbed(v, needles) for k, v in value.items()}
    if isinstance(value, list):
        return [scrubbed(v, needles) for v in value]
    return ERASED_TEXT if mentions(value, needles) else value


def audit_eraser(needles: Sequence[str], *, whole_case: bool) -> Callable[[str, Any], bool]:
    """The leaf test for `audit.erase_values`: in an erased case's own chain (`whole_case`)
    every value under a content key goes too; elsewhere only values that name the person."""

    def erase(path: str, value: Any) -> bool:
        key = path.rsplit(".", 1)[-1]
        return (whole_case and key in PERSONAL_KEYS) or mentions(value, needles)

    return erase


def retention_cutoffs(
    now: datetime, default_days: int, per_channel: dict[str, int], channels: Iterable[str]
) -> dict[str, datetime | None]:
    """Per channel, the resolution time before which a case's content is erased; None when
    retention is off for it (0 days). A channel's own setting overrides the default."""
    out: dict[str, datetime | None] = {}
    for channel in channels:
        days = per_channel.get(channel, default_days)
        out[channel] = now - timedelta(days=days) if days > 0 else None
    return out


# --- finding the contact ---------------------------------------------------------------------


def find_contact(conn: Connection, who: str) -> int:
    """A contact id given as a number, or the contact of an identity handle (any kind)."""
    if re.fullmatch(r"\d{1,18}", who.strip()):
        found = conn.execute(
            select(Contact.id).where(Contact.id == int(who.strip()))
        ).scalar_one_or_none()
        if found is not None:
            return int(found)
    handle = who.strip()
    rows = conn.execute(
        select(Identity.contact_id).where(func.lower(Identity.handle) == handle.lower()).distinct()
    ).all()
    if not rows:
        raise NotFound(f"no contact with id or identity handle {who!r}")
    if len(rows) > 1:
        raise NotFound(f"{who!r} is a handle of {len(rows)} contacts: give the contact id")
    return int(rows[0][0])


# --- the erasure ---------------------------------------------------------------------------


def erase_contact(engine: Engine, contact_id: int, *, actor: str) -> Erased:
    """Erase one contact and everything of theirs, in one transaction, then scrub the
    SQLite file of the freed pages (see `_scrub`)."""
    with write(engine) as conn:
        _secure(conn)
        result = _erase_contact(conn, contact_id, actor=actor)
    _scrub(engine)
    return result


def _erase_contact(conn: Connection, contact_id: int, *, actor: str) -> Erased:
    contact = conn.execute(select(Contact).where(Contact.id == contact_id)).one_or_none()
    if contact is None:
        raise NotFound(f"no contact {contact_id}")
    identities = conn.execute(select(Identity).where(Identity.contact_id == contact_id)).all()
    case_ids = [
        int(c)
        for c in conn.execute(
            select(Case.id).where(Case.contact_id == contact_id).order_by(Case.id)
        ).scalars()
    ]
    needles = needles_of(
        [contact.name]
        + [i.handle for i in identities]
        + [i.display_name for i in identities]
        + _case_needles(conn, case_ids)
    )
    result = Erased(contact_id=contact_id)
    blobs: set[str] = set()
    _lock_cases(conn, case_ids)
    for case_id in case_ids:
        _erase_case(conn, case_id, needles, result, blobs, actor=actor, reason="contact erased")
    # Their messages in other people's cases (a merge moved them, a CC filed them there).
    elsewhere = [
        int(m)
        for m in conn.execute(
            select(Message.id).where(
                Message.identity_id.in_([i.id for i in identities]),
                Message.case_id.not_in(case_ids or [0]),
            )
        ).scalars()
    ]
    _erase_messages(conn, elsewhere, result, blobs)
    # Their answers to surveys of cases that are not theirs any more (a merge moved the case
    # under another contact keeps the survey's contact).
    _erase_surveys(conn, CsatSurvey.contact_id == contact_id, needles)
    result.dead_letters = _erase_dead_letters(conn, needles, blobs)
    # Outbox rows to them outside their cases (a merge moved them, an alert had no case).
    result.outbox += _erase_outbox(
        conn, (func.lower(Outbox.recipient).in_(needles)) & (Outbox.recipient != "")
    )
    # Rate-limit buckets and connector checkpoints keyed by their handles (an SMS opt-out,
    # a confirmation in progress): both are derived state, safe to forget.
    for bucket in conn.execute(select(AckBucket.key)).scalars().all():
        if mentions(bucket, needles):
            conn.execute(delete(AckBucket).where(AckBucket.key == bucket))
    for row in conn.execute(select(Checkpoint.id, Checkpoint.key, Checkpoint.value)).all():
        if mentions(row.key, needles) or _json_mentions(row.value, needles):
            conn.execute(delete(Checkpoint).where(Checkpoint.id == row.id))
    # Operators' state that may quote them: a relay's or a platform's refusal ("550
    # <zelda@...> unknown") in a connector's last error, a detail of an alert.
    for state in conn.execute(
        select(ConnectorState.id, ConnectorState.last_error, ConnectorState.details)
    ).all():
        error, details = scrubbed(state.last_error, needles), scrubbed(state.details, needles)
        if (error, details) != (state.last_error, state.details):
            conn.execute(
                update(ConnectorState)
                .where(ConnectorState.id == state.id)
                .values(last_error=error, details=details)
            )
    for event in conn.execute(select(AlertEvent.id, AlertEvent.detail)).all():
        detail = scrubbed(event.detail, needles)
        if detail != event.detail:
            conn.execute(update(AlertEvent).where(AlertEvent.id == event.id).values(detail=detail))
    # The rows about no case (links of identities, imports...) that name them.
    erased, legacy = _erase_audit(conn, audit.NO_CASE, audit_eraser(needles, whole_case=False))
    result.audit_values += erased
    result.audit_rows_before_0020 += legacy
    # Rows from before migration 0009 (one chain, no case chains), all of form 1.
    erased, legacy = _erase_audit(conn, None, audit_eraser(needles, whole_case=False))
    result.audit_values += erased
    result.audit_rows_before_0020 += legacy
    for ident in identities:
        conn.execute(
            update(Identity)
            .where(Identity.id == ident.id)
            .values(
                handle=f"erased:{ident.id}",
                display_name="",
                facts={},
                verified=False,
            )
        )
    result.identities = len(identities)
    now = utcnow()
    conn.execute(update(Contact).where(Contact.id == contact_id).values(name="", erased_at=now))
    # Contacts left behind when an identity was linked over to this one: no identity any
    # more, named after one of the handles or names (a new sender's contact is named so).
    leftovers = select(Contact.id).where(
        Contact.id != contact_id,
        func.lower(Contact.name).in_(needles),
        ~exists().where(Identity.contact_id == Contact.id),
    )
    conn.execute(update(Contact).where(Contact.id.in_(leftovers)).values(name="", erased_at=now))
    _drop_unused_blobs(conn, blobs, result)
    audit.append(conn, actor=actor, action="contact.erased", after=result.counts())
    result.cases = case_ids
    return result


def erase_cases(engine: Engine, case_ids: Sequence[int], *, actor: str, reason: str) -> Erased:
    """Erase the content of these cases (retention): the contact and identities stay."""
    result = Erased()
    with write(engine) as conn:
        _secure(conn)
        blobs: set[str] = set()
        _lock_cases(conn, case_ids)
        for case_id in case_ids:
            needles = needles_of(_case_needles(conn, [case_id]))
            _erase_case(conn, case_id, needles, result, blobs, actor=actor, reason=reason)
        _drop_unused_blobs(conn, blobs, result)
    _scrub(engine)
    return result


def _lock_cases(conn: Connection, case_ids: Sequence[int]) -> None:
    """PostgreSQL: lock the case rows first, in id order, as merges and agents do before
    they append to a case's audit chain, so an erasure appending to several chains cannot
    wait in a cycle with them. SQLite has one writer at a time."""
    if case_ids and not is_sqlite(conn):
        conn.execute(
            select(Case.id).where(Case.id.in_(case_ids)).order_by(Case.id).with_for_update()
        ).all()


def _case_needles(conn: Connection, case_ids: Sequence[int]) -> list[str]:
    """What identifies the people of these cases in free text: senders, recipients."""
    if not case_ids:
        return []
    found: list[str] = []
    for m in conn.execute(
        select(Message.from_handle, Message.from_name).where(Message.case_id.in_(case_ids))
    ):
        found += [m.from_handle, m.from_name]
    found += list(
        conn.execute(select(Outbox.recipient).where(Outbox.case_id.in_(case_ids))).scalars()
    )
    found += [
        v
        for v in conn.execute(select(Case.unverified_from).where(Case.id.in_(case_ids))).scalars()
        if v
    ]
    return found


def _erase_case(
    conn: Connection,
    case_id: int,
    needles: Sequence[str],
    result: Erased,
    blobs: set[str],
    *,
    actor: str,
    reason: str,
) -> None:
    messages = [
        int(m) for m in conn.execute(select(Message.id).where(Message.case_id == case_id)).scalars()
    ]
    _erase_messages(conn, messages, result, blobs)
    uploads = conn.execute(select(ReplyUpload.sha256).where(ReplyUpload.case_id == case_id))
    blobs.update(uploads.scalars())
    conn.execute(delete(ReplyUpload).where(ReplyUpload.case_id == case_id))
    conn.execute(delete(ReplyDraft).where(ReplyDraft.case_id == case_id))
    conn.execute(update(CaseNote).where(CaseNote.case_id == case_id).values(text=""))
    _erase_surveys(conn, CsatSurvey.case_id == case_id, needles)
    _erase_merge_records(conn, case_id)
    conn.execute(update(CaseField).where(CaseField.case_id == case_id).values(value=""))
    # Threading keys ("phone:+1415...", Message-IDs): a later message from the person opens a
    # new case instead of joining one whose content is gone.
    conn.execute(delete(MessageRef).where(MessageRef.case_id == case_id))
    conn.execute(delete(CaseBand).where(CaseBand.case_id == case_id))
    conn.execute(delete(CaseSignature).where(CaseSignature.case_id == case_id))
    result.outbox += _erase_outbox(conn, Outbox.case_id == case_id)
    ack_reason = conn.execute(select(Case.ack_reason).where(Case.id == case_id)).scalar_one()
    conn.execute(
        update(Case)
        .where(Case.id == case_id)
        .values(
            subject="",
            unverified_from=None,
            erased_at=utcnow(),
            # A provider's refusal may quote the address ("550 <zelda@...> unknown").
            ack_reason="erased" if mentions(ack_reason, needles) else ack_reason,
        )
    )
    erased, legacy = _erase_audit(conn, case_id, audit_eraser(needles, whole_case=True))
    result.audit_values += erased
    result.audit_rows_before_0020 += legacy
    result.cases.append(case_id)
    # Written after the rows were erased, into the case's own chain: what was done, when,
    # by whom, and counts only.
    audit.append(
        conn,
        actor=actor,
        action="case.erased",
        case_id=case_id,
        after={"reason": reason, "messages": len(messages), "audit_values": erased},
    )


def _erase_messages(
    conn: Connection, messages: Sequence[int], result: Erased, blobs: set[str]
) -> None:
    """Empty these messages' content and drop their raw input and attachments; the rows
    (direction, visibility, time) stay for the figures."""
    if messages:
        _ensure_empty_blob(conn)
        blobs.update(
            s
            for s in conn.execute(
                select(Message.raw_sha256).where(Message.id.in_(messages))
            ).scalars()
            if s
        )
        blobs.update(
            conn.execute(select(Attachment.sha256).where(Attachment.message_id.in_(messages)))
            .scalars()
            .all()
        )
        result.attachments += int(
            conn.execute(
                select(func.count())
                .select_from(Attachment)
                .where(Attachment.message_id.in_(messages))
            ).scalar_one()
        )
        conn.execute(delete(Attachment).where(Attachment.message_id.in_(messages)))
        # Their threading keys, wherever a merge took them (the case's own go with the case).
        conn.execute(delete(MessageRef).where(MessageRef.message_id.in_(messages)))
        # The intake rows stay (their source keys keep a redelivered input a duplicate, so
        # erased content is not filed again), their bytes go.
        intake_ids = select(Receipt.intake_id).where(Receipt.message_id.in_(messages))
        blobs.update(
            conn.execute(
                select(Intake.raw_sha256).where(
                    or_(Intake.message_id.in_(messages), Intake.id.in_(intake_ids))
                )
            ).scalars()
        )
        conn.execute(
            update(Intake)
            .where(or_(Intake.message_id.in_(messages), Intake.id.in_(intake_ids)))
            .values(raw_sha256=EMPTY_SHA256, envelope={"erased": True})
        )
        for message_id in messages:
            # The dedup key may hold a handle ("sms:+1415...:..."); a keyed digest of it
            # still keeps a second copy of the same message out.
            old = conn.execute(
                select(Message.dedup_key).where(Message.id == message_id)
            ).scalar_one()
            conn.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(
                    dedup_key="erased:" + audit.value_digest(old),
                    external_id=None,
                    from_handle="",
                    from_name="",
                    subject="",
                    text="",
                    html=None,
                    html_view=None,
                    auth=None,
                    raw_sha256=None,
                    thread={},
                    meta={"erased": True},
                )
            )
        result.messages += len(messages)


def _erase_surveys(conn: Connection, where: Any, needles: Sequence[str]) -> None:
    """A survey's comment is the person's own words: emptied ("" keeps that there was one).
    The rating stays, as the report's figures do."""
    conn.execute(
        update(CsatSurvey).where(where, CsatSurvey.comment.is_not(None)).values(comment="")
    )
    for row in conn.execute(select(CsatSurvey.id, CsatSurvey.reason).where(where)).all():
        if mentions(row.reason, needles):
            conn.execute(update(CsatSurvey).where(CsatSurvey.id == row.id).values(reason="erased"))


def _erase_merge_records(conn: Connection, case_id: int) -> None:
    """A merge record keeps the threading keys it moved ("phone:+1415...", Message-IDs) and
    both cases' MinHash signatures (a digest of the text) for its undo: both go. An undo of
    it then threads nothing back by those keys and rebuilds the signatures from the (erased)
    messages, as for a merge recorded before signatures were saved."""
    for row in conn.execute(
        select(CaseMerge.id, CaseMerge.moved).where(
            or_(CaseMerge.source_case_id == case_id, CaseMerge.into_case_id == case_id)
        )
    ).all():
        moved = dict(row.moved or {})
        if not moved.get("ref_values") and "signatures" not in moved:
            continue
        moved["ref_values"] = []
        moved.pop("signatures", None)
        conn.execute(update(CaseMerge).where(CaseMerge.id == row.id).values(moved=moved))


def _erase_outbox(conn: Connection, where: Any) -> int:
    ids = [int(i) for i in conn.execute(select(Outbox.id).where(where)).scalars()]
    if not ids:
        return 0
    # Not yet sent: never send an emptied body; it fails, saying why.
    conn.execute(
        update(Outbox)
        .where(Outbox.id.in_(ids), Outbox.state.in_(("queued", "sending")))
        .values(state="failed", claimed_by=None)
    )
    conn.execute(
        update(Outbox)
        .where(Outbox.id.in_(ids))
        .values(recipient="", subject="", body="", payload={}, last_error="erased")
    )
    conn.execute(update(OutboxAttempt).where(OutboxAttempt.outbox_id.in_(ids)).values(error=None))
    return len(ids)


def _erase_dead_letters(conn: Connection, needles: Sequence[str], blobs: set[str]) -> int:
    """Dead letters are raw input that never became a message, so nothing links them to a
    contact: their bytes are searched for the person's handles and names."""
    if not needles:
        return 0
    encoded = [n.encode() for n in needles]
    count = 0
    rows = conn.execute(
        select(DeadLetter.id, DeadLetter.intake_id, DeadLetter.raw_sha256, Blob.data).join(
            Blob, Blob.sha256 == DeadLetter.raw_sha256
        )
    ).all()
    for row in rows:
        data = bytes(row.data).lower()
        if not any(n in data for n in encoded):
            continue
        blobs.add(row.raw_sha256)
        conn.execute(
            update(DeadLetter)
            .where(DeadLetter.id == row.id)
            .values(raw_sha256=EMPTY_SHA256, error="erased", resolved=True)
        )
        if row.intake_id is not None:
            conn.execute(
                update(Intake)
                .where(Intake.id == row.intake_id)
                .values(raw_sha256=EMPTY_SHA256, envelope={"erased": True}, state="failed")
            )
        count += 1
    return count


def _erase_audit(
    conn: Connection, chain: int | None, erase: Callable[[str, Any], bool]
) -> tuple[int, int]:
    """Replace the values `erase` picks in one chain's rows by their digests: (values
    erased, rows of form 1 that would have had a value erased and were left because they no
    longer verify). `chain` None: the rows from before migration 0009, all of form 1.

    A form-1 row's HMAC covers the values themselves, so it is checked first and then
    re-attested (form 3): its HMAC is kept for the chain's links and `attest` covers the row
    as erased. One that does not verify is left as it is, for `parity audit verify` to name.

    Read a page of rows at a time: chain 0 (logins, account changes) grows without bound."""
    erased = legacy = 0
    where = AuditLog.chain.is_(None) if chain is None else AuditLog.chain == chain
    last = 0
    while True:
        rows = conn.execute(
            select(AuditLog)
            .where(where, AuditLog.id > last)
            .order_by(AuditLog.id)
            .limit(_AUDIT_PAGE)
        ).all()
        if not rows:
            return erased, legacy
        last = rows[-1].id
        for row in rows:
            before = audit.erase_values(row.before, erase, path="before")
            after = audit.erase_values(row.after, erase, path="after")
            changed = _count_changes(row.before, before) + _count_changes(row.after, after)
            if not changed:
                continue
            values: dict[str, Any] = {"before": before, "after": after}
            if row.form != audit.FORM_DIGESTED:
                if not audit.row_valid(row, row.prev_hmac):
                    legacy += 1  # changed since written: attesting it would launder the edit
                    continue
                values["form"] = audit.FORM_REATTESTED
                values["attest"] = audit.attest_hmac(
                    row.prev_hmac, row.hmac, row.at, row.actor, row.action, row.case_id,
                    before, after, chain=row.chain, seq=row.seq,
                )  # fmt: skip
            conn.execute(update(AuditLog).where(AuditLog.id == row.id).values(**values))
            erased += changed


_AUDIT_PAGE = 1000


def _count_changes(old: Any, new: Any) -> int:
    if audit.is_erased(new) and not audit.is_erased(old):
        return 1
    if isinstance(old, dict) and isinstance(new, dict):
        return sum(_count_changes(old[k], new[k]) for k in old)
    if isinstance(old, list) and isinstance(new, list):
        return sum(_count_changes(a, b) for a, b in zip(old, new, strict=True))
    return 0


def _json_mentions(value: Any, needles: Sequence[str]) -> bool:
    if isinstance(value, dict):
        return any(mentions(k, needles) or _json_mentions(v, needles) for k, v in value.items())
    if isinstance(value, list):
        return any(_json_mentions(v, needles) for v in value)
    return mentions(value, needles)


def _ensure_empty_blob(conn: Connection) -> None:
    conn.execute(
        insert_ignore(conn, Blob, ["sha256"]).values(
            sha256=EMPTY_SHA256, size=0, data=b"", created_at=utcnow()
        )
    )


def _drop_unused_blobs(conn: Connection, candidates: set[str], result: Erased) -> None:
    """Delete the blobs no row refers to any more (the empty blob erased references point
    at always stays)."""
    removed, kept = uploads.drop_unused_blobs(conn, candidates - {EMPTY_SHA256})
    result.blobs_removed += removed
    result.blobs_kept_shared += kept


def _secure(conn: Connection) -> None:
    """SQLite: overwrite freed content with zeros, so deleted bytes are not left in free
    pages of the file. PostgreSQL keeps dead row versions until VACUUM (see the docs)."""
    if is_sqlite(conn):
        conn.exec_driver_sql("PRAGMA secure_delete = ON")


def _scrub(engine: Engine) -> None:
    """SQLite, after the erasure committed: merge the full-text indexes (their old segments
    still hold the erased words until merged) and fold the write-ahead log into the file
    (its frames hold old page images), so the erased text is in neither file."""
    if not is_sqlite(engine):
        return
    with write(engine) as conn:
        _secure(conn)
        for fts in ("messages_fts", "identities_fts"):
            conn.exec_driver_sql(f"INSERT INTO {fts}({fts}) VALUES ('optimize')")  # noqa: S608
    # Outside any transaction (SQLite refuses a checkpoint inside one): a bare DBAPI cursor.
    raw = engine.raw_connection()
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()


# --- retention -------------------------------------------------------------------------------


def due_for_retention(
    conn: Connection, cutoffs: dict[str, datetime | None], *, limit: int = 500
) -> list[int]:
    """Resolved cases not yet erased whose resolution is older than their channel's cutoff."""
    conditions = [
        and_(Case.channel == channel, Case.resolved_at < cutoff)
        for channel, cutoff in cutoffs.items()
        if cutoff is not None
    ]
    if not conditions:
        return []
    query = (
        select(Case.id)
        .where(Case.erased_at.is_(None), Case.resolved_at.is_not(None), or_(*conditions))
        .order_by(Case.id)
        .limit(limit)
    )
    return [int(i) for i in conn.execute(query).scalars()]


def run_retention(
    engine: Engine,
    default_days: int,
    per_channel: dict[str, int],
    channels: Iterable[str],
    *,
    now: datetime | None = None,
    batch: int = 100,
) -> int:
    """Erase the content of every case past retention, `batch` cases per transaction so a
    large first run does not hold the write lock for long. The number of cases erased."""
    cutoffs = retention_cutoffs(now or utcnow(), default_days, per_channel, channels)
    total = 0
    while True:
        with engine.connect() as conn:
            due = due_for_retention(conn, cutoffs, limit=batch)
        if not due:
            return total
        erase_cases(engine, due, actor="system", reason="retention")
        total += len(due)
