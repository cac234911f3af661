"""The JSON API of teams (issue 22): managers create teams, set their members and their
auto-assignment; everyone lists them; any agent moves a case to a team.

Registered from the one route table like every route, so login and CSRF apply and each one
is in /api/openapi.json.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from inbox import teams
from inbox.config import Strict
from inbox.web.app import blocking, body, context, principal, reply_json
from inbox.web.routes import Route

AutoAssign = Literal["off", "round_robin", "load_balanced"]


class NewTeamBody(Strict):
    name: str = Field(min_length=1, max_length=64)
    auto_assign: AutoAssign = "off"


class TeamChangeBody(Strict):
    auto_assign: AutoAssign


class MembersBody(Strict):
    # Exactly these user names become the members.
    members: list[str] = Field(max_length=teams.MAX_MEMBERS)


class MemberChangeBody(Strict):
    add: list[str] = Field(default_factory=list, max_length=teams.MAX_MEMBERS)
    remove: list[str] = Field(default_factory=list, max_length=teams.MAX_MEMBERS)


class CaseTeamBody(Strict):
    # A team name, or null for no team.
    team: str | None = Field(max_length=64)


async def teams_list(request: web.Request) -> web.StreamResponse:
    return reply_json({"teams": await blocking(teams.list_teams, context(request).engine)})


async def teams_create(request: web.Request) -> web.StreamResponse:
    data = await body(request, NewTeamBody)
    team = await blocking(
        teams.create_team,
        context(request).engine,
        principal(request).actor,
        data.name,
        data.auto_assign,
    )
    return reply_json({"team": team}, status=201)


async def teams_update(request: web.Request) -> web.StreamResponse:
    data = await body(request, TeamChangeBody)
    team = await blocking(
        teams.set_auto_assign,
        context(request).engine,
        principal(request).actor,
        request.match_info["team"],
        data.auto_assign,
    )
    return reply_json({"team": team})


async def members_set(request: web.Request) -> web.StreamResponse:
    data = await body(request, MembersBody)
    team = await blocking(
        teams.set_members,
        context(request).engine,
        principal(request).actor,
        request.match_info["team"],
        replace=data.members,
    )
    return reply_json({"team": team})


async def members_change(request: web.Request) -> web.StreamResponse:
    data = await body(request, MemberChangeBody)
    team = await blocking(
        teams.set_members,
        context(request).engine,
        principal(request).actor,
        request.match_info["team"],
        add=data.add,
        remove=data.remove,
    )
    return reply_json({"team": team})


async def case_team(request: web.Request) -> web.StreamResponse:
    data = await body(request, CaseTeamBody)
    result = await blocking(
        teams.set_case_team,
        context(request).engine,
        principal(request),
        request.match_info["reference"],
        data.team,
    )
    return reply_json(result)


def routes() -> list[Route]:
    return [
        Route("GET", "/api/teams", teams_list, "Teams and their members", "teams"),
        Route(
            "POST",
            "/api/teams",
            teams_create,
            "Add a team",
            "teams",
            role="manager",
            body=NewTeamBody,
            responses={201: "created", 400: "bad name", 409: "the name is taken"},
        ),
        Route(
            "PATCH",
            "/api/teams/{team}",
            teams_update,
            "Change a team's auto-assignment (off, round_robin, load_balanced)",
            "teams",
            role="manager",
            body=TeamChangeBody,
            responses={200: "OK", 404: "no such team"},
        ),
        Route(
            "PUT",
            "/api/teams/{team}/members",
            members_set,
            "Set a team's members (exactly these users)",
            "teams",
            role="manager",
            body=MembersBody,
            responses={200: "OK", 400: "no such user", 404: "no such team"},
        ),
        Route(
            "POST",
            "/api/teams/{team}/members",
            members_change,
            "Add and remove members of a team",
            "teams",
            role="manager",
            body=MemberChangeBody,
            responses={200: "OK", 400: "no such user", 404: "no such team"},
        ),
        Route(
            "POST",
            "/api/cases/{reference}/team",
            case_team,
            "Move a case to a team (or to none); a team that auto-assigns then assigns it",
            "cases",
            body=CaseTeamBody,
            responses={200: "OK", 404: "no such case or team"},
        ),
    ]
