"""The one acknowledgement planner: what every channel does once it knows how to acknowledge.

A channel decides only the route: whether a new case is acknowledged, to whom, with what
text and how it is sent. That choice is pure and per channel: email, SMS, voice and Meta's
channels from [acknowledgements] (normalizer/acks.py `withhold_reason` and `compose`); a
channel whose route depends on its connector's settings or live state through the
ack-route table (`AckRoute`), which the composition root builds from the connector registry
and hands to the worker, as it does the parsers. The worker calls the route in the
transaction that opens the case. Everything after the choice is `queue_ack`, the same for
every channel: claiming the case's ack_state, the token buckets, the outbox row, and the
audit row `acknowledgement.queued` with the promised time (`eta_at`) that the manager
report's "promise kept" reads, or `acknowledgement.withheld` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, update

from inbox.models import Case
from inbox.outbox import audit_ack_queued, audit_ack_withheld, enqueue
from normalizer.ack_limits import take_ack_tokens
from normalizer.acks import AckLimits

_ACK_REASON_MAX = 256  # the width of cases.ack_reason


@dataclass(frozen=True)
class AckOut:
    """One acknowledgement as its channel's route chose it: who, what, and how."""

    recipient: str
    body: str
    subject: str = ""
    # How the channel's sender sends it (a public reply, a DM, the thread to answer).
    payload: Mapping[str, Any] = field(default_factory=dict)
    # What the case shows while it is queued (why this route), if anything.
    reason: str | None = None
    # More fields for the audit row, beside the outbox id, channel, recipient and eta_at.
    audit: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AckCase:
    """What a channel's route sees of a new case and the message that opened it."""

    channel: str
    reference: str
    token: str
    visibility: str  # public | private
    handle: str  # the sender's handle on the channel ("" when unknown or deleted)
    name: str  # the sender's display name as the platform gives it
    external_id: str | None  # the platform's id of the message (what a public reply answers)
    automated: str | None  # why the parser took the message for a robot's, if it did
    acknowledge: bool  # False for imported history
    received_at: datetime
    now: datetime
    eta_words: str  # the one ETA wording (normalizer/acks.py `describe_eta`), in `language`
    # The case's language (inbox/i18n.py): a route's default texts are said in it.
    language: str = "en"
    # The case's status page with its token ("" without [acknowledgements] status_base_url):
    # only for a private message; a public reply must never carry it.
    status_url: str = ""


# How a channel acknowledges a new case: an AckOut, or the reason it gets none. Pure: it
# reads only the case and the connector state (`AckRoute.state`) loaded in the case's
# transaction, so the worker can plan every channel's acknowledgement when it opens a case.
AckDecide = Callable[[AckCase, Mapping[str, Any]], AckOut | str]


@dataclass(frozen=True)
class AckRoute:
    """One channel's entry of the ack-route table the composition root hands the worker.

    `state` names the connector checkpoint row (connector, key) holding what the route
    needs to know of the running connector (Twitter: whether DMs may be sent; Reddit: the
    account's name); the worker reads it in the case's transaction, {} when absent.
    """

    decide: AckDecide
    state: tuple[str, str] | None = None


AckRoutes = Mapping[str, AckRoute]


@dataclass(frozen=True)
class AckPlanned:
    """What planning came to: the queued outbox row, or why nothing was queued."""

    outbox_id: int | None
    withheld: str | None


def queue_ack(
    conn: Connection,
    case_id: int,
    channel: str,
    plan: AckOut | str,
    *,
    eta_at: datetime,
    now: datetime,
    limits: AckLimits | None,
    audit_withheld: Mapping[str, Any] | None,
    claim: bool = True,
    audit_head: tuple[int | None, str | None] | None = None,
) -> AckPlanned | None:
    """Queue `plan` for a new case, or withhold it (`plan` is then the reason); audited.

    In the caller's transaction. With `claim`, the case is taken only while its ack_state
    is empty, so two planners (two instances, two sweeps) never acknowledge it twice; a
    case already taken returns None and writes nothing. The token buckets are drawn on
    only for an acknowledgement that will be queued, all three or none. `audit_withheld`
    holds the fields beside the reason of the `acknowledgement.withheld` row, or is None
    when a withheld case writes none (imported history is audited once per import).
    `audit_head` is the case's audit chain head if the caller knows it (audit.append):
    `audit.NEW_CHAIN` for a case opened in this transaction saves reading it.
    """
    state, reason = ("withheld", plan) if isinstance(plan, str) else ("queued", plan.reason)
    where = [Case.id == case_id] + ([Case.ack_state.is_(None)] if claim else [])
    taken = conn.execute(
        update(Case)
        .where(*where)
        .values(ack_state=state, ack_reason=reason[:_ACK_REASON_MAX] if reason else None)
    ).rowcount
    if not taken:
        return None
    if isinstance(plan, AckOut) and limits is not None:
        # The same buckets for every channel's acknowledgements.
        limited = take_ack_tokens(conn, channel, plan.recipient, limits, now)
        if limited is not None:
            plan = limited
            conn.execute(
                update(Case)
                .where(Case.id == case_id)
                .values(ack_state="withheld", ack_reason=limited[:_ACK_REASON_MAX])
            )
    if isinstance(plan, str):
        if audit_withheld is not None:
            audit_ack_withheld(conn, case_id, reason=plan, audit_head=audit_head, **audit_withheld)
        return AckPlanned(None, plan)
    outbox_id = enqueue(
        conn,
        case_id=case_id,
        kind="ack",
        channel=channel,
        recipient=plan.recipient,
        subject=plan.subject,
        body=plan.body,
        payload=dict(plan.payload),
    )
    audit_ack_queued(
        conn,
        case_id,
        outbox_id=outbox_id,
        channel=channel,
        recipient=plan.recipient,
        eta_at=eta_at,
        audit_head=audit_head,
        **plan.audit,
    )
    return AckPlanned(outbox_id, None)
