"""Threading: which case a message belongs to. Pure functions; the worker gathers the facts.

A case reference is not a key. References are sequential and easy to guess, and on a desk
that restores hijacked accounts, joining someone else's case is an account takeover. So a
reference or a reply header only threads a message into a case whose contact already owns
the sender's identity, or when the message carries that case's secret token.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

# The formats live in the inbox, which writes them into replies; re-exported for threading.
from inbox.references import case_tag as case_tag
from inbox.references import find_references as find_references
from inbox.references import format_reference as format_reference
from inbox.references import own_message_id as own_message_id

OPEN_STATUSES = frozenset({"new", "open", "pending_customer"})

_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # noqa: S105 - base32 alphabet
TOKEN_LENGTH = 12  # 60 bits: not guessable in any number of attempts a sender can make
_TAGGED_TOKEN = re.compile(rf"(?<![\w-])C-(\d{{6,12}})\s*#([a-z2-7]{{{TOKEN_LENGTH}}})(?![a-z2-7])")
# The Message-ID of our own outbound mail: parity.C-001042.<token>.<unique>@host
_OWN_MESSAGE_ID = re.compile(rf"^parity\.C-(\d{{6,12}})\.([a-z2-7]{{{TOKEN_LENGTH}}})\.")


def new_token() -> str:
    # One read of the system's randomness, not one per character: base32 of 8 random bytes
    # (A-Z2-7, lowered to _TOKEN_ALPHABET) is 13 characters, each of the first 12 carrying 5
    # uniform bits. secrets.choice per character cost 12 urandom calls a new case.
    return base64.b32encode(secrets.token_bytes(8)).decode("ascii").lower()[:TOKEN_LENGTH]


def find_tokens(texts: Iterable[str], ids: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(reference, token) pairs from tags in the texts and from our own Message-IDs."""
    found: dict[tuple[str, str], None] = {}
    for text in texts:
        for match in _TAGGED_TOKEN.finditer(text):
            found[(format_reference(int(match.group(1))), match.group(2))] = None
    for msgid in ids:
        own = _OWN_MESSAGE_ID.match(msgid)
        if own:
            found[(format_reference(int(own.group(1))), own.group(2))] = None
    return list(found)


@dataclass(frozen=True)
class CaseView:
    """What threading needs to know about a candidate case."""

    id: int
    reference: str
    contact_id: int
    status: str
    resolved_at: datetime | None
    last_activity_at: datetime


LinkKind = Literal["token", "in-reply-to", "references", "conversation", "reference"]


@dataclass(frozen=True)
class Candidates:
    # The contact owning the sender's identity; None for a new or withheld sender.
    sender_contact_id: int | None
    # Cases the message points at, strongest link first.
    linked: Sequence[tuple[LinkKind, CaseView]] = ()
    # Ids of linked cases whose secret token the message carries.
    token_case_ids: frozenset[int] = frozenset()
    # The sender's contact's open cases.
    open_cases: Sequence[CaseView] = ()
    # False for email whose From is not authenticated (normalizer/mailauth.py): anyone could
    # have written that From, so it proves nothing about who the sender is.
    sender_verified: bool = True


@dataclass(frozen=True)
class Decision:
    action: Literal["join", "reopen", "new"]
    case_id: int | None = None
    reason: str = ""
    # A stranger cited this reference: the new case says "claims to be about" it.
    claims: str | None = None
    # The earlier case a new case continues (a message after the reopen window).
    linked_case_id: int | None = None
    follow_up: bool = False
    notes: tuple[str, ...] = field(default=())
    # Another person's case in the same public thread: shown to agents, never joined.
    related: str | None = None
    # A new case opened by an unauthenticated sender: "claims to be from" its address.
    unverified: bool = False


def decide(candidates: Candidates, now: datetime, reopen_window: timedelta) -> Decision:
    """Where a message goes, strongest evidence first (docs/architecture/threading.md).

    An unverified sender is trusted only through a case's secret token: its From address
    alone never joins, reopens or continues the case of the contact owning that address,
    and the new case it opens says who it claims to be.
    """
    decision = _decide(candidates, now, reopen_window)
    if candidates.sender_verified or decision.action != "new":
        return decision
    return replace(decision, unverified=True, reason=f"unauthenticated sender; {decision.reason}")


def _decide(candidates: Candidates, now: datetime, reopen_window: timedelta) -> Decision:
    verified_contact = candidates.sender_contact_id if candidates.sender_verified else None
    claims: str | None = None
    related: str | None = None
    after_window: CaseView | None = None
    for how, case in candidates.linked:
        trusted = case.id in candidates.token_case_ids or (
            verified_contact is not None and case.contact_id == verified_contact
        )
        if not trusted:
            # Writing in someone else's public thread is ordinary traffic, not a claim to
            # their case; citing a reference or replying to their mail is.
            if how == "conversation":
                related = related or case.reference
            else:
                claims = claims or case.reference
            continue
        if case.status in OPEN_STATUSES:
            return Decision("join", case.id, reason=how)
        if case.resolved_at is not None and now - case.resolved_at <= reopen_window:
            return Decision("reopen", case.id, reason=f"{how}, resolved within the reopen window")
        after_window = after_window or case
    if verified_contact is not None and candidates.open_cases:
        latest = max(candidates.open_cases, key=lambda c: (c.last_activity_at, c.id))
        return Decision(
            "join",
            latest.id,
            reason="follow-up from the same person",
            follow_up=True,
            claims=claims,
            related=related,
        )
    if after_window is not None:
        return Decision(
            "new",
            reason=f"{after_window.reference} was resolved before the reopen window",
            linked_case_id=after_window.id,
            claims=claims,
            related=related,
        )
    if claims:
        return Decision(
            "new", reason=f"claims to be about {claims}", claims=claims, related=related
        )
    if related:
        return Decision("new", reason=f"another person in the thread of {related}", related=related)
    return Decision("new", reason="new conversation")
