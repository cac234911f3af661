"""Search over message text, contact handles and references, on either store.

SQLite searches FTS5 tables and PostgreSQL a tsvector column (both kept in sync by the
database, see migration 0003). Both index the same words: runs of letters and digits,
lower-cased. A query is cut into the same words, and every word must match as a prefix, so
"ann@exa" finds ann@example.org and "locked" finds "locked out" on either store. Case
references (C-001042) and Message-IDs are looked up exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Integer, column, or_, select, table, text

from inbox.accounts import Principal
from inbox.casework import STATUSES, Invalid, summaries, team_condition
from inbox.db import is_sqlite, read
from inbox.labels import BadTag, normalize_tag
from inbox.models import (
    Case,
    CaseTag,
    Identity,
    Message,
    MessageRef,
    User,
    utcnow,
)
from inbox.references import find_references

MAX_WORDS = 8
MAX_WORD = 64
MESSAGE_HITS = 200
_WORD = re.compile(r"[^\W_]+")
# How strongly each kind of match ties a case to the query; results are in this order.
RANK = {"reference": 0, "message_ref": 1, "claims_reference": 2, "handle": 3, "message": 4}


@dataclass(frozen=True)
class SearchFilter:
    """What narrows a search; every field None means no filter. Filters choose cases, the
    ranking (RANK, then recency) stays the same."""

    statuses: tuple[str, ...] | None = None
    channel: str | None = None
    tag: str | None = None  # normalized (inbox.labels.normalize_tag)
    assignee: str | None = None  # "me", "none" or a user name
    # A team's name, "mine" (any team I am in) or "none" (cases of no team).
    team: str | None = None
    # Cases active during these UTC days (inclusive): opened on or before `until` and
    # with activity on or after `since`.
    since: date | None = None
    until: date | None = None

    def any(self) -> bool:
        return any(v is not None for v in vars(self).values())


def case_conditions(conn: Connection, principal: Principal, filters: SearchFilter) -> list[Any]:
    """SQL conditions on Case for `filters` (raises Invalid for an unknown status or user)."""
    where: list[Any] = []
    if filters.statuses is not None:
        unknown = set(filters.statuses) - set(STATUSES)
        if unknown or not filters.statuses:
            raise Invalid(f"status is one or more of {', '.join(STATUSES)}")
        where.append(Case.status.in_(filters.statuses))
    if filters.channel is not None:
        where.append(Case.id.in_(select(Message.case_id).where(Message.channel == filters.channel)))
    if filters.tag is not None:
        where.append(Case.id.in_(select(CaseTag.case_id).where(CaseTag.tag == filters.tag)))
    if filters.team is not None:
        where.append(team_condition(conn, principal, filters.team))
    if filters.assignee == "me":
        where.append(Case.assignee_id == principal.id)
    elif filters.assignee == "none":
        where.append(Case.assignee_id.is_(None))
    elif filters.assignee is not None:
        user_id = conn.execute(
            select(User.id).where(User.name == filters.assignee.strip().lower())
        ).scalar_one_or_none()
        if user_id is None:
            raise Invalid(f"no user named {filters.assignee!r}")
        where.append(Case.assignee_id == user_id)
    if filters.since is not None:
        where.append(Case.last_activity_at >= datetime.combine(filters.since, time(), UTC))
    if filters.until is not None:
        end = datetime.combine(filters.until + timedelta(days=1), time(), UTC)
        where.append(Case.first_inbound_at < end)
    return where


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


def _message_hits(conn: Connection, terms: Sequence[str], where: Sequence[Any] = ()) -> list[Any]:
    fts, condition = _matching(conn, _MESSAGES_FTS, Message, terms)
    query = select(
        Message.id, Message.case_id, Message.received_at, Message.subject, Message.text
    ).where(condition)
    if fts is not None:
        query = query.join(fts, fts.c.rowid == Message.id)
    if where:
        # Filters go into the text search itself: the newest MESSAGE_HITS matches are
        # counted among the cases the filters allow, not before them.
        query = query.join(Case, Case.id == Message.case_id).where(*where)
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


def search(
    engine: Engine,
    principal: Principal,
    query: str,
    *,
    limit: int = 20,
    filters: SearchFilter = SearchFilter(),
) -> dict[str, Any]:
    """Cases matching `query`, the strongest kind of match first (see RANK), then newest.

    With filters, only cases they allow; with filters and no query, the cases they allow,
    most recently active first. The one ranking of /api/search and the search page.
    """
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
        where = case_conditions(conn, principal, filters)
        if not query.strip():
            listed = list(
                conn.execute(
                    select(Case)
                    .where(*where)
                    .order_by(Case.last_activity_at.desc(), Case.id.desc())
                    .limit(limit)
                )
            )
            items = summaries(conn, listed, principal.id, now)
            for item in items:
                item["matches"] = []
            return {"query": query, "words": [], "references": [], "results": items}
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
            for row in _message_hits(conn, terms, where):
                hit(
                    row.case_id,
                    row.received_at,
                    {
                        "kind": "message",
                        "message_id": row.id,
                        "snippet": snippet(f"{row.subject}\n{row.text}", terms),
                    },
                )
        ranked = sorted(order, key=lambda case_id: (order[case_id], case_id))
        cases: dict[int, Any] = {}
        for start in range(0, len(ranked), 900):
            chunk = ranked[start : start + 900]
            cases.update(
                (c.id, c) for c in conn.execute(select(Case).where(Case.id.in_(chunk), *where))
            )
        ranked = [i for i in ranked if i in cases][:limit]
        items = summaries(conn, [cases[i] for i in ranked if i in cases], principal.id, now)
        for item, case_id in zip(items, [i for i in ranked if i in cases], strict=True):
            item["matches"] = matches[case_id]
        return {"query": query, "words": terms, "references": references, "results": items}


def _day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{name} is a day, YYYY-MM-DD") from None


def filter_from_query(params: Mapping[str, str]) -> SearchFilter:
    """The filters of a search page or /api/search query string (pure: the same parsing for
    both, so a link to a search page and an API call mean the same thing). Empty values are
    no filter."""
    statuses = tuple(s for s in params.get("status", "").split(",") if s) or None
    tag = params.get("tag", "").strip()
    try:
        normalized_tag = normalize_tag(tag) if tag else None
    except BadTag as exc:
        raise Invalid(str(exc)) from None
    return SearchFilter(
        statuses=statuses,
        channel=params.get("channel") or None,
        tag=normalized_tag,
        assignee=params.get("assignee") or None,
        team=params.get("team") or None,
        since=_day(params.get("since", ""), "since"),
        until=_day(params.get("until", ""), "until"),
    )
