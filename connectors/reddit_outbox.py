"""Reddit acknowledgements and deliveries: the outbox rows of channel "reddit", sent with praw.

Acknowledgements. A new case whose first message came from Reddit gets one:
- a public post or comment gets a short public reply (praw's `reply()`) with the case
  reference and the expected response time, and nothing personal: no name, no text of
  theirs, never the case token (the public template may use only {reference}, {eta} and
  {account}; settings refuse anything else);
- a private message gets the full acknowledgement by private message (`redditor.message()`),
  with the case tag and token in the subject so a reply threads back safely;
- with `public_replies = false`, or when the thread is locked or archived, the
  acknowledgement goes by private message instead;
- automated senders (AutoModerator, Reddit itself), deleted accounts and imported history
  get none, and the case records why.

Delivery keeps the outbox promise for a channel with no idempotency key: a claimed row is
sent once; a failure that may have reached Reddit (5xx, timeout, a crash) makes the row
"unknown", and it is looked up in our own comments or sent messages before any retry.

The claim, record and recovery calls are the shared outbox's (`inbox.outbox`), the same
as every channel's; `sweep_acks` is Reddit's acknowledgement planner.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from connectors.config import OutboxSettings, RedditSettings
from connectors.reddit_errors import AuthFailed, auth_failure, retry_wait
from inbox import outbox
from inbox.db import write
from inbox.models import Case, Intake, Message, Outbox, Receipt, utcnow
from inbox.outbox import Claimed, Result
from normalizer.ack_plan import AckOut, queue_ack
from normalizer.acks import AckLimits, describe_eta
from normalizer.eta import EtaEstimate
from normalizer.reddit import ref

log = logging.getLogger(__name__)

CHANNEL = "reddit"
SUBJECT_MAX = 100  # Reddit refuses longer private message subjects
# Reddit errors that mean a public reply can never be posted there: answer privately instead.
THREAD_CLOSED = {"THREAD_LOCKED", "TOO_OLD", "DELETED_COMMENT", "DELETED_LINK", "DELETED_THING"}
_RATELIMIT_WAIT = re.compile(r"(\d+)\s*(second|minute|millisecond)", re.IGNORECASE)
# The outbox's default retry curve ([outbox] backoff_base_s, backoff_max_s); the number of
# attempts is Reddit's own setting (max_send_attempts).
_RETRY = OutboxSettings()


# --- what to send: pure ----------------------------------------------------------------------


@dataclass(frozen=True)
class AckTarget:
    """What acknowledging a case needs to know about it and its first message."""

    reference: str
    token: str
    due_at: datetime
    fullname: str | None
    visibility: str
    username: str
    automated: str | None = None
    acknowledge: bool = True
    # The queue-based expected response time, when known; else the due time is promised.
    eta_at: datetime | None = None


@dataclass(frozen=True)
class AckPlan:
    withheld: str | None = None
    recipient: str = ""
    subject: str = ""
    body: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


def plan_ack(
    target: AckTarget,
    settings: RedditSettings,
    account: str,
    now: datetime,
    *,
    public: bool | None = None,
    timezone: str = "UTC",
) -> AckPlan:
    """One acknowledgement for a new Reddit case, or why none is sent."""
    if target.automated:
        return AckPlan(withheld=f"automated sender: {target.automated}")
    if not target.acknowledge:
        return AckPlan(withheld="imported history is never acknowledged")
    if not target.username:
        return AckPlan(withheld="the author's account is deleted: nobody to answer")
    # The one wording every channel uses (normalizer/acks.py).
    eta = describe_eta(now, target.eta_at or target.due_at, timezone)
    publicly = settings.public_replies if public is None else public
    if target.visibility == "public" and publicly and target.fullname:
        body = settings.public_ack_template.format(
            reference=target.reference, eta=eta, account=account
        )
        return AckPlan(
            recipient=f"u/{target.username}",
            body=body,
            payload={"mode": "reply", "thing_id": target.fullname},
        )
    fields = {
        "reference": target.reference,
        "token": target.token,
        "eta": eta,
        "account": account,
        "username": target.username,
    }
    subject = settings.private_ack_subject.format(**fields)[:SUBJECT_MAX]
    return AckPlan(
        recipient=f"u/{target.username}",
        subject=subject,
        body=settings.private_ack_template.format(**fields),
        payload={"mode": "message", "to": target.username},
    )


@dataclass(frozen=True)
class Verdict:
    outcome: str  # retry | failed | unknown | auth
    reason: str
    delay_s: float = 0.0
    closed_thread: bool = False


def classify(exc: BaseException, attempts: int, cap_s: float) -> Verdict:
    """What a send error means: may Reddit have the item, and may we try again?"""
    from praw.exceptions import RedditAPIException
    from prawcore import exceptions as core

    if isinstance(exc, RedditAPIException):
        kinds = {item.error_type for item in exc.items}
        text = "; ".join(f"{i.error_type}: {i.message}" for i in exc.items)
        if "RATELIMIT" in kinds:
            found = _RATELIMIT_WAIT.search(text)
            seconds = 60.0
            if found:
                unit = found.group(2).lower()
                seconds = float(found.group(1)) * (60 if unit == "minute" else 1)
                seconds = seconds if unit != "millisecond" else 1.0
            return Verdict("retry", text, min(cap_s, seconds + 1))
        # Reddit answered and refused: it does not have the item, and never will.
        return Verdict("failed", text, closed_thread=bool(kinds & THREAD_CLOSED))
    reason = auth_failure(exc)
    if reason is not None:
        return Verdict("auth", reason)
    if isinstance(exc, core.TooManyRequests):
        return Verdict(
            "retry", "429 Too Many Requests", retry_wait(exc.response.headers, attempts, cap_s)
        )
    if isinstance(exc, core.ServerError | core.RequestException | core.BadJSON):
        # The request may have been carried out before the error: check before resending.
        return Verdict("unknown", f"{type(exc).__name__}: {exc}")
    if isinstance(exc, core.Forbidden):
        return Verdict("failed", f"forbidden: {exc}", closed_thread=True)
    if isinstance(exc, core.ResponseException):
        return Verdict("failed", f"{type(exc).__name__}: {exc}")
    return Verdict("unknown", f"{type(exc).__name__}: {exc}")


# --- planning acknowledgements ------------------------------------------------------------------


def sweep_acks(
    engine: Engine,
    settings: RedditSettings,
    account: str,
    now: datetime | None = None,
    eta: EtaEstimate | None = None,
    limits: AckLimits | None = None,
    timezone: str = "UTC",
) -> int:
    """Queue (or withhold, with the reason) the acknowledgement of each new Reddit case.

    A case is claimed for acknowledging by moving its ack_state from NULL in the same
    transaction as its outbox row, so two sweeps never acknowledge one case twice.
    """
    now = now or utcnow()
    since = now - timedelta(hours=settings.ack_max_age_hours)
    with engine.connect() as conn:
        cases = conn.execute(
            select(Case.id, Case.reference, Case.token, Case.due_at)
            .where(Case.channel == CHANNEL, Case.ack_state.is_(None), Case.created_at >= since)
            .order_by(Case.id)
            .limit(200)
        ).all()
        targets: list[tuple[int, AckTarget]] = []
        for case in cases:
            first = conn.execute(
                select(Message)
                .where(Message.case_id == case.id, Message.direction == "inbound")
                .order_by(Message.received_at, Message.id)
                .limit(1)
            ).one_or_none()
            if first is None:
                continue
            flags = (
                conn.execute(
                    select(Intake.acknowledge)
                    .join(Receipt, Receipt.intake_id == Intake.id)
                    .where(Receipt.message_id == first.id)
                )
                .scalars()
                .all()
            )
            targets.append(
                (
                    case.id,
                    AckTarget(
                        reference=str(case.reference),
                        token=case.token,
                        due_at=case.due_at,
                        eta_at=eta(conn, case.id, case.due_at, now) if eta else None,
                        fullname=first.external_id,
                        visibility=first.visibility,
                        username=first.from_name if first.from_handle else "",
                        automated=first.automated,
                        acknowledge=not flags or any(flags),
                    ),
                )
            )
    planned = 0
    for case_id, target in targets:
        plan = plan_ack(target, settings, account, now, timezone=timezone)
        out: AckOut | str = plan.withheld or AckOut(
            recipient=plan.recipient,
            subject=plan.subject,
            body=plan.body,
            payload=plan.payload,
            audit={"mode": plan.payload.get("mode")},
        )
        with write(engine) as conn:
            # The one planner of every channel (normalizer/ack_plan.py).
            done = queue_ack(
                conn,
                case_id,
                CHANNEL,
                out,
                eta_at=target.eta_at or target.due_at,
                now=now,
                limits=limits,
                audit_withheld={"channel": CHANNEL},
            )
        if done is not None:
            planned += 1
    return planned


# --- delivering ------------------------------------------------------------------------------


class RedditDelivery:
    """Drains the outbox rows of channel "reddit" through the connector's praw client."""

    def __init__(
        self,
        engine: Engine,
        settings: RedditSettings,
        reddit: Any,
        account: str,
        worker: str,
        connector: Any = None,
        eta: EtaEstimate | None = None,
        ack_limits: AckLimits | None = None,
        timezone: str = "UTC",
    ) -> None:
        self.timezone = timezone
        self.eta = eta
        self.ack_limits = ack_limits
        self.engine = engine
        self.settings = settings
        self.reddit = reddit
        self.account = account
        self.worker = worker
        self.connector = connector
        # Tests stop here to play a crash after Reddit accepted an item, before we recorded it.
        self.after_send: Any = None
        self._checked: dict[int, float] = {}
        self._details: dict[str, Any] = {}

    def tick(self, halt: threading.Event | None = None) -> dict[str, int]:
        halt = halt or threading.Event()
        counts = dict.fromkeys(
            ("planned", "expired", "reconciled", "sent", "retry", "unknown", "failed"), 0
        )
        counts["planned"] = sweep_acks(
            self.engine,
            self.settings,
            self.account,
            eta=self.eta,
            limits=self.ack_limits,
            timezone=self.timezone,
        )
        # Look before writing: on SQLite a write transaction holds up intake, and most ticks
        # find nothing due and no lease run out.
        if outbox.has_work(self.engine, CHANNEL):
            counts["expired"] = outbox.recover(self.engine, CHANNEL, resend=False)
        counts["reconciled"] = self.reconcile(halt)
        rows: list[Claimed] = []
        if outbox.has_work(self.engine, CHANNEL):
            rows = [
                self._routed(row)
                for row in outbox.claim(
                    self.engine,
                    CHANNEL,
                    self.worker,
                    limit=10,
                    lease=timedelta(seconds=self.settings.sending_lease_seconds),
                )
            ]
        for index, row in enumerate(rows):
            if halt.is_set():
                for rest in rows[index:]:
                    # Never sent: back in the queue, and no attempt counted.
                    outbox.release(
                        self.engine, rest, self.worker, "stopped before sending", utcnow()
                    )
                break
            counts[self.deliver(row)] += 1
        self._summarise()
        return counts

    def deliver(self, row: Claimed) -> str:
        try:
            provider_id = self.send(row)
        except Exception as exc:
            verdict = classify(exc, row.attempts + 1, self.settings.max_rate_wait_seconds)
            return self._failed(row, verdict)
        if self.after_send is not None:
            self.after_send(row)
        # A reply to our reply threads into this case by its parent.
        refs = [ref(provider_id)] if provider_id else []
        outbox.record(
            self.engine, row, self.worker, Result("sent", provider_id=provider_id, refs=refs)
        )
        log.info("reddit %s for case %s sent as %s", row.kind, row.case_id, provider_id)
        return "sent"

    def _routed(self, row: Claimed) -> Claimed:
        if row.payload.get("mode"):
            return row
        # An agent's reply from the inbox: give it a route, and keep it on the row so a
        # check after a crash looks in the right place.
        route = reply_route(row.payload, row.recipient)
        outbox.save_route(self.engine, row.id, route)
        return dataclasses.replace(row, payload=route)

    def send(self, row: Claimed) -> str | None:
        mode = row.payload.get("mode")
        if mode == "reply":
            thing = self._thing(str(row.payload.get("thing_id", "")))
            created = thing.reply(row.body)
            # None when Reddit made it but did not say (quarantined subreddits).
            return str(created.fullname) if created is not None else None
        if mode == "message":
            to = str(row.payload.get("to", ""))
            self.reddit.redditor(to).message(subject=row.subject, message=row.body)
            # Compose answers without an id; our sent folder has it (best effort).
            try:
                return self._find(row)
            except Exception:
                return None
        raise ValueError(f"outbox row {row.id}: unknown Reddit delivery mode {mode!r}")

    def _thing(self, fullname: str) -> Any:
        import praw

        kind, _, id36 = fullname.partition("_")
        if kind == "t1":
            return self.reddit.comment(id=id36)
        if kind == "t3":
            return self.reddit.submission(id=id36)
        if kind == "t4":
            return praw.models.Message(self.reddit, {"id": id36, "name": fullname})
        raise ValueError(f"cannot reply to {fullname!r}")

    def _failed(self, row: Claimed, verdict: Verdict) -> str:
        number = row.attempts + 1  # this attempt
        if verdict.outcome == "auth":
            # Reddit refused us, not the item, and we stop sending: not an attempt that counts.
            outbox.release(
                self.engine, row, self.worker, verdict.reason, utcnow() + timedelta(seconds=60)
            )
            raise AuthFailed(verdict.reason)
        if verdict.outcome == "retry" and number < self.settings.max_send_attempts:
            delay = verdict.delay_s or outbox.backoff(
                number, _RETRY.backoff_base_s, _RETRY.backoff_max_s
            )
            at = utcnow() + timedelta(seconds=delay)
            outbox.record(
                self.engine, row, self.worker, Result("retry", verdict.reason, next_attempt_at=at)
            )
            return "retry"
        if verdict.outcome == "unknown":
            outbox.record(self.engine, row, self.worker, Result("unknown", verdict.reason))
            return "unknown"
        reason = verdict.reason
        if verdict.outcome == "retry":
            reason = f"gave up after {number} attempts: {reason}"
        fallback = (
            verdict.closed_thread and row.kind == "ack" and row.payload.get("mode") == "reply"
        )

        def private_instead(conn: Connection) -> None:
            # The thread is closed to replies: the person still hears back, privately.
            self._private_instead(conn, row)

        outbox.record(
            self.engine,
            row,
            self.worker,
            Result("failed", reason),
            then=private_instead if fallback else None,
        )
        return "failed"

    def _private_instead(self, conn: Connection, row: Claimed) -> None:
        case = conn.execute(
            select(Case.reference, Case.token, Case.due_at).where(Case.id == row.case_id)
        ).one_or_none()
        if case is None:
            return
        target = AckTarget(
            reference=str(case.reference),
            token=case.token,
            due_at=case.due_at,
            fullname=None,
            visibility="private",
            username=row.recipient.removeprefix("u/"),
        )
        plan = plan_ack(
            target, self.settings, self.account, utcnow(), public=False, timezone=self.timezone
        )
        outbox.enqueue(
            conn,
            case_id=row.case_id,
            kind="ack",
            channel=CHANNEL,
            recipient=plan.recipient,
            subject=plan.subject,
            body=plan.body,
            payload={**plan.payload, "instead_of": row.id},
        )
        # The case is still being acknowledged, by the private message now queued.
        conn.execute(
            update(Case)
            .where(Case.id == row.case_id)
            .values(ack_state="queued", ack_reason="the public reply failed: sent privately")
        )

    # unknown outcomes ---------------------------------------------------------------------

    def reconcile(self, halt: threading.Event) -> int:
        """Look each "unknown" row up at Reddit: found -> sent; absent -> queued again."""
        resolved = 0
        now = time.monotonic()
        for row in outbox.unknown_rows(self.engine, CHANNEL, limit=20):
            if halt.is_set():
                break
            if now - self._checked.get(row.id, -1e9) < 60:
                continue  # checked a moment ago; Reddit is likely still unreachable
            self._checked[row.id] = now
            try:
                provider_id = self._find(row)
            except Exception as exc:
                if auth_failure(exc):
                    raise AuthFailed(str(auth_failure(exc))) from exc
                # Cannot know now: the row stays "unknown" (visible to agents) and is
                # checked again later. It is never resent blindly.
                log.warning("could not check outbox row %s at Reddit: %s", row.id, exc)
                continue
            if outbox.resolve_unknown(
                self.engine,
                row.id,
                found=provider_id is not None,
                provider_id=provider_id,
                refs=[ref(provider_id)] if provider_id else [],
            ):
                resolved += 1
                self._checked.pop(row.id, None)
        return resolved

    def _find(self, row: Claimed) -> str | None:
        """The fullname of this row's item among our own recent comments or sent messages."""
        mode = row.payload.get("mode")
        if mode == "reply":
            listing = self.reddit.request(
                method="GET", path=f"user/{self.account}/comments/", params={"limit": 100}
            )
            for child in listing["data"]["children"]:
                data = child.get("data", {})
                if data.get("parent_id") == row.payload.get("thing_id") and _same(
                    data.get("body"), row.body
                ):
                    return str(data["name"])
            return None
        if mode == "message":
            listing = self.reddit.request(method="GET", path="message/sent/", params={"limit": 100})
            to = str(row.payload.get("to", "")).lower()
            for child in listing["data"]["children"]:
                data = child.get("data", {})
                if (
                    str(data.get("dest", "")).lower() == to
                    and data.get("subject") == row.subject
                    and _same(data.get("body"), row.body)
                ):
                    return str(data["name"])
            return None
        return None

    # status -----------------------------------------------------------------------------

    def _summarise(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Outbox.state, func.count())
                .where(Outbox.channel == CHANNEL)
                .group_by(Outbox.state)
            ).all()
        self._details = {str(state): int(count) for state, count in rows}

    def details(self) -> dict[str, Any]:
        return dict(self._details)


def _same(a: Any, b: str) -> bool:
    return isinstance(a, str) and a.strip() == b.strip()


def reply_route(payload: Mapping[str, Any], recipient: str) -> dict[str, Any]:
    """A Reddit route for an agent's reply, which carries the inbox's neutral payload.

    A public post or comment is answered with a public reply to it; a private message, or
    anything without a public item to answer, by private message to the identity.
    """
    route = dict(payload)
    target = payload.get("in_reply_to_external_id")
    if payload.get("visibility") == "public" and target:
        route.update(mode="reply", thing_id=str(target))
    else:
        route.update(mode="message", to=recipient.removeprefix("u/"))
    return route
