"""Teams of agents (issue 22): who is in which team, a case's team, routing a new case to a
team and assigning it to a member when the team asks for that.

Every change is audited: a team's creation, settings and members (`team.*`, no case), a
case's team (`case.team`) and an automatic assignment (`case.assigned`, actor
"team:<name>"). The decisions themselves are pure functions in inbox/routing.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, update

from inbox import audit, casework
from inbox.accounts import Principal
from inbox.config import AUTO_ASSIGN_MODES, TEAM_NAME, RoutingRule
from inbox.db import insert_ignore, is_sqlite, read, write
from inbox.models import Case, Team, TeamMember, User, utcnow
from inbox.queries import OPEN_STATUSES
from inbox.routing import CaseFacts, Member, pick_assignee, route

MAX_MEMBERS = 500


def normalize_team(name: str) -> str:
    value = name.strip().lower()
    if not TEAM_NAME.match(value):
        raise casework.Invalid(
            "a team name is 1-64 lower-case letters, digits, '.', '_' or '-', "
            "a letter or digit first"
        )
    return value


def _check_mode(mode: str) -> str:
    if mode not in AUTO_ASSIGN_MODES:
        raise casework.Invalid(f"auto_assign is one of {', '.join(AUTO_ASSIGN_MODES)}")
    return mode


def _team(conn: Connection, name: str, *, lock: bool = False) -> Any:
    query = select(Team).where(Team.name == normalize_team(name))
    if lock and not is_sqlite(conn):
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise casework.NotFound(f"no team {name!r}")
    return row


def _members(conn: Connection, team_ids: Sequence[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {t: [] for t in team_ids}
    if not team_ids:
        return found
    rows = conn.execute(
        select(TeamMember.team_id, User.name)
        .join(User, User.id == TeamMember.user_id)
        .where(TeamMember.team_id.in_(list(team_ids)))
        .order_by(TeamMember.team_id, User.name)
    )
    for row in rows:
        found[row.team_id].append(row.name)
    return found


def _team_json(conn: Connection, row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "auto_assign": row.auto_assign,
        "members": _members(conn, [row.id])[row.id],
    }


def list_teams(engine: Engine) -> list[dict[str, Any]]:
    """Every team with its members, by name: everyone may read this (the pickers)."""
    with read(engine) as conn:
        rows = list(conn.execute(select(Team).order_by(Team.name)))
        members = _members(conn, [r.id for r in rows])
        return [
            {"name": r.name, "auto_assign": r.auto_assign, "members": members[r.id]} for r in rows
        ]


def create_team(engine: Engine, actor: str, name: str, auto_assign: str = "off") -> dict[str, Any]:
    team = normalize_team(name)
    mode = _check_mode(auto_assign)
    with write(engine) as conn:
        if conn.execute(select(Team.id).where(Team.name == team)).first() is not None:
            raise casework.Conflict(f"a team named {team!r} exists")
        conn.execute(
            insert_ignore(conn, Team, ["name"]).values(
                name=team, auto_assign=mode, created_at=utcnow()
            )
        )
        audit.append(
            conn, actor=actor, action="team.created", after={"team": team, "auto_assign": mode}
        )
        return _team_json(conn, _team(conn, team))


def set_auto_assign(engine: Engine, actor: str, name: str, auto_assign: str) -> dict[str, Any]:
    mode = _check_mode(auto_assign)
    with write(engine) as conn:
        row = _team(conn, name, lock=True)
        if row.auto_assign != mode:
            conn.execute(update(Team).where(Team.id == row.id).values(auto_assign=mode))
            audit.append(
                conn,
                actor=actor,
                action="team.updated",
                before={"team": row.name, "auto_assign": row.auto_assign},
                after={"team": row.name, "auto_assign": mode},
            )
        return _team_json(conn, _team(conn, name))


def _user_ids(conn: Connection, names: Iterable[str]) -> dict[str, int]:
    wanted = {n.strip().lower() for n in names}
    found = {
        r.name: r.id for r in conn.execute(select(User.id, User.name).where(User.name.in_(wanted)))
    }
    missing = sorted(wanted - set(found))
    if missing:
        raise casework.Invalid(f"no user named {missing[0]!r}")
    return found


def set_members(
    engine: Engine,
    actor: str,
    name: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    replace: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Add and remove members, or (`replace`) make the members exactly these; audited."""
    with write(engine) as conn:
        row = _team(conn, name, lock=True)
        before = _members(conn, [row.id])[row.id]
        if replace is not None:
            if len(set(replace)) > MAX_MEMBERS:
                raise casework.Invalid(f"a team has at most {MAX_MEMBERS} members")
            wanted = _user_ids(conn, replace)
            add = [n for n in wanted if n not in before]
            remove = [n for n in before if n not in wanted]
        ids = _user_ids(conn, [*add, *remove])
        added = sorted({n.strip().lower() for n in add} - set(before))
        removed = sorted({n.strip().lower() for n in remove} & set(before) - set(added))
        if len(before) + len(added) - len(removed) > MAX_MEMBERS:
            raise casework.Invalid(f"a team has at most {MAX_MEMBERS} members")
        now = utcnow()
        for user in added:
            conn.execute(
                insert_ignore(conn, TeamMember, ["team_id", "user_id"]).values(
                    team_id=row.id, user_id=ids[user], added_at=now
                )
            )
        if removed:
            conn.execute(
                delete(TeamMember).where(
                    TeamMember.team_id == row.id,
                    TeamMember.user_id.in_([ids[u] for u in removed]),
                )
            )
        if added or removed:
            audit.append(
                conn,
                actor=actor,
                action="team.members",
                before={"team": row.name, "members": before},
                after={
                    "team": row.name,
                    "members": sorted((set(before) | set(added)) - set(removed)),
                    "added": added,
                    "removed": removed,
                },
            )
        return _team_json(conn, row)


def team_names(conn: Connection, team_ids: Iterable[int | None]) -> dict[int, str]:
    ids = sorted({t for t in team_ids if t is not None})
    if not ids:
        return {}
    return {r.id: r.name for r in conn.execute(select(Team.id, Team.name).where(Team.id.in_(ids)))}


def set_case_team(
    engine: Engine, principal: Principal, reference: str, team: str | None
) -> dict[str, Any]:
    """Move a case to a team (or to none); audited. Any agent may: routing is a guess, and
    whoever reads the case knows better. A team that auto-assigns then assigns the case if
    nobody has it."""
    with write(engine) as conn:
        case = casework._case(conn, reference, lock=True)
        # The team row is locked for its round-robin turn (see route_new_case).
        row = _team(conn, team, lock=True) if team is not None else None
        new_id = row.id if row is not None else None
        if new_id != case.team_id:
            old = team_names(conn, [case.team_id]).get(case.team_id) if case.team_id else None
            conn.execute(update(Case).where(Case.id == case.id).values(team_id=new_id))
            audit.append(
                conn,
                actor=principal.actor,
                action="case.team",
                case_id=case.id,
                before={"team": old},
                after={"team": row.name if row is not None else None},
            )
            if row is not None and case.assignee_id is None:
                auto_assign(conn, case.id, row)
        after = conn.execute(select(Case.assignee_id, Case.team_id).where(Case.id == case.id))
        now = after.one()
        assignee = None
        if now.assignee_id is not None:
            assignee = conn.execute(select(User.name).where(User.id == now.assignee_id)).scalar()
        return {
            "reference": case.reference,
            "team": row.name if row is not None else None,
            "assignee": assignee,
        }


def auto_assign(conn: Connection, case_id: int, team: Any) -> int | None:
    """Assign a case of `team` (a locked Team row) to a member by the team's mode, audited
    as the team's doing; the user id, or None when the mode is off or nobody can take it."""
    if team.auto_assign == "off":
        return None
    open_count = (
        select(func.count())
        .where(Case.assignee_id == TeamMember.user_id, Case.status.in_(OPEN_STATUSES))
        .correlate(TeamMember)
        .scalar_subquery()
    )
    members = [
        Member(r.user_id, r.open_cases)
        for r in conn.execute(
            select(TeamMember.user_id, open_count.label("open_cases"))
            .join(User, User.id == TeamMember.user_id)
            .where(TeamMember.team_id == team.id, User.disabled.is_(False))
        )
    ]
    chosen = pick_assignee(team.auto_assign, members, team.last_assignee_id)
    if chosen is None:
        return None
    conn.execute(update(Case).where(Case.id == case_id).values(assignee_id=chosen))
    conn.execute(update(Team).where(Team.id == team.id).values(last_assignee_id=chosen))
    name = conn.execute(select(User.name).where(User.id == chosen)).scalar()
    audit.append(
        conn,
        actor=f"team:{team.name}",
        action="case.assigned",
        case_id=case_id,
        before={"assignee": None},
        after={"assignee": name, "team": team.name, "via": f"auto_assign:{team.auto_assign}"},
    )
    return chosen


def route_new_case(
    conn: Connection, case_id: int, rules: Sequence[RoutingRule], facts: CaseFacts
) -> str | None:
    """Put a new case in the team of the first routing rule it matches (inside the
    normalizer's transaction), audited with the rule as actor; the team's name, or None.

    A rule naming a team that does not exist routes nowhere and says so in the audit row
    rather than failing intake: store, then acknowledge, whatever the settings say.
    """
    if not rules:
        return None
    rule = route(rules, facts)
    if rule is None:
        return None
    actor = f"rule:{rule.name}"[:128]
    team = conn.execute(select(Team).where(Team.name == rule.team)).one_or_none()
    if team is not None and team.auto_assign != "off" and not is_sqlite(conn):
        # Only a team that hands out cases is locked: its round-robin turn is read and
        # moved in this transaction, and two workers must not give the same turn twice.
        team = conn.execute(select(Team).where(Team.id == team.id).with_for_update()).one()
    if team is None:
        audit.append(
            conn,
            actor=actor,
            action="case.team",
            case_id=case_id,
            after={"team": None, "missing_team": rule.team},
        )
        return None
    conn.execute(update(Case).where(Case.id == case_id).values(team_id=team.id))
    audit.append(conn, actor=actor, action="case.team", case_id=case_id, after={"team": team.name})
    auto_assign(conn, case_id, team)
    return str(team.name)


def my_team_ids(conn: Connection, user_id: int) -> list[int]:
    return list(
        conn.execute(select(TeamMember.team_id).where(TeamMember.user_id == user_id)).scalars()
    )
