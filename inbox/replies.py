"""Where an agent's reply may go, and what it looks like. Pure functions, tested by tables.

A reply goes only to an identity of the case's contact: the people agents have established
as this person. Someone who merely cited the case's reference is a stranger with a case of
their own ("claims to be about C-..."), and someone who carried the case's token from a new
address joined the case but belongs to another contact until an agent links them. Neither
is ever a reply target, whoever wrote last.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from inbox.channels import (
    CHANNEL_FACTS,
    IDENTITY_KIND_OF,
    IDENTITY_KINDS,
    REPLY_CHANNEL_OF_KIND,
    REPLY_CHANNELS_OF_KIND,
    fold_handle,
)
from inbox.references import case_tag

# The channel a reply to an identity of each kind goes out on. A voice message is answered
# by SMS: the same number, and the one way to send it text.
REPLY_CHANNEL = REPLY_CHANNEL_OF_KIND
# The identity kind each channel's handles belong to.
IDENTITY_KIND = IDENTITY_KIND_OF


class ReplyRefused(ValueError):
    """The reply cannot go where it was asked to; the message says why."""


@dataclass(frozen=True)
class IdentityView:
    id: int
    kind: str
    handle: str
    contact_id: int


@dataclass(frozen=True)
class InboundView:
    """An inbound message of the case, as far as choosing a reply target needs it."""

    id: int
    identity_id: int | None
    channel: str
    visibility: str
    received_at: datetime


@dataclass(frozen=True)
class ReplyTarget:
    identity_id: int
    kind: str
    handle: str
    channel: str
    # The inbound message this reply answers, when there is one from this identity.
    in_reply_to_message_id: int | None = None


def _norm_handle(kind: str, handle: str) -> str:
    # Case-folded as stored; a typed prefix ("u/") is not dropped here (inbox.identities does).
    return fold_handle(kind, handle)


def offered_channels(kind: str, written: AbstractSet[str]) -> tuple[str, ...]:
    """The channels a reply to an identity of `kind` is offered on: the kind's own (SMS for
    a number) always, another (WhatsApp) only where the person has written on it.

    A number that never wrote on WhatsApp has not chosen to be reached there: the first
    WhatsApp message to it would be a business-initiated conversation, which Meta allows
    only as an approved template to someone who opted in. Serious helpdesks offer WhatsApp
    to the conversations a customer started on it; so does Parity. (A number that wrote
    long ago is still offered: its reply goes as a template, and the form says so.)
    """
    channels = REPLY_CHANNELS_OF_KIND.get(kind, ())
    return tuple(c for c in channels if c == channels[0] or c in written)


def written_channels(channels: Iterable[str]) -> frozenset[str]:
    """The reply channels of the channels someone wrote on (a call is answered by SMS)."""
    return frozenset(CHANNEL_FACTS[c].reply_channel for c in channels if c in CHANNEL_FACTS)


def choose_reply_target(
    contact_id: int,
    identities: Sequence[IdentityView],
    inbound: Sequence[InboundView],
    *,
    channel: str | None = None,
    handle: str | None = None,
    written: Mapping[int, AbstractSet[str]] | None = None,
) -> ReplyTarget:
    """The identity and channel a reply goes to.

    By default: the channel of the last inbound message from an identity of the case's
    contact. A `channel` and/or `handle` picks another identity of that same contact, on
    that channel. `written` (identity id -> the reply channels it ever wrote on, in any
    case) keeps a reply to the channels offered to it (`offered_channels`).
    """
    own = [i for i in identities if i.contact_id == contact_id]
    by_id = {i.id: i for i in own}
    latest_from: dict[int, InboundView] = {}
    for message in sorted(inbound, key=lambda m: (m.received_at, m.id)):
        if message.identity_id in by_id:
            latest_from[message.identity_id] = message
    if channel is not None and channel not in IDENTITY_KIND:
        raise ReplyRefused(f"unknown channel {channel!r}")
    if channel is not None and not CHANNEL_FACTS[channel].replyable:
        facts = CHANNEL_FACTS[channel]
        noun = IDENTITY_KINDS[facts.identity_kind].noun
        raise ReplyRefused(
            f"a {channel} message is answered by {facts.reply_channel}, to the same {noun}"
        )

    def offered(identity: IdentityView, chosen: str) -> bool:
        if written is None:
            return True
        return chosen in offered_channels(identity.kind, written.get(identity.id, frozenset()))

    def never_written(identity: IdentityView, chosen: str) -> ReplyRefused:
        other = CHANNEL_FACTS[REPLY_CHANNEL[identity.kind]].label
        return ReplyRefused(
            f"{identity.handle} has never written on {CHANNEL_FACTS[chosen].label}: it is "
            "offered only to those who wrote there (a first message needs their opt-in and "
            f"an approved template); answer by {other}"
        )

    if handle is not None:
        kinds = [IDENTITY_KIND[channel]] if channel else list(REPLY_CHANNEL)
        for identity in own:
            if identity.kind in kinds and identity.handle == _norm_handle(identity.kind, handle):
                target = _target(identity, latest_from.get(identity.id), channel=channel)
                if not offered(identity, target.channel):
                    raise never_written(identity, target.channel)
                return target
        raise ReplyRefused(
            f"{handle!r} is not an identity of this case's contact; a reply goes only to them"
        )

    if channel is not None:
        kind = IDENTITY_KIND[channel]
        candidates = [i for i in own if i.kind == kind]
        if not candidates:
            raise ReplyRefused(f"this case's contact has no {kind} identity to reply to")
        reply_on = CHANNEL_FACTS[channel].reply_channel
        reachable = [i for i in candidates if offered(i, reply_on)]
        if not reachable:
            raise never_written(max(candidates, key=lambda i: i.id), reply_on)

        def recency(identity: IdentityView) -> tuple[datetime | None, int]:
            last = latest_from.get(identity.id)
            return (last.received_at if last else None, identity.id)

        # The one they last wrote from on that channel, else the newest identity of the kind.
        written_here = [i for i in reachable if i.id in latest_from]
        chosen = (
            max(written_here, key=recency) if written_here else max(reachable, key=lambda i: i.id)
        )
        return _target(chosen, latest_from.get(chosen.id), channel=channel)

    if not latest_from:
        raise ReplyRefused(
            "no message in this case comes from an identity of its contact; "
            "name a channel or handle of the contact"
        )
    last = max(latest_from.values(), key=lambda m: (m.received_at, m.id))
    assert last.identity_id is not None
    return _target(by_id[last.identity_id], last, channel=last.channel)


def _target(
    identity: IdentityView, last: InboundView | None, channel: str | None = None
) -> ReplyTarget:
    # The asked channel, else the last message's, else the kind's; either way where a reply
    # on it goes (a voice message's is sms).
    chosen = channel or REPLY_CHANNEL[identity.kind]
    facts = CHANNEL_FACTS.get(chosen)
    if facts is not None:
        chosen = facts.reply_channel
    return ReplyTarget(
        identity_id=identity.id,
        kind=identity.kind,
        handle=identity.handle,
        channel=chosen,
        in_reply_to_message_id=last.id if last else None,
    )


WindowMode = Literal["text", "tagged", "template", "refused"]


def reply_window(
    channel: str, last_inbound: datetime | None, now: datetime
) -> tuple[WindowMode, str | None]:
    """How a private reply on `channel` may go now, given when the person last wrote on it,
    and what the agent is told when it is not free text (the registry's ReplyWindow)."""
    window = CHANNEL_FACTS[channel].reply_window
    if not window.free_hours:
        return "text", None
    age = None if last_inbound is None else now - last_inbound
    if age is not None and age < timedelta(hours=window.free_hours):
        return "text", None
    if age is not None and age < timedelta(days=window.tagged_days):
        return "tagged", f"more than {window.free_hours} hours since their last message: " + (
            "sent as a person's answer (HUMAN_AGENT)"
        )
    return ("template" if window.after == "template" else "refused"), window.outside


_PREFIX = re.compile(r"^\s*((re|fwd?|aw|sv|antw)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_TAG = re.compile(r"\s*\[C-\d{6,12}(\s*#[a-z2-7]+)?\]\s*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def reply_subject(subject: str, reference: str, token: str) -> str:
    """`Re: <subject> [C-001042 #token]`: one Re:, one tag, no line breaks, bounded length.

    The tag carries the token, so the customer's answer threads back into this case even
    from a mail client that keeps only the subject.
    """
    clean = _CONTROL.sub(" ", subject)
    clean = _TAG.sub(" ", clean)
    clean = _PREFIX.sub("", clean)
    clean = " ".join(clean.split())[:200].strip()
    tag = case_tag(reference, token)
    return f"Re: {clean} {tag}" if clean else f"Re: {tag}"
