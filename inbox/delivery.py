"""Honest delivery: whether each channel has a working way out, and what the pages say when
it has not. Pure functions, tested by tables (tests/test_delivery_banner.py).

A queued acknowledgement or reply looks the same whether it leaves in a second or never: an
inbox without an outgoing mail server used to show "queued" and nothing else, and agents
believed customers had their answers. The composition root says how each channel leaves
(it knows the connectors and the relay; the inbox may not import them), and every page says
plainly when one does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from inbox.channels import CHANNEL_FACTS

WayState = Literal["sends", "captured", "none"]
# Outbox states in which the customer has the message (as far as the provider tells us).
RECEIVED_STATES = frozenset({"sent", "delivered"})


@dataclass(frozen=True)
class WayOut:
    """How one channel's acknowledgements and replies leave this installation."""

    channel: str
    state: WayState
    # Why not ("no relay configured ([outbox.email] host)"), or where captured mail goes.
    reason: str = ""
    # Messages on it are taken in here: customers write on it and expect an answer.
    takes_in: bool = False


@dataclass(frozen=True)
class Notice:
    channel: str
    state: WayState
    text: str


def label(channel: str) -> str:
    return CHANNEL_FACTS[channel].label if channel in CHANNEL_FACTS else channel


def captured_text(channel: str, where: str) -> str:
    """What the banner and `parity outbox status` say of a channel in trial mode: one
    wording, so the command never calls captured mail sendable."""
    return (
        f"Trial mode: {label(channel)} is written to {where or 'a Maildir'} instead of "
        "being sent. Customers receive nothing."
    )


def notices(ways: Iterable[WayOut], queued: Iterable[str]) -> list[Notice]:
    """The banner's lines: every channel whose mail is captured, and every channel with no
    way out that takes messages in or has something queued. A channel neither used nor
    waiting (a connector simply not set up) is not news on every page."""
    waiting = set(queued)
    out: list[Notice] = []
    for way in ways:
        name = label(way.channel)
        if way.state == "captured":
            out.append(Notice(way.channel, way.state, captured_text(way.channel, way.reason)))
        elif way.state == "none" and (way.takes_in or way.channel in waiting):
            why = f" ({way.reason})" if way.reason else ""
            out.append(
                Notice(
                    way.channel,
                    way.state,
                    f"Nothing goes out on {name}{why}: acknowledgements and replies stay "
                    "queued, and customers receive nothing.",
                )
            )
    return out


# The provider id the relay gives a row it wrote to the capture Maildir (connectors/mail).
CAPTURED_PREFIX = "captured to Maildir"


def not_received(
    state: str | None, way: WayOut | None, provider_id: str | None = None
) -> str | None:
    """What the case page says under a queued, failed or unknown acknowledgement or reply,
    or one that trial mode captured; None once a provider took it (or with no outbox row)."""
    if state is None:
        return None
    if (provider_id or "").startswith(CAPTURED_PREFIX):
        return "The customer has NOT received this: trial mode kept it in a Maildir."
    if state in RECEIVED_STATES:
        return None
    if way is not None and way.state == "captured":
        return "The customer has NOT received this yet: trial mode will keep it in a Maildir."
    if way is not None and way.state == "none":
        reason = f": {way.reason}" if way.reason else ""
        return f"The customer has NOT received this{reason}."
    if state in ("queued", "sending"):
        return "The customer has NOT received this yet: it is waiting to be sent."
    return f"The customer has NOT received this: {state}."


def by_channel(ways: Sequence[WayOut]) -> dict[str, WayOut]:
    return {w.channel: w for w in ways}
