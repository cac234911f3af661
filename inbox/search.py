"""Search over message text, contact handles and references, on either store.

SQLite searches FTS5 tables and PostgreSQL a tsvector column (both kept in sync by the
database, see migration 0003). Both index the same words: runs of letters and digits,
lower-cased. A query is cut into the same words, and every word must match as a prefix, so
"ann@exa" finds ann@example.org and "locked" finds "locked out" on either store. Case
references (C-001042) and Message-IDs are looked up exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Integer, column, or_, select, table, text

from inbox.accounts import Principal
from inbox.casework import summaries
from inbox.db import is_sqlite, read
from inbox.models import Case, Identity, Message, MessageRef, utcnow
from inbox.references import find_references

MAX_WORDS = 8
MAX_WORD = 64
MESSAGE_HITS = 200
_WORD = re.compile(r"[^\W_]+")
# How strongly each kind of match ties a case to the query; results are in this order.
RANK = {"reference": 0, "message_ref": 1, "claims_reference": 2, "handle": 3, "message": 4}


def words(query: str) -> list[str]:
    """The words of a query, as both stores index them (letters and digits, lower-case)."""
    found = [w[:MAX_WORD] for w in _WORD.findall(query.lower())]
    return list(dict.fromkeys(found))[:MAX_WORDS]


def fts5_query(terms: Sequence[str]) -> str:
    # Each word quoted (so no word is read as an FTS5 operator) and matched as a prefix.
    return " AND ".join('"' + t.replace('"', '""') + '"*' for t in terms)


def tsquery(terms: Sequence[str]) -> str:
    # Words are letters and digits only, so nothing here is tsquery syntax but ours.
    return " & ".join(f"{t}:*" for t in terms)


def snippet(body: str, terms: Sequence[str], width: int = 160) -> str:
    """A short excerpt of `body` around the first word that matches a term."""
    flat = " ".join(body.split())
    lower = flat.lower()
    start = -1
    for match in _WORD.finditer(lower):
        if any(match.group().startswith(t) for t in terms):
            start = match.start()
            break
    if start < 0:
        return flat[:width] + ("…" if len(flat) > width else "")
    begin = max(0, start - width // 3)
    end = min(len(flat), begin + width)
    begin = max(0, end - width)  # near the end: show a full window, not a stub
    return ("…" if begin else "") + flat[begin:end] + ("…" if end < len(flat) else "")


# The FTS5 tables are not models (the database keeps them); this is enough to join them.
_MESSAGES_FTS = table("messages_fts", column("rowid", Integer))
_IDENTITIES_FTS = table("identities_fts", column("rowid", Integer))


def _matching(conn: Connection, fts: Any, model: Any, terms: Sequence[str]) -> Any:
    """A WHERE clause (and join) for rows of `model` whose words match every term."""
    if is_sqlite(conn):
        name = fts.name
        return fts, text(f"{name} MATCH :q").bindparams(q=fts5_query(terms))
    column_ref = f"{model.__tablename__}.search_vector"
    return None, text(f"{column_ref} @@ to_tsquery('simple', :q)").bindparams(q=tsquery(terms))


def _message_hits(conn: Connection, terms: Sequence[str]) -> list[Any]:
    fts, condition = _matching(conn, _MESSAGES_FTS, Message, terms)
    query = select(
        Message.id, Message.case_id, Message.received_at, Message.subject, Message.text
    ).where(condition)
    if fts is not None:
        query = query.join(fts, fts.c.rowid == Message.id)
    return list(
        conn.execute(
            query.order_by(Message.received_at.desc(), Message.id.desc()).limit(MESSAGE_HITS)
        )
    )


def _identity_hits(conn: Connection, query: str, terms: Sequence[str]) -> list[Any]:
    exact = query.strip()
    columns = (Identity.id, Identity.contact_id, Identity.kind, Identity.handle)
    rows = {
        r.id: r
        for r in conn.execute(select(*columns).where(Identity.handle.in_({exact, exact.lower()})))
    }
    if terms:
        fts, condition = _matching(conn, _IDENTITIES_FTS, Identity, terms)
        found = select(*columns).where(condition)
        if fts is not None:
            found = found.join(fts, fts.c.rowid == Identity.id)
        for r in conn.execute(found.order_by(Identity.id.desc()).limit(100)):
            rows.setdefault(r.id, r)
    return list(rows.values())


def search(engine: Engine, principal: Principal, query: str, *, limit: int = 20) -> dict[str, Any]:
    """Cases matching `query`, the strongest kind of match first (see RANK), then newest."""
    terms = words(query)
    references = find_references(query.upper())
    matches: dict[int, list[dict[str, Any]]] = {}
    # Cases by how well they matched, then by recency.
    order: dict[int, tuple[int, float]] = {}

    def hit(case_id: int, at: datetime | None, match: dict[str, Any]) -> None:
        rank = RANK[match["kind"]]
        stamp = -(at.timestamp() if at else 0.0)
        order[case_id] = min(order.get(case_id, (rank, stamp)), (rank, stamp))
        found = matches.setdefault(case_id, [])
        if len(found) < 3 and match not in found:
            found.append(match)

    now = utcnow()
    with read(engine) as conn:
        if references:
            for ref_row in conn.execute(
                select(Case.id, Case.reference, Case.claims_reference, Case.last_activity_at).where(
                    or_(Case.reference.in_(references), Case.claims_reference.in_(references))
                )
            ):
                kind = "reference" if ref_row.reference in references else "claims_reference"
                hit(
                    ref_row.id,
                    ref_row.last_activity_at,
                    {"kind": kind, "reference": ref_row.reference},
                )
        bare = query.strip().strip("<>")
        if bare and " " not in bare:
            for msg_ref in conn.execute(
                select(MessageRef.case_id, MessageRef.ref).where(MessageRef.ref == bare).limit(50)
            ):
                hit(msg_ref.case_id, None, {"kind": "message_ref", "ref": msg_ref.ref})
        identities = _identity_hits(conn, query, terms) if query.strip() else []
        if identities:
            by_contact = {i.contact_id: i for i in identities}
            for case_row in conn.execute(
                select(Case.id, Case.contact_id, Case.last_activity_at)
                .where(Case.contact_id.in_(list(by_contact)))
                .order_by(Case.last_activity_at.desc())
                .limit(200)
            ):
                ident = by_contact[case_row.contact_id]
                hit(
                    case_row.id,
                    case_row.last_activity_at,
                    {"kind": "handle", "channel": ident.kind, "handle": ident.handle},
                )
        if terms:
            for row in _message_hits(conn, terms):
                hit(
                    row.case_id,
                    row.received_at,
                    {
                        "kind": "message",
                        "message_id": row.id,
                        "snippet": snippet(f"{row.subject}\n{row.text}", terms),
                    },
                )
        ranked = sorted(order, key=lambda case_id: (order[case_id], case_id))[:limit]
        cases = {c.id: c for c in conn.execute(select(Case).where(Case.id.in_(ranked or [-1])))}
        items = summaries(conn, [cases[i] for i in ranked if i in cases], principal.id, now)
        for item, case_id in zip(items, [i for i in ranked if i in cases], strict=True):
            item["matches"] = matches[case_id]
        return {"query": query, "words": terms, "references": references, "results": items}
