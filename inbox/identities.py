"""Linking an identity (an address, a number, an account) to another contact, and unlinking.

Only an agent links: nothing here is called on a guess. Linking moves the identity to the
target contact; when that leaves its old contact with no identity at all, the old contact's
cases move too (they were that identity's cases). Unlinking gives the identity a new contact
of its own and takes along the cases whose inbound messages all came from that identity.
Both are audit-logged with the case ids they moved, so the history says what happened.

Verified: an identity is marked verified when a message from it carries the token of a case
of the same contact, i.e. it answered an acknowledgement we sent to that contact
(`mark_verified`, called by the normalizer). An agent's link does not verify.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, exists, insert, select, update

from inbox import audit
from inbox.accounts import Principal
from inbox.casework import Invalid, NotFound, normalize_reference
from inbox.channels import IDENTITY_KIND_NAMES, fold_handle
from inbox.db import write
from inbox.models import Case, Contact, Identity, Message, utcnow

KINDS = IDENTITY_KIND_NAMES


def normalize_handle(kind: str, handle: str) -> str:
    """The form the normalizer stores: e-mail and reddit names lower-cased."""
    if kind not in KINDS:
        raise Invalid(f"channel is one of {', '.join(KINDS)}")
    return fold_handle(kind, handle, typed=True)


def _identity(conn: Connection, kind: str, handle: str) -> Any:
    row = conn.execute(
        select(Identity).where(
            Identity.kind == kind, Identity.handle == normalize_handle(kind, handle)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no {kind} identity {handle!r}")
    return row


def _identity_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel": row.kind,
        "handle": row.handle,
        "contact_id": row.contact_id,
        "verified": row.verified,
    }


def link(
    engine: Engine,
    principal: Principal,
    kind: str,
    handle: str,
    *,
    contact_id: int | None = None,
    case_reference: str | None = None,
) -> dict[str, Any]:
    if (contact_id is None) == (case_reference is None):
        raise Invalid("give the target contact id or a case reference, not both")
    with write(engine) as conn:
        identity = _identity(conn, kind, handle)
        if case_reference is not None:
            ref = normalize_reference(case_reference)
            contact_id = conn.execute(
                select(Case.contact_id).where(Case.reference == ref)
            ).scalar_one_or_none()
            if contact_id is None:
                raise NotFound(f"no case {ref}")
        elif conn.execute(select(Contact.id).where(Contact.id == contact_id)).first() is None:
            raise NotFound(f"no contact {contact_id}")
        assert contact_id is not None
        old = identity.contact_id
        if old == contact_id:
            return {"identity": _identity_json(identity), "moved_cases": [], "changed": False}
        conn.execute(
            update(Identity).where(Identity.id == identity.id).values(contact_id=contact_id)
        )
        moved: list[int] = []
        left = conn.execute(select(Identity.id).where(Identity.contact_id == old)).first()
        if left is None:
            moved = list(conn.execute(select(Case.id).where(Case.contact_id == old)).scalars())
            if moved:
                conn.execute(update(Case).where(Case.id.in_(moved)).values(contact_id=contact_id))
        audit.append(
            conn,
            actor=principal.actor,
            action="identity.linked",
            before={"identity": f"{identity.kind}:{identity.handle}", "contact_id": old},
            after={"contact_id": contact_id, "moved_case_ids": moved},
        )
        row = conn.execute(select(Identity).where(Identity.id == identity.id)).one()
        return {"identity": _identity_json(row), "moved_cases": _refs(conn, moved), "changed": True}


def unlink(engine: Engine, principal: Principal, kind: str, handle: str) -> dict[str, Any]:
    with write(engine) as conn:
        identity = _identity(conn, kind, handle)
        old = identity.contact_id
        others = conn.execute(
            select(Identity.id).where(Identity.contact_id == old, Identity.id != identity.id)
        ).first()
        if others is None:
            raise Invalid(f"{kind}:{identity.handle} is its contact's only identity already")
        new_contact = int(
            conn.execute(
                insert(Contact)
                .values(name=identity.display_name or identity.handle, created_at=utcnow())
                .returning(Contact.id)
            ).scalar_one()
        )
        conn.execute(
            update(Identity).where(Identity.id == identity.id).values(contact_id=new_contact)
        )
        # Cases with inbound messages only from this identity were this identity's cases.
        foreign = exists().where(
            Message.case_id == Case.id,
            Message.direction == "inbound",
            (Message.identity_id != identity.id) | Message.identity_id.is_(None),
        )
        own = exists().where(Message.case_id == Case.id, Message.identity_id == identity.id)
        moved = list(
            conn.execute(select(Case.id).where(Case.contact_id == old, own, ~foreign)).scalars()
        )
        if moved:
            conn.execute(update(Case).where(Case.id.in_(moved)).values(contact_id=new_contact))
        audit.append(
            conn,
            actor=principal.actor,
            action="identity.unlinked",
            before={"identity": f"{identity.kind}:{identity.handle}", "contact_id": old},
            after={"contact_id": new_contact, "moved_case_ids": moved},
        )
        row = conn.execute(select(Identity).where(Identity.id == identity.id)).one()
        return {"identity": _identity_json(row), "moved_cases": _refs(conn, moved), "changed": True}


def _refs(conn: Connection, case_ids: list[int]) -> list[str]:
    if not case_ids:
        return []
    return sorted(
        str(r) for r in conn.execute(select(Case.reference).where(Case.id.in_(case_ids))).scalars()
    )


def mark_verified(
    conn: Connection, identity_id: int | None, token_case_ids: frozenset[int]
) -> bool:
    """Verify an identity that answered with the token of a case of its own contact."""
    if identity_id is None or not token_case_ids:
        return False
    row = conn.execute(
        select(Identity.contact_id, Identity.verified).where(Identity.id == identity_id)
    ).one()
    if row.verified:
        return False
    same = conn.execute(
        select(Case.id).where(
            Case.id.in_(sorted(token_case_ids)), Case.contact_id == row.contact_id
        )
    ).first()
    if same is None:
        return False
    conn.execute(update(Identity).where(Identity.id == identity_id).values(verified=True))
    audit.append(
        conn,
        actor="system",
        action="identity.verified",
        case_id=same.id,
        after={"identity_id": identity_id, "reason": "answered with the case's token"},
    )
    return True
