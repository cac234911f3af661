"""Twitter/X acknowledgements and the delivery of outbox rows of channel "twitter".

Acknowledgement rules:
- a public mention gets a short public reply (create_tweet with in_reply_to_tweet_id): the
  case reference and the ETA from fixed text, nothing personal, and an invitation to DM;
- with public replies off in settings, the acknowledgement goes by DM where the account can
  send one; otherwise the case records why none was sent;
- a DM gets the full acknowledgement by DM, with the case's tagged reference.
The secret token never appears in a public reply: anyone could read it there and use it to
join the case, which on a desk that restores hijacked accounts is an account takeover.

A tweet or a DM carries no idempotency key, so a send whose answer was lost is "unknown":
it is looked up at X (our own timeline, or the DM conversation) before anything else, and
left for an agent when it cannot be found, rather than posted twice.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, select

from connectors.config import OutboxSettings, TwitterSettings
from connectors.twitter_api import XApi, XError, is_duplicate_content, seconds_until
from inbox import outbox
from inbox.db import write
from inbox.models import Case, Intake, Message, Receipt, utcnow
from inbox.outbox import Claimed, Result
from normalizer.ack_plan import AckOut, queue_ack
from normalizer.acks import AckLimits, describe_eta
from normalizer.eta import EtaEstimate
from normalizer.threads import OPEN_STATUSES, case_tag
from normalizer.twitter import tweet_ref

log = logging.getLogger(__name__)

CHANNEL = "twitter"
Route = Literal["tweet", "dm"]
# Retry policy of a send X refused for a passing reason: the outbox's defaults ([outbox]
# max_attempts, backoff_base_s, backoff_max_s), the same curve as every channel's.
_RETRY = OutboxSettings()
# A claimed row still "sending" this long after its claim was left by a process that died;
# far longer than one request may take (the API client's timeouts bound each request).
SENDING_LEASE = timedelta(minutes=10)


# --- pure rules -------------------------------------------------------------------------


def choose_ack(
    *,
    visibility: str,
    public_replies: bool,
    dm_available: bool,
    acknowledge: bool,
    automated: str | None,
) -> tuple[Route | None, str]:
    """How a new Twitter case is acknowledged, or why it is not."""
    if not acknowledge:
        return None, "imported history is never acknowledged"
    if automated:
        return None, f"automated message: {automated}"
    if visibility == "private":
        if dm_available:
            return "dm", "direct message acknowledged by direct message"
        return None, "direct messages cannot be sent with this account's access (403)"
    if public_replies:
        return "tweet", "public mention acknowledged by a public reply"
    if dm_available:
        return "dm", "public replies are off in settings: acknowledged by direct message"
    return None, (
        "public replies are off in settings and direct messages cannot be sent with this "
        "account's access"
    )


def ack_text(template: str, *, reference: str, eta: str, tag: str = "") -> str:
    # Settings validation already limited the placeholders to these three.
    return template.format(reference=reference, eta=eta, tag=tag)


# --- planning: one acknowledgement per new case ----------------------------------------------


@dataclass(frozen=True)
class Planned:
    case_id: int
    route: Route | None
    reason: str
    outbox_id: int | None


def plan_acks(
    engine: Engine,
    settings: TwitterSettings,
    *,
    dm_available: bool,
    limit: int = 50,
    eta: EtaEstimate | None = None,
    limits: AckLimits | None = None,
    timezone: str = "UTC",
) -> list[Planned]:
    """Queue (or withhold, with the reason) the acknowledgement of each unacknowledged
    Twitter case. Idempotent: a case is planned once, guarded by its ack_state."""
    planned: list[Planned] = []
    waiting = (
        Case.channel == CHANNEL,
        Case.ack_state.is_(None),
        Case.status.in_(OPEN_STATUSES),
    )
    # Look before taking the write lock: on SQLite every write transaction, even an empty
    # one, briefly holds up intake, and usually there is nothing to plan.
    with engine.connect() as conn:
        if conn.execute(select(Case.id).where(*waiting).limit(1)).first() is None:
            return planned
    with write(engine) as conn:
        cases = conn.execute(
            select(Case.id, Case.reference, Case.token, Case.due_at)
            .where(*waiting)
            .order_by(Case.id)
            .limit(limit)
        ).all()
        for case in cases:
            first = conn.execute(
                select(
                    Message.id,
                    Message.channel,
                    Message.visibility,
                    Message.external_id,
                    Message.from_handle,
                    Message.automated,
                )
                .where(Message.case_id == case.id, Message.direction == "inbound")
                .order_by(Message.received_at, Message.id)
                .limit(1)
            ).one_or_none()
            if first is None or first.channel != CHANNEL:
                continue
            acknowledge = any(
                conn.execute(
                    select(Intake.acknowledge)
                    .join(Receipt, Receipt.intake_id == Intake.id)
                    .where(Receipt.message_id == first.id)
                ).scalars()
            )
            route, reason = choose_ack(
                visibility=first.visibility,
                public_replies=settings.public_replies,
                dm_available=dm_available,
                acknowledge=acknowledge,
                automated=first.automated,
            )
            now = utcnow()
            # The same queue-based estimate an email gets; the SLA due time without one.
            promised = eta(conn, case.id, case.due_at, now) if eta else case.due_at
            # The one wording every channel uses (normalizer/acks.py).
            eta_words = describe_eta(now, promised, timezone)
            plan: AckOut | str = reason
            if route == "tweet":
                plan = AckOut(
                    recipient=first.from_handle,
                    body=ack_text(
                        settings.public_ack_template, reference=case.reference, eta=eta_words
                    ),
                    payload={
                        "mode": "tweet",
                        "in_reply_to_tweet_id": first.external_id,
                        "reference": case.reference,
                    },
                    reason=reason,
                    audit={"route": route, "reason": reason},
                )
            elif route == "dm":
                # A DM is private: the full acknowledgement, with the tagged reference.
                plan = AckOut(
                    recipient=first.from_handle,
                    body=ack_text(
                        settings.dm_ack_template,
                        reference=case.reference,
                        eta=eta_words,
                        tag=case_tag(case.reference, case.token),
                    ),
                    payload={
                        "mode": "dm",
                        "participant_id": first.from_handle,
                        "reference": case.reference,
                    },
                    reason=reason,
                    audit={"route": route, "reason": reason},
                )
            # The one planner of every channel (normalizer/ack_plan.py).
            done = queue_ack(
                conn,
                case.id,
                CHANNEL,
                plan,
                eta_at=promised,
                now=now,
                limits=limits,
                audit_withheld={"channel": CHANNEL},
            )
            if done is None:
                continue  # another planner took this case
            if done.withheld is not None:
                route, reason = None, done.withheld
            outbox_id = done.outbox_id
            planned.append(Planned(case.id, route, reason, outbox_id))
    return planned


# --- delivery --------------------------------------------------------------------------------


class Stop(Exception):
    """The connector must stop sending for now (credits depleted, or authentication failed)."""

    def __init__(self, error: XError) -> None:
        super().__init__(str(error))
        self.error = error


class Delivery:
    def __init__(
        self,
        engine: Engine,
        api: XApi,
        *,
        worker: str,
        credits_retry_seconds: float,
    ) -> None:
        self.engine = engine
        self.api = api
        self.worker = worker
        self.credits_retry_seconds = credits_retry_seconds
        self.counts: dict[str, int] = {"sent": 0, "retry": 0, "failed": 0, "unknown": 0}

    def next_item(self) -> Claimed | None:
        """The next due row, claimed for this worker with a lease; None when nothing is due."""
        # Look before taking the write lock: most polls find nothing to send.
        if not outbox.has_work(self.engine, CHANNEL):
            return None
        # A lease that ran out (a sender that lost the poller lock and died): unknown, and
        # looked up at X at once, as after a restart.
        recovered = outbox.recover(self.engine, CHANNEL, resend=False)
        if recovered:
            self.counts["unknown"] += recovered
            self.reconcile_unknown()
        claimed = outbox.claim(self.engine, CHANNEL, self.worker, limit=1, lease=SENDING_LEASE)
        if not claimed:
            return None
        item = claimed[0]
        if not item.payload.get("mode"):
            # An agent's reply from the inbox: give it a route, and keep it on the row so a
            # check after a crash looks in the right place.
            route = reply_route(item.payload)
            outbox.save_route(self.engine, item.id, route)
            item = dataclasses.replace(item, payload=route)
        return item

    def _record(self, item: Claimed, result: Result) -> str:
        outbox.record(self.engine, item, self.worker, result)
        return self._count(result.outcome)

    def deliver(self, item: Claimed) -> str:
        """Send one claimed row and record the outcome; raises Stop for 401 and 402."""
        mode = item.payload.get("mode")
        try:
            if mode == "tweet":
                body = self.api.create_tweet(item.body, item.payload.get("in_reply_to_tweet_id"))
                provider_id = _data_field(body, "id")
                refs = [tweet_ref(provider_id)] if provider_id else []
            elif mode == "dm":
                participant = str(item.payload.get("participant_id") or item.recipient)
                body = self.api.create_dm(participant, item.body)
                provider_id = _data_field(body, "dm_event_id")
                refs = []
            else:
                return self._record(item, Result("failed", f"unknown twitter send mode {mode!r}"))
        except XError as exc:
            return self._failed_send(item, exc)
        if provider_id is None:
            return self._record(
                item, Result("unknown", "X accepted the send but its answer carried no id")
            )
        return self._record(item, Result("sent", provider_id=provider_id, refs=refs))

    def _failed_send(self, item: Claimed, exc: XError) -> str:
        message = str(exc)
        number = item.attempts + 1  # this attempt
        if exc.kind == "rate_limited":
            # The request was refused, not processed: safe to send again after the reset.
            wait = seconds_until(exc.reset_at)
            return self._record(item, Result("retry", message, next_attempt_at=_later(wait)))
        if exc.kind in ("credits", "auth"):
            # X refused before doing anything, and we stop sending: not an attempt that counts.
            wait = self.credits_retry_seconds if exc.kind == "credits" else 3600.0
            outbox.release(self.engine, item, self.worker, message, _later(wait))
            raise Stop(exc)
        if exc.kind == "transient":
            if number >= _RETRY.max_attempts:
                return self._record(
                    item, Result("failed", f"gave up after {number} attempts: {message}")
                )
            wait = outbox.backoff(number, _RETRY.backoff_base_s, _RETRY.backoff_max_s)
            return self._record(item, Result("retry", message, next_attempt_at=_later(wait)))
        if exc.kind == "unsure" or (
            exc.kind == "forbidden"
            and item.payload.get("mode") == "tweet"
            and is_duplicate_content(exc.body)
        ):
            # Either the answer was lost, or X says we already posted this very text: the
            # tweet probably exists. Look for it instead of posting again.
            self._record(item, Result("unknown", message))
            self.reconcile(item)
            return "unknown"
        return self._record(item, Result("failed", message))

    def _count(self, outcome: str) -> str:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        return outcome

    # --- unknown outcomes ------------------------------------------------------------------

    def recover_orphans(self) -> int:
        """Rows left "sending" by a process that died: unknown, then looked up at X.

        Called by the holder of the twitter poller lock before it sends anything: it is the
        only sender, so every row still "sending" is a dead process's, lease or not.
        """
        found = outbox.recover(self.engine, CHANNEL, resend=False, sole_sender=True)
        self.counts["unknown"] = self.counts.get("unknown", 0) + found
        return found

    def reconcile_unknown(self) -> int:
        """Look up each unknown row not yet checked; returns how many were found sent."""
        found = 0
        for item in outbox.unknown_rows(self.engine, CHANNEL):
            if item.payload.get("checked_at"):
                continue
            if self.reconcile(item):
                found += 1
        return found

    def reconcile(self, item: Claimed) -> bool:
        since = item.created_at - timedelta(minutes=1)
        try:
            match = (
                self._find_tweet(item, since)
                if item.payload.get("mode") == "tweet"
                else self._find_dm(item, since)
            )
        except XError as exc:
            log.warning("could not look up outbox row %s at X: %s", item.id, exc)
            return False
        if match is None:
            outbox.note_checked(
                self.engine,
                item.id,
                "outcome unknown and not found at X; left for an agent, since sending "
                "again could post it twice",
            )
            return False
        if not outbox.resolve_unknown(
            self.engine,
            item.id,
            found=True,
            provider_id=match,
            refs=[tweet_ref(match)] if item.payload.get("mode") == "tweet" else [],
            note="outcome was unknown; found at X",
        ):
            return False
        self.counts["sent"] = self.counts.get("sent", 0) + 1
        self.counts["unknown"] = max(self.counts.get("unknown", 0) - 1, 0)
        return True

    def _find_tweet(self, item: Claimed, since: datetime) -> str | None:
        target = str(item.payload.get("in_reply_to_tweet_id") or "")
        for tweet in self.api.own_tweets(since).get("data") or []:
            replied = {
                str(r.get("id"))
                for r in tweet.get("referenced_tweets") or []
                if r.get("type") == "replied_to"
            }
            if (not target or target in replied) and _same_text(tweet.get("text"), item.body):
                return str(tweet["id"])
        return None

    def _find_dm(self, item: Claimed, since: datetime) -> str | None:
        participant = str(item.payload.get("participant_id") or item.recipient)
        for event in self.api.dm_events_with(participant).get("data") or []:
            created = _parse_time(event.get("created_at"))
            if (
                str(event.get("sender_id")) == self.api.account_id
                and _same_text(event.get("text"), item.body)
                and (created is None or created >= since)
            ):
                return str(event["id"])
        return None


def _later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def _data_field(body: Mapping[str, Any], field: str) -> str | None:
    data = body.get("data")
    if isinstance(data, dict) and data.get(field) is not None:
        return str(data[field])
    return None


def _same_text(found: Any, sent: str) -> bool:
    return isinstance(found, str) and " ".join(found.split()) == " ".join(sent.split())


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def reply_route(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A Twitter route for an agent's reply, which carries the inbox's neutral payload.

    The reply answers in the room the customer chose: a public mention publicly, in reply to
    that tweet; anything else by DM to the identity the inbox chose.
    """
    route = dict(payload)
    target = payload.get("in_reply_to_external_id")
    if payload.get("visibility") == "public" and target:
        route.update(mode="tweet", in_reply_to_tweet_id=str(target))
    else:
        route["mode"] = "dm"
    return route
