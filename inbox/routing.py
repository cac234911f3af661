"""Which team a new case goes to, and which member a team's case is assigned to: small pure
decisions (issue 22), tested by tables; inbox/teams.py does the reading and writing.

Routing looks at facts every channel has (its channel name, the case's language, the text,
the addresses the message came to), so a rule on one channel is data in the settings, never
a branch in code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from inbox.config import RoutingRule

# The text a pattern is searched in is cut here: an operator's pattern runs on every new
# case, and a hostile message must not buy unbounded regex time with its length
# (docs/architecture/promises.md, promise 9). The opening lines are what routing is about.
MAX_ROUTED_TEXT = 65_536


@dataclass(frozen=True)
class CaseFacts:
    """What routing may look at, as the case opens."""

    channel: str
    language: str
    subject: str
    text: str
    # The addresses the message came to: a support mailbox, our number, our handle.
    addresses: tuple[str, ...] = ()

    def haystack(self) -> str:
        return f"{self.subject}\n{self.text}"[:MAX_ROUTED_TEXT]


def matches(rule: RoutingRule, facts: CaseFacts) -> bool:
    """Every condition the rule sets holds (an empty condition holds for anything)."""
    if rule.channels and facts.channel not in rule.channels:
        return False
    if rule.languages and facts.language.lower() not in rule.languages:
        return False
    if rule.addresses:
        came_to = {a.strip().lower() for a in facts.addresses}
        if not came_to.intersection(rule.addresses):
            return False
    return not rule.pattern or re.search(rule.pattern, facts.haystack()) is not None


def route(rules: Iterable[RoutingRule], facts: CaseFacts) -> RoutingRule | None:
    """The first rule, in the settings' order, that the case matches; None: no team."""
    return next((rule for rule in rules if matches(rule, facts)), None)


@dataclass(frozen=True)
class Member:
    """A team member who can take cases: their user id and how many open cases they have."""

    user_id: int
    open_cases: int


def pick_assignee(mode: str, members: Sequence[Member], last_id: int | None) -> int | None:
    """Who a team's new case is assigned to, or None (mode "off", or nobody to take it).

    round_robin: the member after the one who got the last case, in user-id order (a member
    who joined or left does not restart the turn); load_balanced: the fewest open cases,
    ties to the lower user id, so the choice is the same on every worker.
    """
    if mode == "off" or not members:
        return None
    if mode == "round_robin":
        ids = sorted(m.user_id for m in members)
        if last_id is None:
            return ids[0]
        return next((i for i in ids if i > last_id), ids[0])
    if mode == "load_balanced":
        return min(members, key=lambda m: (m.open_cases, m.user_id)).user_id
    raise ValueError(f"unknown auto-assignment mode {mode!r}")
