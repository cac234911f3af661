"""Tags and custom fields on cases, set by agents and by content rules.

A tag is a short label ("refund", "vip"); a custom field is a named value ("order" =
"4471"). Both are normalized here by small pure functions, so what an agent types, what a
rule sets and what a filter asks for compare equal: tags are lower-case words joined by
hyphens, field names lower-case identifiers, values trimmed single-line text.

Every change is audited on its case (`case.tagged`, `case.field`). Reading tags for a page of
cases is one query (`tags_of`), so queue rows and search results show them at no extra cost
per row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, delete, select

from inbox import audit
from inbox.db import insert_ignore
from inbox.labels import MAX_FIELDS_PER_CASE, MAX_TAGS_PER_CASE, BadTag, labelling_rules
from inbox.models import CaseField, CaseTag, utcnow


def tags_of(conn: Connection, case_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each case's tags, sorted, for any number of cases in one query per 900."""
    found: dict[int, list[str]] = defaultdict(list)
    ids = list(case_ids)
    for start in range(0, len(ids), 900):
        for row in conn.execute(
            select(CaseTag.case_id, CaseTag.tag)
            .where(CaseTag.case_id.in_(ids[start : start + 900]))
            .order_by(CaseTag.case_id, CaseTag.tag)
        ):
            found[row.case_id].append(row.tag)
    return found


def fields_of(conn: Connection, case_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    found: dict[int, dict[str, str]] = defaultdict(dict)
    ids = list(case_ids)
    for start in range(0, len(ids), 900):
        for row in conn.execute(
            select(CaseField.case_id, CaseField.name, CaseField.value)
            .where(CaseField.case_id.in_(ids[start : start + 900]))
            .order_by(CaseField.case_id, CaseField.name)
        ):
            found[row.case_id][row.name] = row.value
    return found


def change_tags(
    conn: Connection,
    case_id: int,
    actor: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
) -> list[str]:
    """Add and remove tags (already normalized) inside the caller's transaction; the case's
    tags after. Audited when anything changed; adding a tag the case has is no change."""
    before = tags_of(conn, [case_id]).get(case_id, [])
    wanted = [t for t in add if t not in before]
    dropped = [t for t in remove if t in before and t not in add]
    if len(before) + len(wanted) - len(dropped) > MAX_TAGS_PER_CASE:
        raise BadTag(f"a case has at most {MAX_TAGS_PER_CASE} tags")
    now = utcnow()
    for tag in wanted:
        conn.execute(
            insert_ignore(conn, CaseTag, ["case_id", "tag"]).values(
                case_id=case_id, tag=tag, set_by=actor, created_at=now
            )
        )
    if dropped:
        conn.execute(delete(CaseTag).where(CaseTag.case_id == case_id, CaseTag.tag.in_(dropped)))
    after = sorted((set(before) | set(wanted)) - set(dropped))
    if wanted or dropped:
        audit.append(
            conn,
            actor=actor,
            action="case.tagged",
            case_id=case_id,
            before={"tags": sorted(before)},
            after={"tags": after, "added": wanted, "removed": dropped},
        )
    return after


def set_field(
    conn: Connection, case_id: int, actor: str, name: str, value: str | None
) -> dict[str, str]:
    """Set (or clear, with None) one custom field, audited; the case's fields after."""
    fields = fields_of(conn, [case_id]).get(case_id, {})
    old = fields.get(name)
    if old == value:
        return dict(fields)
    if value is not None and old is None and len(fields) >= MAX_FIELDS_PER_CASE:
        raise BadTag(f"a case has at most {MAX_FIELDS_PER_CASE} fields")
    conn.execute(delete(CaseField).where(CaseField.case_id == case_id, CaseField.name == name))
    if value is not None:
        conn.execute(
            insert_ignore(conn, CaseField, ["case_id", "name"]).values(
                case_id=case_id, name=name, value=value, set_by=actor, updated_at=utcnow()
            )
        )
        fields[name] = value
    else:
        fields.pop(name, None)
    audit.append(
        conn,
        actor=actor,
        action="case.field",
        case_id=case_id,
        before={"field": name, "value": old},
        after={"field": name, "value": value},
    )
    return dict(sorted(fields.items()))


def apply_rules(conn: Connection, case_id: int, rules: Iterable[Any], haystack: str) -> None:
    """Tag a new case and set its fields by the content rules its text matches; each rule
    is the actor of its own audit rows ("rule:<name>"), so an agent sees why a tag is there."""
    for rule in labelling_rules(rules, haystack):
        actor = f"rule:{rule.name}"[:128]
        if rule.tags:
            change_tags(conn, case_id, actor, add=rule.tags)
        for name, value in rule.fields.items():
            set_field(conn, case_id, actor, name, value)
