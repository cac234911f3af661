"""The agents' work on cases: the queue, leases (claim-next), replies, notes, status,
assignment and presence. Every change is written to the audit log in its own transaction.

Leases make the queue fair and safe: claim-next hands the top unclaimed case to exactly one
agent (PostgreSQL: FOR UPDATE SKIP LOCKED, so agents never wait on each other; SQLite: one
conditional UPDATE under its single writer lock). A lease expires unless renewed, so a case
left by a closed laptop returns to the queue by itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    Boolean,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    String,
    and_,
    bindparam,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)

from inbox import audit, notifications, queries, snooze, suggestions, tags, turns, uploads
from inbox.accounts import Principal, has_role
from inbox.channels import (
    IDENTITY_KINDS,
    MAIL_ADDRESS_CHANNELS,
    MESSAGE_ID_CHANNELS,
    raw_extension,
)
from inbox.compose import (
    MARKDOWN_MAX,
    ComposeRefused,
    Copy,
    check_files,
    check_length,
    copies,
    files_in_public,
    files_in_window,
    formatting,
    html_document,
    markdown_html,
)
from inbox.db import insert_ignore, is_sqlite, read, write
from inbox.models import (
    Attachment,
    Blob,
    Case,
    CaseNote,
    CaseTag,
    CaseViewer,
    Contact,
    Identity,
    Message,
    MessageRef,
    Outbox,
    ReplyDraft,
    Team,
    TeamMember,
    User,
    UTCDateTime,
    utcnow,
)
from inbox.queries import iso, queue_order
from inbox.references import own_message_id
from inbox.replies import (
    IdentityView,
    InboundView,
    ReplyRefused,
    ReplyTarget,
    choose_reply_target,
    offered_channels,
    reply_subject,
    reply_window,
    written_channels,
)

# "merged": absorbed by another case (issue 11); set only by a merge, cleared by its undo.
STATUSES = ("new", "open", "pending_customer", "resolved", "merged")
OPEN_STATUSES = queries.OPEN_STATUSES
# What claim-next hands out: a case waiting on the customer is not ours to work on yet.
CLAIMABLE_STATUSES = ("new", "open")
# What an agent may set; "new" only ever comes from the normalizer.
SETTABLE_STATUSES = ("open", "pending_customer", "resolved")
_REFERENCE = re.compile(r"^C-\d{6,12}$")
MAX_TEXT = 100_000
TIMELINE_LIMIT = 500


class NotFound(LookupError):
    pass


class Conflict(Exception):
    """Another agent holds the case; `holder` names them."""

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class Invalid(ValueError):
    pass


@dataclass(frozen=True)
class Timing:
    lease: timedelta = timedelta(minutes=5)
    presence: timedelta = timedelta(seconds=60)


# --- lookups -------------------------------------------------------------------------------


def normalize_reference(reference: str) -> str:
    value = reference.strip().upper()
    if not _REFERENCE.match(value):
        raise NotFound(f"no case {reference!r}")
    return value


def _case(conn: Connection, reference: str, *, lock: bool = False) -> Any:
    query = select(Case).where(Case.reference == normalize_reference(reference))
    if lock and not is_sqlite(conn):
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFound(f"no case {reference}")
    return row


def _names(
    conn: Connection, ids: set[int | None], known: dict[int, str] | None = None
) -> dict[int, str]:
    """User names by id; those in `known` (usually the caller) cost no query."""
    names = dict(known or {})
    wanted = sorted(i for i in ids if i is not None and i not in names)
    if wanted:
        names.update(
            {
                r.id: r.name
                for r in conn.execute(select(User.id, User.name).where(User.id.in_(wanted)))
            }
        )
    return names


def _lease_json(case: Any, names: dict[int, str], me: int | None, now: datetime) -> Any:
    if case.claimed_by is None or case.lease_until is None or case.lease_until <= now:
        return None
    return {
        "holder": names.get(case.claimed_by),
        "until": iso(case.lease_until),
        "mine": case.claimed_by == me,
    }


def _held_by_other(case: Any, principal: Principal, now: datetime) -> bool:
    return (
        case.claimed_by is not None
        and case.claimed_by != principal.id
        and case.lease_until is not None
        and case.lease_until > now
    )


def _guard(conn: Connection, case: Any, principal: Principal, now: datetime, force: bool) -> None:
    """Refuse a change to a case another agent is working on, unless a manager forces it."""
    if not _held_by_other(case, principal, now):
        return
    holder = _names(conn, {case.claimed_by}).get(case.claimed_by)
    if force and has_role(principal.role, "manager"):
        return
    raise Conflict(f"{case.reference} is being worked on by {holder}", holder)


def _state(case: Any, names: dict[int, str]) -> dict[str, Any]:
    """The fields of a case that actions change, for the audit log's before and after."""
    return {
        "status": case.status,
        "assignee": names.get(case.assignee_id) if case.assignee_id else None,
        "claimed_by": names.get(case.claimed_by) if case.claimed_by else None,
        "lease_until": iso(case.lease_until),
        "resolved_at": iso(case.resolved_at),
        "first_response_at": iso(case.first_response_at),
    }


def _audit_change(
    conn: Connection,
    principal: Principal,
    action: str,
    case_id: int,
    before: Any,
    after_row: Any = None,
    **extra: Any,
) -> None:
    if after_row is None:
        after_row = conn.execute(select(Case).where(Case.id == case_id)).one()
    names = _names(
        conn,
        {before.claimed_by, before.assignee_id, after_row.claimed_by, after_row.assignee_id},
        {principal.id: principal.name},
    )
    audit.append(
        conn,
        actor=principal.actor,
        action=action,
        case_id=case_id,
        before=_state(before, names),
        after={**_state(after_row, names), **extra},
    )


# --- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFilter:
    """What the queue shows. Filters choose cases; the order is always queue_order()."""

    statuses: tuple[str, ...] = OPEN_STATUSES
    channel: str | None = None
    # "me", "none", or a user name; None for everyone's.
    assignee: str | None = None
    # Only cases with this tag (already normalized: inbox.labels.normalize_tag).
    tag: str | None = None
    # A team's name, "mine" (the teams I am in) or "none" (cases of no team).
    team: str | None = None
    # False: snoozed cases are hidden (the queue); True: only snoozed cases are shown.
    snoozed: bool = False


def encode_cursor(case: Any) -> str:
    key = [iso_us(case.due_at), iso_us(case.first_inbound_at), case.id]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def iso_us(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def decode_cursor(cursor: str) -> tuple[datetime, datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        due, first, case_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(due), datetime.fromisoformat(first), int(case_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Invalid("cursor is not one this server handed out") from exc


def team_condition(conn: Connection, principal: Principal, team: str) -> Any:
    """Cases of a team by name, of "mine" (my teams) or of "none" (no team)."""
    wanted = team.strip().lower()
    if wanted == "none":
        return Case.team_id.is_(None)
    if wanted == "mine":
        return Case.team_id.in_(
            select(TeamMember.team_id).where(TeamMember.user_id == principal.id)
        )
    team_id = conn.execute(select(Team.id).where(Team.name == wanted)).scalar_one_or_none()
    if team_id is None:
        raise Invalid(f"no team named {team!r}")
    return Case.team_id == team_id


def _team_names(conn: Connection, team_ids: set[int | None]) -> dict[int, str]:
    ids = sorted(t for t in team_ids if t is not None)
    if not ids:
        return {}
    return {r.id: r.name for r in conn.execute(select(Team.id, Team.name).where(Team.id.in_(ids)))}


def summaries(
    conn: Connection,
    cases: Sequence[Any],
    me: int | None,
    now: datetime,
    known: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """Queue items: the CLI's case shape plus who holds and who is assigned each case.

    Two queries for any number of cases (messages by case, contacts with identities), since
    claim-next and every queue page pay for each round trip.
    """
    ids = [c.id for c in cases]
    channels: dict[int, list[str]] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    for chunk in queries._chunks(ids):
        firsts = []
        for r in conn.execute(
            select(
                Message.case_id,
                Message.channel,
                Message.direction,
                func.min(Message.received_at).label("first"),
                func.count().label("n"),
            )
            .where(Message.case_id.in_(chunk))
            .group_by(Message.case_id, Message.channel, Message.direction)
        ):
            counts[r.case_id] += r.n
            if r.direction == "inbound":
                firsts.append((r.case_id, r.first, r.channel))
        # Every channel a case has seen, in the order it first appeared.
        for case_id, _first, channel in sorted(firsts):
            channels[case_id].append(channel)
    contacts = _contacts(conn, {c.contact_id for c in cases})
    names = _names(conn, {c.claimed_by for c in cases} | {c.assignee_id for c in cases}, known)
    # Issue 11: near-duplicate open cases of other people, shown beside each row.
    similar = suggestions.suggestions_for(conn, ids)
    labels = tags.tags_of(conn, ids)
    fields = tags.fields_of(conn, ids)
    teams_named = _team_names(conn, {c.team_id for c in cases})
    items = []
    for c in cases:
        item = queries._case_summary(
            c, channels.get(c.id, [c.channel]), counts.get(c.id, 0), contacts[c.contact_id]
        )
        item["assignee"] = names.get(c.assignee_id) if c.assignee_id else None
        item["lease"] = _lease_json(c, names, me, now)
        item["suggestions"] = [s.json() for s in similar.get(c.id, [])]
        item["tags"] = labels.get(c.id, [])
        item["fields"] = fields.get(c.id, {})
        item["snooze"] = _snooze_json(c)
        item["team"] = teams_named.get(c.team_id) if c.team_id is not None else None
        items.append(item)
    return items


def _snooze_json(case: Any) -> dict[str, Any] | None:
    """The case's snooze as set (whether it has ended is the queue's question, see snooze)."""
    if getattr(case, "snooze_after_message_id", None) is None:
        return None
    return {"until": iso(case.snoozed_until), "until_reply": True}


def _contacts(conn: Connection, contact_ids: set[int]) -> dict[int, dict[str, Any]]:
    """The same shape as queries' contacts, in one query per chunk."""
    contacts: dict[int, dict[str, Any]] = {}
    for chunk in queries._chunks(sorted(contact_ids)):
        for r in conn.execute(
            select(
                Contact.id,
                Contact.name,
                Identity.id.label("identity_id"),
                Identity.kind,
                Identity.handle,
                Identity.display_name,
                Identity.verified,
                Identity.facts,
            )
            .outerjoin(Identity, Identity.contact_id == Contact.id)
            .where(Contact.id.in_(chunk))
            .order_by(Contact.id, Identity.id)
        ):
            contact = contacts.setdefault(r.id, {"id": r.id, "name": r.name, "identities": []})
            if r.identity_id is not None:
                contact["identities"].append(
                    {
                        "channel": r.kind,
                        "handle": r.handle,
                        "name": r.display_name,
                        "verified": r.verified,
                        "facts": r.facts,
                    }
                )
    return contacts


def queue_page(
    engine: Engine,
    principal: Principal,
    filters: QueueFilter = QueueFilter(),
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """One page of the queue in channel-blind order, and the cursor of the next page."""
    unknown = set(filters.statuses) - set(STATUSES)
    if unknown or not filters.statuses:
        raise Invalid(f"status is one or more of {', '.join(STATUSES)}")
    now = utcnow()
    with read(engine) as conn:
        query = select(Case).where(_status_in(filters.statuses))
        query = query.where(snooze.asleep(now) if filters.snoozed else snooze.awake(now))
        if filters.channel is not None:
            query = query.where(
                Case.id.in_(select(Message.case_id).where(Message.channel == filters.channel))
            )
        if filters.tag is not None:
            query = query.where(
                Case.id.in_(select(CaseTag.case_id).where(CaseTag.tag == filters.tag))
            )
        if filters.team is not None:
            query = query.where(team_condition(conn, principal, filters.team))
        if filters.assignee == "me":
            query = query.where(Case.assignee_id == principal.id)
        elif filters.assignee == "none":
            query = query.where(Case.assignee_id.is_(None))
        elif filters.assignee is not None:
            user_id = conn.execute(
                select(User.id).where(User.name == filters.assignee.lower())
            ).scalar_one_or_none()
            if user_id is None:
                raise Invalid(f"no user named {filters.assignee!r}")
            query = query.where(Case.assignee_id == user_id)
        if cursor:
            due, first, case_id = decode_cursor(cursor)
            query = query.where(
                tuple_(Case.due_at, Case.first_inbound_at, Case.id)
                > tuple_(_utc(due), _utc(first), case_id)
            )
        rows = list(conn.execute(query.order_by(*queue_order()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "cases": summaries(conn, rows, principal.id, now),
            "next_cursor": encode_cursor(rows[-1]) if more and rows else None,
        }


def _utc(value: datetime) -> Any:
    # Bound with the column type, so SQLite compares the same naive-UTC text it stored.
    from sqlalchemy import literal

    from inbox.models import UTCDateTime

    return literal(value, UTCDateTime())


def _status_in(statuses: Sequence[str]) -> Any:
    """`status IN ('new', 'open')` with the values written into the SQL, not bound.

    The queue's partial indexes are defined by such a list, and PostgreSQL can prove that
    a query matches them in a cached (generic) plan only when it sees the values. The
    values come from STATUSES, never from a request.
    """
    unknown = set(statuses) - set(STATUSES)
    if unknown:
        raise Invalid(f"status is one or more of {', '.join(STATUSES)}")
    return Case.status.in_(
        bindparam("statuses", sorted(statuses), expanding=True, literal_execute=True)
    )


# --- leases --------------------------------------------------------------------------------


def _claimable(principal: Principal, now: datetime) -> Any:
    return and_(
        _status_in(CLAIMABLE_STATUSES),
        # A snoozed case is not work yet (inbox.snooze).
        snooze.awake(now),
        or_(Case.lease_until.is_(None), Case.lease_until <= now),
        # A case assigned to someone else waits for them; one assigned to me is mine to take.
        or_(Case.assignee_id.is_(None), Case.assignee_id == principal.id),
    )


def claim_next(
    engine: Engine, principal: Principal, timing: Timing = Timing(), *, now: datetime | None = None
) -> dict[str, Any] | None:
    """Lease the top unclaimed open case to this agent, or None when there is none.

    An agent who already holds a live lease on an open case gets that case again (renewed):
    claim-next is "what should I work on", not a way to hoard the top of the queue.
    """
    now = now or utcnow()
    until = now + timing.lease
    if not is_sqlite(engine):
        return _claim_next_pg(engine, principal, now, until)
    me = {principal.id: principal.name}
    with write(engine) as conn:
        before, row, renewed = _claim_next(conn, principal, now, until)
        if row is None:
            return None
        item = summaries(conn, [row], principal.id, now, me)[0]
        item["already_held"] = renewed
        if not renewed:
            _audit_change(conn, principal, "case.claimed", row.id, before, row, via="claim-next")
        return item


def _claim_next_pg(
    engine: Engine, principal: Principal, now: datetime, until: datetime
) -> dict[str, Any] | None:
    """claim-next on PostgreSQL in four round trips: BEGIN, one statement, the audit row, COMMIT.

    The one statement renews my held lease or takes the top case (SKIP LOCKED), reads what
    the queue item shows (tags, custom fields and team included), and locks the head of that
    case's audit chain; each of those used to be a round trip of its own, and on a busy host
    every round trip costs a wait for the scheduler on both sides. The audit row waits only
    for a writer of the same case, never for agents on other cases
    (docs/architecture/audit.md). A case with a text signature costs one more round trip:
    the probe for its merge suggestions (inbox/suggestions.py).
    """
    with write(engine) as conn:
        row = conn.execute(_CLAIM_NEXT_PG, {"me": principal.id, "now": now, "until": until})
        found = row.one_or_none()
        if found is None:
            return None
        names = {principal.id: principal.name}
        for user_id, name in (
            (found.assignee_id, found.assignee_name),
            (found.before_claimed_by, found.before_holder_name),
        ):
            if user_id is not None and name is not None:
                names.setdefault(user_id, name)
        contact = {
            "id": found.contact_id,
            "name": found.contact_name,
            "identities": found.contact_identities or [],
        }
        item = queries._case_summary(
            found, found.item_channels or [found.channel], found.item_message_count, contact
        )
        item["assignee"] = names.get(found.assignee_id) if found.assignee_id else None
        item["lease"] = _lease_json(found, names, principal.id, now)
        own = {}
        if found.sig_shingles is not None and found.sig_shingles >= suggestions.MIN_SHINGLES:
            own[found.id] = suggestions.Own(
                found.sig_hashvalues, found.contact_id, found.first_inbound_at, found.sig_scheme
            )
        similar = suggestions.suggestions_for(conn, [found.id], own=own)
        item["suggestions"] = [s.json() for s in similar.get(found.id, [])]
        # Read by the one statement, in the order tags.tags_of / fields_of give them.
        item["tags"] = list(found.item_tags or [])
        item["fields"] = dict(found.item_fields or {})
        item["snooze"] = _snooze_json(found)
        item["team"] = found.team_name
        item["already_held"] = found.renewed
        if not found.renewed:
            before = _Lease(found, found.before_claimed_by, found.before_lease_until)
            audit.append(
                conn,
                actor=principal.actor,
                action="case.claimed",
                case_id=found.id,
                before=_state(before, names),
                after={**_state(found, names), "via": "claim-next"},
                head=(found.audit_seq, found.audit_hmac),
            )
        return item


@dataclass(frozen=True)
class _Lease:
    """A case row with its lease as it was before claim-next took it (all else is unchanged)."""

    row: Any
    claimed_by: int | None
    lease_until: datetime | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.row, name)


def _claim_next_sql() -> Any:
    """The statement behind _claim_next_pg, built once: its text never changes, so psycopg
    prepares it and PostgreSQL can keep its plan.

    held:   renew my live leases on claimable cases (the first in queue order is my answer);
    top:    only when I hold none, the top claimable case, skipping rows that other agents
            are claiming right now (FOR UPDATE SKIP LOCKED, as before; the partial index
            ix_cases_claimable serves the ORDER BY ... LIMIT 1);
    taken:  lease it to me, with the lease it had before (for the audit row);
    chosen: the one case of either.
    Data-modifying CTEs all run, once, on one snapshot; held and top can't meet the same
    row, since a live lease of mine is not claimable.
    """
    statuses = ", ".join(f"'{s}'" for s in CLAIMABLE_STATUSES)  # constants, not input
    cols = [c.name for c in Case.__table__.c]
    listed = ", ".join(cols)
    mine = "SELECT team_id FROM team_members WHERE user_id = :me"
    # The tiers of claim-next (docs/agents/teams.md): my teams' cases, then cases of no
    # team, then other teams'. Each tier is its own LIMIT 1 in the one queue order; a tier
    # runs only when the tiers before it found nothing (an uncorrelated NOT EXISTS is a
    # one-time filter), so it locks no row it does not hand out.
    conditions = (
        # The EXISTS is a one-time filter: an agent in no team skips the tier unread.
        f"EXISTS ({mine}) AND team_id IN ({mine})",
        "team_id IS NULL",
        f"team_id IS NOT NULL AND team_id NOT IN ({mine})",
    )
    tiers = []
    for n, condition in enumerate(conditions):
        before = "".join(f" AND NOT EXISTS (SELECT FROM top{i})" for i in range(n))
        tiers.append(
            f"""top{n} AS (
    SELECT id, claimed_by, lease_until FROM cases
    WHERE status IN ({statuses})
      AND (lease_until IS NULL OR lease_until <= :now)
      AND (assignee_id IS NULL OR assignee_id = :me)
      -- inbox.snooze.awake(): not snoozed, or the time passed, or the customer answered.
      AND (snooze_after_message_id IS NULL
           OR (snoozed_until IS NOT NULL AND snoozed_until <= :now)
           OR EXISTS (SELECT FROM messages m WHERE m.case_id = cases.id
                      AND m.direction = 'inbound' AND m.id > cases.snooze_after_message_id))
      AND {condition}
      AND NOT EXISTS (SELECT FROM held){before}
    ORDER BY due_at, first_inbound_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)"""  # noqa: S608 - only constants are formatted in
        )
    tier_ctes = ",\n".join(tiers)
    sql = f"""
WITH held AS (
    UPDATE cases SET lease_until = :until
    WHERE claimed_by = :me AND lease_until > :now AND status IN ({statuses})
    RETURNING {", ".join(f"cases.{c}" for c in cols)}
), {tier_ctes}, top AS (
    SELECT * FROM top0 UNION ALL SELECT * FROM top1 UNION ALL SELECT * FROM top2
), taken AS (
    UPDATE cases SET claimed_by = :me, lease_until = :until
    FROM top WHERE cases.id = top.id
    RETURNING {", ".join(f"cases.{c}" for c in cols)},
              top.claimed_by AS before_claimed_by, top.lease_until AS before_lease_until
), chosen AS (
    SELECT {listed}, true AS renewed,
           NULL::bigint AS before_claimed_by, NULL::timestamp AS before_lease_until
    FROM held
    UNION ALL
    SELECT {listed}, false, before_claimed_by, before_lease_until FROM taken
    ORDER BY due_at, first_inbound_at, id
    LIMIT 1
)
SELECT chosen.*,
    (SELECT array_agg(f.channel ORDER BY f.first, f.channel)
     FROM (SELECT channel, min(received_at) AS first FROM messages
           WHERE case_id = chosen.id AND direction = 'inbound' GROUP BY channel) f
    ) AS item_channels,
    (SELECT count(*) FROM messages WHERE case_id = chosen.id) AS item_message_count,
    contacts.name AS contact_name,
    (SELECT json_agg(json_build_object(
                'channel', i.kind, 'handle', i.handle, 'name', i.display_name,
                'verified', i.verified, 'facts', i.facts) ORDER BY i.id)
     FROM identities i WHERE i.contact_id = chosen.contact_id) AS contact_identities,
    (SELECT name FROM users WHERE id = chosen.assignee_id) AS assignee_name,
    (SELECT name FROM users WHERE id = chosen.before_claimed_by) AS before_holder_name,
    (SELECT array_agg(tag ORDER BY tag) FROM case_tags WHERE case_id = chosen.id) AS item_tags,
    (SELECT json_object_agg(name, value ORDER BY name)
     FROM case_fields WHERE case_id = chosen.id) AS item_fields,
    (SELECT name FROM teams WHERE id = chosen.team_id) AS team_name,
    sig.hashvalues AS sig_hashvalues, sig.shingles AS sig_shingles, sig.scheme AS sig_scheme,
    head.audit_seq, head.audit_hmac
FROM chosen
JOIN contacts ON contacts.id = chosen.contact_id
LEFT JOIN case_signatures sig ON sig.case_id = chosen.id
LEFT JOIN LATERAL {audit.head_sql("chosen.id", "NOT chosen.renewed")} head ON true
"""  # noqa: S608 - only constants and column names are formatted in
    return text(sql).columns(
        *Case.__table__.c,
        column("renewed", Boolean),
        column("before_claimed_by", BigInteger),
        column("before_lease_until", UTCDateTime()),
        column("item_channels", ARRAY(String)),
        column("item_message_count", Integer),
        column("contact_name", String),
        column("contact_identities", JSON),
        column("assignee_name", String),
        column("before_holder_name", String),
        column("item_tags", ARRAY(String)),
        column("item_fields", JSON),
        column("team_name", String),
        column("sig_hashvalues", LargeBinary),
        column("sig_shingles", Integer),
        column("sig_scheme", Integer),
        column("audit_seq", BigInteger),
        column("audit_hmac", String),
    )


_CLAIM_NEXT_PG = _claim_next_sql()


def _renew_held(conn: Connection, principal: Principal, now: datetime, until: datetime) -> Any:
    """Renew my live leases on open cases; the first of them in queue order, or None."""
    held = list(
        conn.execute(
            update(Case)
            .where(
                Case.claimed_by == principal.id,
                Case.lease_until > now,
                _status_in(CLAIMABLE_STATUSES),
            )
            .values(lease_until=until)
            .returning(*Case.__table__.c)
        )
    )
    return min(held, key=lambda r: (r.due_at, r.first_inbound_at, r.id)) if held else None


def _claim_next(
    conn: Connection, principal: Principal, now: datetime, until: datetime
) -> tuple[Any, Any, bool]:
    """(before, after, renewed): my held case renewed, or the top claimable case taken.

    SQLite's path (PostgreSQL's is _claim_next_pg): round trips cost nothing in-process.
    """
    held = _renew_held(conn, principal, now, until)
    if held is not None:
        return held, held, True
    before, after = _take_top(conn, principal, now, until)
    return before, after, False


def team_tiers(principal: Principal) -> tuple[Any, ...]:
    """Claim-next's tiers, in order: cases of my teams, cases of no team, other teams'
    cases (docs/agents/teams.md). Inside each tier the one channel-blind queue order."""
    mine = select(TeamMember.team_id).where(TeamMember.user_id == principal.id)
    return (
        Case.team_id.in_(mine),
        Case.team_id.is_(None),
        and_(Case.team_id.is_not(None), Case.team_id.not_in(mine)),
    )


def _take_top(
    conn: Connection, principal: Principal, now: datetime, until: datetime
) -> tuple[Any, Any]:
    """(the case before, the case after) this agent took the top claimable case, or Nones."""
    before = None
    # One LIMIT 1 per tier rather than one ORDER BY tier: each walks the claimable index
    # in queue order and stops at its first row; round trips cost nothing in-process.
    for tier in team_tiers(principal):
        top = select(Case).where(_claimable(principal, now), tier).order_by(*queue_order()).limit(1)
        before = conn.execute(top).one_or_none()
        if before is not None:
            break
    # One conditional UPDATE; SQLite's writer lock (BEGIN IMMEDIATE) makes it atomic.
    if before is None:
        return None, None
    after = conn.execute(
        update(Case)
        .where(Case.id == before.id, _claimable(principal, now))
        .values(claimed_by=principal.id, lease_until=until)
        .returning(*Case.__table__.c)
    ).one_or_none()
    return before, after


def claim(
    engine: Engine,
    principal: Principal,
    reference: str,
    timing: Timing = Timing(),
    *,
    force: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Claim one case, or renew my lease on it. A manager may take it over with `force`."""
    now = now or utcnow()
    with write(engine) as conn:
        case = _case(conn, reference, lock=True)
        _guard(conn, case, principal, now, force)
        mine_already = (
            case.claimed_by == principal.id
            and case.lease_until is not None
            and (case.lease_until > now)
        )
        after = _change(conn, case.id, claimed_by=principal.id, lease_until=now + timing.lease)
        result = lease_of(conn, after, principal, now)
        if not mine_already:
            # Renewing one's own live lease is a heartbeat, not an action: not audited.
            _audit_change(
                conn,
                principal,
                "case.claimed",
                case.id,
                case,
                after,
                forced=_held_by_other(case, principal, now),
            )
        return result


def release(
    engine: Engine, principal: Principal, reference: str, *, force: bool = False
) -> dict[str, Any]:
    now = utcnow()
    with write(engine) as conn:
        case = _case(conn, reference, lock=True)
        _guard(conn, case, principal, now, force)
        if case.claimed_by is None:
            return lease_of(conn, case, principal, now)
        after = _change(conn, case.id, claimed_by=None, lease_until=None)
        result = lease_of(conn, after, principal, now)
        _audit_change(conn, principal, "case.released", case.id, case, after)
        return result


def _change(conn: Connection, case_id: int, **values: Any) -> Any:
    """Update one case; the row as it is now."""
    return conn.execute(
        update(Case).where(Case.id == case_id).values(**values).returning(*Case.__table__.c)
    ).one()


def lease_of(conn: Connection, case: Any, principal: Principal, now: datetime) -> dict[str, Any]:
    names = _names(conn, {case.claimed_by, case.assignee_id}, {principal.id: principal.name})
    return {
        "reference": case.reference,
        "status": case.status,
        "lease": _lease_json(case, names, principal.id, now),
        "assignee": names.get(case.assignee_id) if case.assignee_id else None,
    }


# --- status, assignment, notes -------------------------------------------------------------
# Each change writes its audit row last: on PostgreSQL the case's audit chain head is then held
# only for the insert and the commit, not while the answer is assembled.


def set_status(
    engine: Engine, principal: Principal, reference: str, status: str, *, force: bool = False
) -> dict[str, Any]:
    if status not in SETTABLE_STATUSES:
        raise Invalid(f"status is one of {', '.join(SETTABLE_STATUSES)}")
    now = utcnow()
    with write(engine) as conn:
        case = _case(conn, reference, lock=True)
        _guard(conn, case, principal, now, force)
        after = _change(conn, case.id, **_status_values(status, now))
        result = lease_of(conn, after, principal, now)
        _audit_change(conn, principal, "case.status", case.id, case, after)
        return result


def _status_values(status: str, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"status": status}
    if status == "resolved":
        values["resolved_at"] = now
        # A resolved case is out of the queue anyway; a snooze must not outlive it.
        values.update(snoozed_until=None, snoozed_by=None, snooze_after_message_id=None)
    else:
        values["resolved_at"] = None
    if status != "open":
        # Resolved or waiting on the customer: the work is done, the lease goes back.
        values.update(claimed_by=None, lease_until=None)
    return values


def assign(
    engine: Engine, principal: Principal, reference: str, assignee: str | None
) -> dict[str, Any]:
    """Assign a case to a user (or to nobody). Agents may take or drop only themselves."""
    now = utcnow()
    with write(engine) as conn:
        case = _case(conn, reference, lock=True)
        target_id: int | None = None
        if assignee is not None:
            row = conn.execute(
                select(User.id, User.disabled).where(User.name == assignee.strip().lower())
            ).one_or_none()
            if row is None or row.disabled:
                raise Invalid(f"no active user named {assignee!r}")
            target_id = row.id
        if not has_role(principal.role, "manager"):
            own = {None, principal.id}
            if target_id not in own or case.assignee_id not in own:
                raise PermissionError("an agent may assign a case only to themselves")
        after = _change(conn, case.id, assignee_id=target_id)
        result = lease_of(conn, after, principal, now)
        _audit_change(conn, principal, "case.assigned", case.id, case, after)
        # In the same transaction: the assignment and its notification stand or fall together.
        notifications.case_assigned(conn, case.id, target_id, case.assignee_id, principal.id, now)
        return result


def change_tags(
    engine: Engine,
    principal: Principal,
    reference: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
) -> dict[str, Any]:
    """Add and remove tags (normalized by the caller, inbox.labels); audited per case."""
    with write(engine) as conn:
        case = _case(conn, reference, lock=True)
        after = tags.change_tags(conn, case.id, principal.actor, add=add, remove=remove)
        return {"reference": case.reference, "tags": after}


def set_field(
    engine: Engine, principal: Principal, reference: str, name: str, value: str | None
) -> dict[str, Any]:
    """Set or clear one custom field (normalized by the caller); audited."""
    with write(engine) as conn:
        case = _case(conn, reference, lock=True)
        fields = tags.set_field(conn, case.id, principal.actor, name, value)
        return {"reference": case.reference, "fields": fields}


def snooze_case(
    engine: Engine,
    principal: Principal,
    reference: str,
    until: datetime | None,
    *,
    force: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Take a case out of the queue until `until` or (always, and alone when `until` is
    None) until the customer writes again. The lease goes back: nobody works a snoozed
    case. Audited with the time."""
    now = now or utcnow()
    until = snooze.check_until(until, now)
    with write(engine) as conn:
        case = _case(conn, reference, lock=True)
        _guard(conn, case, principal, now, force)
        if case.status not in OPEN_STATUSES:
            raise Invalid(f"a {case.status} case is not in the queue to snooze")
        # Snoozed "until the customer answers": an answer is a message newer than these.
        newest = conn.execute(
            select(func.max(Message.id)).where(Message.case_id == case.id)
        ).scalar_one()
        after = _change(
            conn,
            case.id,
            snoozed_until=until,
            snoozed_by=principal.id,
            snooze_after_message_id=newest or 0,
            claimed_by=None,
            lease_until=None,
        )
        result = lease_of(conn, after, principal, now)
        result["snooze"] = _snooze_json(after)
        _audit_change(
            conn,
            principal,
            "case.snoozed",
            case.id,
            case,
            after,
            snoozed_until=iso(until),
            until_reply=True,
        )
        return result


def wake(engine: Engine, principal: Principal, reference: str) -> dict[str, Any]:
    """End a snooze now (the case is back in the queue at its due time)."""
    now = utcnow()
    with write(engine) as conn:
        case = _case(conn, reference, lock=True)
        if case.snooze_after_message_id is None:
            result = lease_of(conn, case, principal, now)
            result["snooze"] = None
            return result
        after = _change(
            conn, case.id, snoozed_until=None, snoozed_by=None, snooze_after_message_id=None
        )
        result = lease_of(conn, after, principal, now)
        result["snooze"] = None
        _audit_change(
            conn,
            principal,
            "case.woken",
            case.id,
            case,
            after,
            snoozed_until=iso(case.snoozed_until),
        )
        return result


def add_note(
    engine: Engine, principal: Principal, reference: str, text: str, timing: Timing = Timing()
) -> dict[str, Any]:
    text = text.strip()
    if not text or len(text) > MAX_TEXT:
        raise Invalid(f"a note has 1 to {MAX_TEXT} characters")
    now = utcnow()
    with write(engine) as conn:
        case = _case(conn, reference)
        note_id = conn.execute(
            insert(CaseNote)
            .values(case_id=case.id, user_id=principal.id, text=text, created_at=now)
            .returning(CaseNote.id)
        ).scalar_one()
        _renew_if_mine(conn, case, principal, now, timing)
        audit.append(
            conn,
            actor=principal.actor,
            action="case.note",
            case_id=case.id,
            after={"note_id": note_id, "text": text},
        )
        return {"id": note_id, "author": principal.name, "text": text, "created_at": iso(now)}


def _renew_if_mine(
    conn: Connection, case: Any, principal: Principal, now: datetime, timing: Timing
) -> None:
    """Working on a case renews the worker's lease on it."""
    if _renewable(case, principal, now):
        conn.execute(update(Case).where(Case.id == case.id).values(lease_until=now + timing.lease))


def _renewable(case: Any, principal: Principal, now: datetime) -> bool:
    return bool(
        case.claimed_by == principal.id and case.lease_until is not None and case.lease_until > now
    )


# --- presence ------------------------------------------------------------------------------


def presence(
    engine: Engine, principal: Principal, reference: str, timing: Timing = Timing()
) -> dict[str, Any]:
    now = utcnow()
    with read(engine) as conn:
        case = _case(conn, reference)
        return _presence(conn, case, principal, now, timing)


def _presence(
    conn: Connection, case: Any, principal: Principal, now: datetime, timing: Timing
) -> dict[str, Any]:
    rows = list(
        conn.execute(
            select(CaseViewer.user_id, CaseViewer.since, CaseViewer.seen_at, User.name)
            .join(User, User.id == CaseViewer.user_id)
            .where(CaseViewer.case_id == case.id, CaseViewer.seen_at > now - timing.presence)
            .order_by(CaseViewer.since)
        )
    )
    names = _names(conn, {case.claimed_by, case.assignee_id})
    return {
        "reference": case.reference,
        "lease": _lease_json(case, names, principal.id, now),
        "assignee": names.get(case.assignee_id) if case.assignee_id else None,
        "viewers": [
            {"user": r.name, "since": iso(r.since), "seen_at": iso(r.seen_at)} for r in rows
        ],
    }


def heartbeat(
    engine: Engine, principal: Principal, reference: str, timing: Timing = Timing()
) -> dict[str, Any]:
    """Says "I am looking at this case": counts for `timing.presence`, renews my lease."""
    now = utcnow()
    with write(engine) as conn:
        case = _case(conn, reference)
        conn.execute(
            insert_ignore(conn, CaseViewer, ["case_id", "user_id"]),
            [{"case_id": case.id, "user_id": principal.id, "since": now, "seen_at": now}],
        )
        conn.execute(
            update(CaseViewer)
            .where(CaseViewer.case_id == case.id, CaseViewer.user_id == principal.id)
            .values(
                seen_at=now,
                # Someone back after a gap starts a new visit.
                since=func.coalesce(
                    select(CaseViewer.since)
                    .where(
                        CaseViewer.case_id == case.id,
                        CaseViewer.user_id == principal.id,
                        CaseViewer.seen_at > now - timing.presence,
                    )
                    .scalar_subquery(),
                    now,
                ),
            )
        )
        _renew_if_mine(conn, case, principal, now, timing)
        case = conn.execute(select(Case).where(Case.id == case.id)).one()
        return _presence(conn, case, principal, now, timing)


def leave(engine: Engine, principal: Principal, reference: str) -> None:
    with write(engine) as conn:
        case = _case(conn, reference)
        conn.execute(
            delete(CaseViewer).where(
                CaseViewer.case_id == case.id, CaseViewer.user_id == principal.id
            )
        )


# --- replies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyRequest:
    text: str
    channel: str | None = None
    handle: str | None = None
    # What the case becomes once answered: by default the ball is with the customer.
    status: str = "pending_customer"
    force: bool = False
    # Copies (where the channel threads by Message-ID: mail), typed or picked.
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    # Upload ids (inbox.uploads) to send as attachments, where the channel carries files.
    uploads: tuple[int, ...] = ()
    # The text is Markdown, sent as HTML with the text as its alternative, on a channel
    # whose formatting is "markdown" (registry fact); elsewhere it is sent as typed.
    markdown: bool = True


@dataclass(frozen=True)
class FileLimits:
    """[inbox] attachments_max_count and attachments_max_bytes, for one reply."""

    max_count: int = 10
    max_bytes: int = 10 * 1024 * 1024


def _reply_facts(conn: Connection, case: Any) -> tuple[list[IdentityView], list[InboundView]]:
    identities = [
        IdentityView(id=r.id, kind=r.kind, handle=r.handle, contact_id=r.contact_id)
        for r in conn.execute(
            select(Identity).where(Identity.contact_id == case.contact_id).order_by(Identity.id)
        )
    ]
    inbound = [
        InboundView(
            id=r.id,
            identity_id=r.identity_id,
            channel=r.channel,
            visibility=r.visibility,
            received_at=r.received_at,
        )
        for r in conn.execute(
            select(
                Message.id,
                Message.identity_id,
                Message.channel,
                Message.visibility,
                Message.received_at,
            ).where(Message.case_id == case.id, Message.direction == "inbound")
        )
    ]
    return identities, inbound


def _channel_history(
    conn: Connection, identity_ids: Sequence[int]
) -> dict[tuple[int, str], datetime]:
    """(identity, channel) -> when that identity last wrote to us on that channel, in any
    case: where a person has written is theirs, not one case's."""
    if not identity_ids:
        return {}
    rows = conn.execute(
        select(Message.identity_id, Message.channel, func.max(Message.received_at))
        .where(Message.identity_id.in_(list(identity_ids)), Message.direction == "inbound")
        .group_by(Message.identity_id, Message.channel)
    )
    return {(row[0], row[1]): row[2] for row in rows if row[0] is not None}


def _written(history: Mapping[tuple[int, str], datetime]) -> dict[int, frozenset[str]]:
    """Identity -> the reply channels it has written on (replies.written_channels)."""
    channels: dict[int, list[str]] = {}
    for identity_id, channel in history:
        channels.setdefault(identity_id, []).append(channel)
    return {i: written_channels(found) for i, found in channels.items()}


def reply(
    engine: Engine,
    principal: Principal,
    reference: str,
    request: ReplyRequest,
    *,
    message_id_domain: str,
    timing: Timing = Timing(),
    limits: FileLimits = FileLimits(),
    now: datetime | None = None,
) -> dict[str, Any]:
    """Queue a reply in the outbox, to an identity of the case's contact, and record it.

    The connector of the channel delivers it; this only decides where it goes and what it
    says, and marks the case's first response. `now`: the clock (tests replay a calendar).
    """
    text = request.text.strip()
    if not text or len(text) > MAX_TEXT:
        raise Invalid(f"a reply has 1 to {MAX_TEXT} characters")
    if request.status not in SETTABLE_STATUSES:
        raise Invalid(f"status is one of {', '.join(SETTABLE_STATUSES)}")
    now = now or utcnow()
    with write(engine) as conn:
        case = _case(conn, reference, lock=True)
        _guard(conn, case, principal, now, request.force)
        identities, inbound = _reply_facts(conn, case)
        history = _channel_history(conn, [i.id for i in identities])
        try:
            target = choose_reply_target(
                case.contact_id,
                identities,
                inbound,
                channel=request.channel,
                handle=request.handle,
                written=_written(history),
            )
        except ReplyRefused as exc:
            raise Invalid(str(exc)) from exc
        extras = _reply_extras(conn, case, principal, target, request, text, limits)
        outbox_id, message_id = _queue_reply(
            conn, case, principal, target, text, now, message_id_domain, extras
        )
        uploads.attach(conn, message_id, extras.files)
        # The draft is what was just sent: nothing is left to keep.
        conn.execute(
            delete(ReplyDraft).where(
                ReplyDraft.user_id == principal.id, ReplyDraft.case_id == case.id
            )
        )
        values = {
            "first_response_at": func.coalesce(Case.first_response_at, now),
            "first_responder_id": func.coalesce(
                Case.first_responder_id, principal.id if principal.id > 0 else None
            ),
            "last_activity_at": now,
            **_status_values(request.status, now),
        }
        after = _change(conn, case.id, **values)
        turns.answered(conn, case.id, now, principal.id if principal.id > 0 else None)
        if request.status == "open" and _renewable(case, principal, now):
            after = _change(conn, case.id, lease_until=now + timing.lease)
        outbox = conn.execute(select(Outbox).where(Outbox.id == outbox_id)).one()
        result = {
            "reference": case.reference,
            "message_id": message_id,
            "outbox": _outbox_json(outbox),
            "case": lease_of(conn, after, principal, now),
        }
        _audit_change(
            conn,
            principal,
            "case.replied",
            case.id,
            case,
            after,
            outbox_id=outbox_id,
            message_id=message_id,
            channel=target.channel,
            recipient=target.handle,
            cc=[c.address for c in extras.cc],
            bcc=[c.address for c in extras.bcc],
            attachments=[f.filename for f in extras.files],
        )
        return result


@dataclass(frozen=True)
class _Extras:
    cc: list[Copy]
    bcc: list[Copy]
    files: list[Any]
    html: str | None


def known_addresses(conn: Connection, case: Any) -> list[str]:
    """The mail addresses this case has seen: its contact's, its messages' senders', and
    earlier replies' copies. A CC chosen from these is known; any other is shown as new."""
    found: list[str] = []
    for r in conn.execute(
        select(Identity.kind, Identity.handle).where(Identity.contact_id == case.contact_id)
    ):
        if IDENTITY_KINDS[r.kind].mail_address:
            found.append(r.handle)
    senders = conn.execute(
        select(Message.from_handle)
        .where(Message.case_id == case.id, Message.channel.in_(sorted(MAIL_ADDRESS_CHANNELS)))
        .distinct()
    ).scalars()
    found += [s for s in senders if s]
    for sent in conn.execute(select(Outbox.payload).where(Outbox.case_id == case.id)).scalars():
        payload = sent or {}
        found += [str(a) for a in [*payload.get("cc", []), *payload.get("bcc", [])]]
    return list(dict.fromkeys(a.lower() for a in found if a))


def _reply_extras(
    conn: Connection,
    case: Any,
    principal: Principal,
    target: ReplyTarget,
    request: ReplyRequest,
    text: str,
    limits: FileLimits,
) -> _Extras:
    """A reply's copies, files and HTML, checked against what its channel can carry."""
    try:
        if (request.cc or request.bcc) and target.channel not in MESSAGE_ID_CHANNELS:
            raise ComposeRefused(
                f"copies (CC, BCC) go only by mail; {target.channel} has one recipient"
            )
        cc, bcc = copies(request.cc, request.bcc, known_addresses(conn, case), target.handle)
        files = uploads.usable(
            conn, user_id=principal.id, case_id=case.id, ids=list(request.uploads)
        )
        check_files(target.channel, [f.size for f in files], limits.max_count, limits.max_bytes)
    except (ComposeRefused, uploads.UploadRefused) as exc:
        raise Invalid(str(exc)) from exc
    # A text the platform would refuse is refused now, while the agent can still shorten it.
    public = False
    if target.in_reply_to_message_id is not None:
        public = (
            conn.execute(
                select(Message.visibility).where(Message.id == target.in_reply_to_message_id)
            ).scalar_one_or_none()
            == "public"
        )
    if files and public:
        # A public post is text only; said now, while the agent can reply privately instead.
        raise Invalid(files_in_public(target.channel))
    if files and not public:
        # Said now, while the agent can still choose: the sender would refuse it later.
        history = _channel_history(conn, [target.identity_id])
        at = history.get((target.identity_id, target.channel))
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)  # SQLite hands back naive UTC
        refusal = files_in_window(target.channel, reply_window(target.channel, at, utcnow())[0])
        if refusal is not None:
            raise Invalid(refusal)
    fit = check_length(target.channel, text, public=public)
    if not fit.fits:
        raise Invalid(f"too long for {target.channel}: {fit.note}")
    html = None
    if request.markdown and formatting(target.channel) == "markdown" and len(text) <= MARKDOWN_MAX:
        html = html_document(markdown_html(text))
    return _Extras(cc, bcc, files, html)


def _outbox_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "channel": row.channel,
        "recipient": row.recipient,
        "subject": row.subject,
        "state": row.state,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "message_id_header": row.message_id_header,
        "provider_id": row.provider_id,
        "created_at": iso(row.created_at),
        "sent_at": iso(row.sent_at),
    }


def _queue_reply(
    conn: Connection,
    case: Any,
    principal: Principal,
    target: ReplyTarget,
    text: str,
    now: datetime,
    domain: str,
    extras: _Extras | None = None,
) -> tuple[int, int]:
    answered = None
    if target.in_reply_to_message_id is not None:
        answered = conn.execute(
            select(Message).where(Message.id == target.in_reply_to_message_id)
        ).one()
    payload: dict[str, Any] = {"author": principal.name, "identity_id": target.identity_id}
    if extras is not None:
        if extras.cc:
            payload["cc"] = [c.address for c in extras.cc]
        if extras.bcc:
            payload["bcc"] = [c.address for c in extras.bcc]
        if extras.files:
            payload["attachments"] = uploads.payload(extras.files)
        if extras.html:
            payload["html"] = extras.html
    subject = ""
    header: str | None = None
    thread: dict[str, Any] = {"in_reply_to": [], "references": [], "conversation": []}
    visibility = "private"
    if target.channel in MESSAGE_ID_CHANNELS:
        subject = reply_subject(
            answered.subject if answered is not None and answered.subject else case.subject,
            case.reference,
            case.token,
        )
        # Kept without angle brackets, like an acknowledgement's: a delivery report names it
        # that way (inbox.references.bare_message_id), and the relay writes the brackets.
        header = own_message_id(case.reference, case.token, secrets.token_hex(8), domain)
        if answered is not None and answered.external_id:
            earlier = [str(r) for r in (answered.thread or {}).get("references", [])]
            references = [*earlier[-20:], answered.external_id]
            thread.update(in_reply_to=[answered.external_id], references=references)
            payload.update(
                in_reply_to=f"<{answered.external_id}>",
                references=[f"<{r}>" for r in references],
            )
    elif answered is not None:
        # A public mention gets a public reply, a DM a DM: the customer chose the room.
        visibility = answered.visibility
        payload.update(in_reply_to_external_id=answered.external_id, visibility=answered.visibility)
    outbox_id = conn.execute(
        insert(Outbox)
        .values(
            case_id=case.id,
            kind="reply",
            channel=target.channel,
            recipient=target.handle,
            subject=subject,
            body=text,
            message_id_header=header,
            payload=payload,
            state="queued",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            created_by=principal.name,
        )
        .returning(Outbox.id)
    ).scalar_one()
    message_id = conn.execute(
        insert(Message)
        .values(
            case_id=case.id,
            identity_id=None,
            channel=target.channel,
            direction="outbound",
            visibility=visibility,
            dedup_key=f"outbox:{outbox_id}",
            external_id=header,
            from_handle="",
            from_name=principal.name,
            subject=subject,
            text=text,
            html=None,
            sent_at=None,
            received_at=now,
            raw_sha256=None,
            thread=thread,
            automated=None,
            meta={
                "kind": "reply",
                "outbox_id": outbox_id,
                "to": target.handle,
                "author": principal.name,
                **(
                    {
                        "cc": [c.address for c in extras.cc],
                        "bcc": [c.address for c in extras.bcc],
                        "markdown": extras.html is not None,
                    }
                    if extras is not None and (extras.cc or extras.bcc or extras.html)
                    else {}
                ),
            },
        )
        .returning(Message.id)
    ).scalar_one()
    if header:
        # The customer's answer names this id in In-Reply-To: it threads back here.
        conn.execute(insert(MessageRef).values(ref=header, case_id=case.id, message_id=message_id))
    return outbox_id, message_id


# --- the case page's data ------------------------------------------------------------------


def case_view(
    engine: Engine, principal: Principal, reference: str, timing: Timing = Timing()
) -> dict[str, Any]:
    """A case as `parity case show --json` has it, plus the contact's whole timeline across
    channels and cases, notes, who holds and views it, and where a reply would go."""
    reference = normalize_reference(reference)
    detail = queries.case_detail(engine, reference)
    if detail is None:
        raise NotFound(f"no case {reference}")
    now = utcnow()
    with read(engine) as conn:
        case = _case(conn, reference)
        detail.update(_presence(conn, case, principal, now, timing))
        contact_cases = list(
            conn.execute(
                select(Case)
                .where(Case.contact_id == case.contact_id)
                .order_by(Case.first_inbound_at, Case.id)
            )
        )
        detail["contact_cases"] = [
            {
                "reference": c.reference,
                "status": c.status,
                "channel": c.channel,
                "subject": c.subject,
                "first_inbound_at": iso(c.first_inbound_at),
                "last_activity_at": iso(c.last_activity_at),
            }
            for c in contact_cases
        ]
        refs = {c.id: c.reference for c in contact_cases} | {case.id: case.reference}
        detail["history"] = _history(conn, case, contact_cases)
        detail["tags"] = tags.tags_of(conn, [case.id]).get(case.id, [])
        detail["fields"] = tags.fields_of(conn, [case.id]).get(case.id, {})
        detail["snooze"] = _snooze_json(case)
        detail["team"] = _team_names(conn, {case.team_id}).get(case.team_id)
        detail["notes"] = _notes(conn, [case.id])
        detail["suggestions"] = [
            s.json() for s in suggestions.suggestions_for(conn, [case.id])[case.id]
        ]
        detail["timeline"], detail["timeline_truncated"] = _timeline(conn, refs)
        detail["outbox"] = [
            _outbox_json(r)
            for r in conn.execute(
                select(Outbox).where(Outbox.case_id == case.id).order_by(Outbox.id)
            )
        ]
        identities, inbound = _reply_facts(conn, case)
        history = _channel_history(conn, [i.id for i in identities])
        written = _written(history)
        # For the reply form's CC/BCC picker: a typed address not among these is "new".
        detail["known_addresses"] = known_addresses(conn, case)
        # The channels that reach each identity: a number by SMS, and by WhatsApp where it
        # wrote on WhatsApp (replies.offered_channels). The reply form says before sending
        # what a platform's window will do to a reply.
        detail["reply_targets"] = []
        detail["reply_notes"] = {}
        for i in identities:
            for channel in offered_channels(i.kind, written.get(i.id, frozenset())):
                detail["reply_targets"].append({"channel": channel, "handle": i.handle})
                note = _window_note(channel, i.id, inbound, history.get((i.id, channel)), now)
                if note is not None:
                    detail["reply_notes"][f"{channel}|{i.handle}"] = note
        try:
            default = choose_reply_target(case.contact_id, identities, inbound, written=written)
            detail["default_reply"] = {"channel": default.channel, "handle": default.handle}
        except ReplyRefused:
            detail["default_reply"] = None
        return detail


HISTORY_MESSAGES = 20
HISTORY_SNIPPET = 200


def _history(conn: Connection, case: Any, contact_cases: Sequence[Any]) -> dict[str, Any]:
    """Beside the case: the contact's other cases (newest first), and the last 20 messages
    of the contact on any channel and in any case, newest first, each a short excerpt. The
    identities, verified or not, are the case's `contact.identities`."""
    others = sorted(
        (c for c in contact_cases if c.id != case.id),
        key=lambda c: (c.last_activity_at, c.id),
        reverse=True,
    )
    labels = tags.tags_of(conn, [c.id for c in others])
    refs = {c.id: c.reference for c in contact_cases}
    recent = conn.execute(
        select(
            Message.id,
            Message.case_id,
            Message.channel,
            Message.direction,
            Message.visibility,
            Message.received_at,
            Message.subject,
            func.substr(Message.text, 1, HISTORY_SNIPPET + 1).label("start"),
        )
        .where(Message.case_id.in_(list(refs) or [-1]))
        .order_by(Message.received_at.desc(), Message.id.desc())
        .limit(HISTORY_MESSAGES)
    )
    return {
        "other_cases": [
            {
                "reference": c.reference,
                "status": c.status,
                "channel": c.channel,
                "subject": c.subject,
                "last_activity_at": iso(c.last_activity_at),
                "tags": labels.get(c.id, []),
            }
            for c in others
        ],
        "recent_messages": [
            {
                "id": m.id,
                "case": refs.get(m.case_id),
                "channel": m.channel,
                "direction": m.direction,
                "visibility": m.visibility,
                "at": iso(m.received_at),
                "subject": m.subject,
                "excerpt": _excerpt(m.start or ""),
            }
            for m in recent
        ],
    }


def _excerpt(text: str, width: int = HISTORY_SNIPPET) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _window_note(
    channel: str,
    identity_id: int,
    inbound: Sequence[InboundView],
    last_written: datetime | None,
    now: datetime,
) -> str | None:
    """What the platform's reply window does to a private reply to this identity now. The
    window opens at their last message on the channel in any case (as the sender sees it)."""
    written = [m for m in inbound if m.identity_id == identity_id and m.channel == channel]
    last = max(written, key=lambda m: (m.received_at, m.id), default=None)
    if last is not None and last.visibility == "public":
        return None  # answered by a public reply, which no window limits
    at = last_written
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    return reply_window(channel, at, now)[1]


def _notes(conn: Connection, case_ids: Sequence[int]) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(CaseNote.id, CaseNote.case_id, CaseNote.text, CaseNote.created_at, User.name)
        .join(User, User.id == CaseNote.user_id)
        .where(CaseNote.case_id.in_(case_ids))
        .order_by(CaseNote.created_at, CaseNote.id)
    )
    return [
        {
            "id": r.id,
            "case_id": r.case_id,
            "author": r.name,
            "text": r.text,
            "created_at": iso(r.created_at),
        }
        for r in rows
    ]


def _timeline(conn: Connection, refs: dict[int, str]) -> tuple[list[dict[str, Any]], bool]:
    """Every message and note of these cases, oldest first, the newest TIMELINE_LIMIT."""
    ids = list(refs)
    messages = list(
        conn.execute(
            select(Message)
            .where(Message.case_id.in_(ids))
            .order_by(Message.received_at.desc(), Message.id.desc())
            .limit(TIMELINE_LIMIT + 1)
        )
    )
    truncated = len(messages) > TIMELINE_LIMIT
    messages = messages[:TIMELINE_LIMIT]
    attachments: dict[int, list[dict[str, Any]]] = defaultdict(list)
    message_ids = [m.id for m in messages]
    for chunk in queries._chunks(message_ids):
        for a in conn.execute(
            select(Attachment).where(Attachment.message_id.in_(chunk)).order_by(Attachment.id)
        ):
            attachments[a.message_id].append(
                {"id": a.id, "filename": a.filename, "content_type": a.content_type, "size": a.size}
            )
    outbox_ids = [m.meta.get("outbox_id") for m in messages if (m.meta or {}).get("outbox_id")]
    deliveries = (
        {
            r.id: {
                "state": r.state,
                "attempts": r.attempts,
                "last_error": r.last_error,
                "provider_id": r.provider_id,
            }
            for r in conn.execute(select(Outbox).where(Outbox.id.in_(outbox_ids)))
        }
        if outbox_ids
        else {}
    )
    entries: list[dict[str, Any]] = [
        {
            "kind": "message",
            "case": refs[m.case_id],
            "id": m.id,
            "at": iso(m.received_at),
            "channel": m.channel,
            "direction": m.direction,
            "visibility": m.visibility,
            "from": m.from_handle,
            "from_name": m.from_name,
            "subject": m.subject,
            "text": m.text,
            "has_raw": m.raw_sha256 is not None,
            "attachments": attachments.get(m.id, []),
            "delivery": deliveries.get((m.meta or {}).get("outbox_id", -1)),
            # An agent's reply's copies (issue 22): agents see the BCC too, the customer not.
            "cc": list((m.meta or {}).get("cc") or []) if m.direction == "outbound" else [],
            "bcc": list((m.meta or {}).get("bcc") or []) if m.direction == "outbound" else [],
            # Sender authentication of inbound email (issue 16), shown per message.
            "auth": m.auth,
        }
        for m in messages
    ]
    for note in _notes(conn, ids):
        entries.append(
            {
                "kind": "note",
                "case": refs[note["case_id"]],
                "id": note["id"],
                "at": note["created_at"],
                "author": note["author"],
                "text": note["text"],
            }
        )
    entries.sort(key=lambda e: (e["at"] or "", e["kind"] == "note", e["id"]))
    return entries, truncated


# --- downloads -----------------------------------------------------------------------------


def attachment_blob(
    engine: Engine, principal: Principal, attachment_id: int
) -> tuple[bytes, str, str, str]:
    """(data, declared content type, filename, case reference) of an attachment."""
    with write(engine) as conn:
        row = conn.execute(
            select(
                Attachment.sha256,
                Attachment.content_type,
                Attachment.filename,
                Blob.data,
                Case.reference,
                Case.id.label("case_id"),
            )
            .join(Blob, Blob.sha256 == Attachment.sha256)
            .join(Message, Message.id == Attachment.message_id)
            .join(Case, Case.id == Message.case_id)
            .where(Attachment.id == attachment_id)
        ).one_or_none()
        if row is None:
            raise NotFound(f"no attachment {attachment_id}")
        audit.append(
            conn,
            actor=principal.actor,
            action="attachment.downloaded",
            case_id=row.case_id,
            after={"attachment_id": attachment_id, "sha256": row.sha256},
        )
        return bytes(row.data), row.content_type, row.filename, row.reference


def raw_source(engine: Engine, principal: Principal, message_id: int) -> tuple[bytes, str, str]:
    """(raw bytes as received, channel, file name) of a message."""
    with write(engine) as conn:
        row = conn.execute(
            select(Message.channel, Message.case_id, Blob.data, Case.reference)
            .join(Blob, Blob.sha256 == Message.raw_sha256)
            .join(Case, Case.id == Message.case_id)
            .where(Message.id == message_id)
        ).one_or_none()
        if row is None:
            raise NotFound(f"no raw source for message {message_id}")
        audit.append(
            conn,
            actor=principal.actor,
            action="message.raw_downloaded",
            case_id=row.case_id,
            after={"message_id": message_id},
        )
        extension = raw_extension(row.channel)
        return bytes(row.data), row.channel, f"{row.reference}-message-{message_id}.{extension}"


# --- the audit log, read side --------------------------------------------------------------


def audit_entries(
    engine: Engine, *, reference: str | None = None, limit: int = 100, before_id: int | None = None
) -> list[dict[str, Any]]:
    from inbox.models import AuditLog

    with read(engine) as conn:
        query = select(
            AuditLog.id,
            AuditLog.at,
            AuditLog.actor,
            AuditLog.action,
            AuditLog.before,
            AuditLog.after,
            Case.reference,
        ).outerjoin(Case, Case.id == AuditLog.case_id)
        if reference is not None:
            case = _case(conn, reference)
            query = query.where(AuditLog.case_id == case.id)
        if before_id is not None:
            query = query.where(AuditLog.id < before_id)
        rows = conn.execute(query.order_by(AuditLog.id.desc()).limit(limit))
        return [
            {
                "id": r.id,
                "at": iso(r.at),
                "actor": r.actor,
                "action": r.action,
                "case": r.reference,
                "before": r.before,
                "after": r.after,
            }
            for r in rows
        ]


# --- the agent's own settings --------------------------------------------------------------

AFTER_DONE = ("stay", "next")


def after_done(engine: Engine, principal: Principal, default: str) -> dict[str, Any]:
    """Where this agent goes after resolving or replying: their choice, else the default."""
    with read(engine) as conn:
        chosen = conn.execute(
            select(User.after_done).where(User.id == principal.id)
        ).scalar_one_or_none()
    return {"after_done": chosen or default, "after_done_own": chosen}


def set_after_done(
    engine: Engine, principal: Principal, value: str | None, default: str
) -> dict[str, Any]:
    """Set (or, with None, go back to the global default) this agent's after-done choice."""
    if value is not None and value not in AFTER_DONE:
        raise Invalid(f"after_done is one of {', '.join(AFTER_DONE)}")
    with write(engine) as conn:
        conn.execute(update(User).where(User.id == principal.id).values(after_done=value))
    return {"after_done": value or default, "after_done_own": value}
