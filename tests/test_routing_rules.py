"""Routing rules and auto-assignment as pure decisions (inbox/routing.py), by tables of
realistic cases. Expected teams and assignees are written out by hand."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inbox.config import RoutingRule
from inbox.routing import MAX_ROUTED_TEXT, CaseFacts, Member, matches, pick_assignee, route
from inbox.web.config import InboxSettings

RULES = [
    RoutingRule(name="billing mailbox", team="billing", addresses=["Billing@Shop.example"]),
    RoutingRule(name="refunds", team="billing", pattern=r"(?i)\b(refund|invoice|charged twice)\b"),
    RoutingRule(name="german", team="dach", languages=["de"]),
    RoutingRule(name="phones", team="phone-desk", channels=["sms", "voice", "whatsapp"]),
    RoutingRule(
        name="public outage",
        team="social",
        channels=["twitter", "reddit"],
        pattern=r"(?i)\b(down|outage)\b",
    ),
]


def facts(
    channel: str = "email",
    language: str = "en",
    subject: str = "",
    text: str = "",
    addresses: tuple[str, ...] = (),
) -> CaseFacts:
    return CaseFacts(channel, language, subject, text, addresses)


@pytest.mark.parametrize(
    ("case", "team"),
    [
        # The mailbox it came to decides first, whatever the text says.
        (facts(addresses=("billing@shop.example",), text="Wo ist mein Paket?", language="de"),
         "billing"),
        (facts(addresses=("help@shop.example", "BILLING@shop.example")), "billing"),
        # A keyword in the subject or the text, any channel.
        (facts(subject="Charged twice for order 4471"), "billing"),
        (facts(channel="sms", text="I need a refund for my order"), "billing"),
        (facts(text="refundable?"), None),  # a word, not a part of one
        (facts(language="de", text="Mein Paket ist nicht angekommen"), "dach"),
        (facts(channel="whatsapp", text="hello, where is my parcel"), "phone-desk"),
        (facts(channel="voice", text=""), "phone-desk"),
        # Both conditions of a rule must hold: a public channel and the word.
        (facts(channel="twitter", text="is the site down for everyone?"), "social"),
        (facts(channel="twitter", text="love the new colours"), None),
        (facts(channel="email", text="the site is down"), None),
        (facts(channel="telegram", text="hi"), None),
    ],
)  # fmt: skip
def test_the_first_matching_rule_routes_the_case(case: CaseFacts, team: str | None) -> None:
    chosen = route(RULES, case)
    assert (chosen.team if chosen else None) == team


def test_a_rule_with_no_conditions_takes_every_case() -> None:
    catch_all = RoutingRule(name="everything", team="Tier-1")
    assert catch_all.team == "tier-1"
    assert matches(catch_all, facts(channel="reddit", language="fr"))


def test_a_pattern_never_reads_past_the_routed_length() -> None:
    rule = RoutingRule(name="late word", team="late", pattern="needle")
    assert matches(rule, facts(text="x" * (MAX_ROUTED_TEXT - 10) + "needle"))
    assert not matches(rule, facts(text="x" * MAX_ROUTED_TEXT + "needle"))


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"name": "x", "team": "a", "channels": ["fax"]}, "unknown channel 'fax'"),
        ({"name": "x", "team": "a", "pattern": "(unclosed"}, "not a regular expression"),
        ({"name": "x", "team": "Billing Team"}, "a team name"),
        ({"name": "x", "team": "a", "when": "always"}, "when"),
    ],
)
def test_bad_rules_stop_start_up_with_their_reason(rule: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        InboxSettings.model_validate({"routing": [rule]})


# Three members by user id: 4 (2 open cases), 7 (0), 9 (2).
TEAM = [Member(7, 0), Member(4, 2), Member(9, 2)]


@pytest.mark.parametrize(
    ("mode", "members", "last", "chosen"),
    [
        ("off", TEAM, None, None),
        ("round_robin", TEAM, None, 4),
        ("round_robin", TEAM, 4, 7),
        ("round_robin", TEAM, 7, 9),
        ("round_robin", TEAM, 9, 4),  # wraps around
        ("round_robin", TEAM, 5, 7),  # the last one left the team: the turn goes on after 5
        ("round_robin", TEAM, 12, 4),
        ("load_balanced", TEAM, None, 7),
        ("load_balanced", [Member(4, 2), Member(9, 2)], None, 4),  # a tie: the lower id
        ("load_balanced", [Member(4, 3), Member(9, 1)], 9, 9),  # the turn plays no part
        ("round_robin", [], None, None),
        ("load_balanced", [], None, None),
    ],
)
def test_auto_assignment_picks_by_the_team_mode(
    mode: str, members: list[Member], last: int | None, chosen: int | None
) -> None:
    assert pick_assignee(mode, members, last) == chosen


def test_a_round_robin_day_hands_cases_out_in_turn() -> None:
    last = None
    handed = []
    for _ in range(7):
        last = pick_assignee("round_robin", TEAM, last)
        handed.append(last)
    assert handed == [4, 7, 9, 4, 7, 9, 4]
