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

Claiming, recording, retrying, recovery and the lookup of unknown rows are the shared
drainer's (connectors/outbox.py), the same as every channel's; `RedditSender` adds only the
transport, the error classification and the lookup. `ack_route` decides how a new case is
acknowledged; the worker's one planner queues it (normalizer/ack_plan.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from connectors.config import OutboxSettings
from connectors.outbox import Failure, Lookup, OutboxDrainer
from connectors.reddit.errors import AuthFailed, auth_failure, retry_wait
from connectors.reddit.parse import ref
from connectors.reddit.settings import RedditSettings
from inbox import outbox
from inbox.i18n import default_or_own
from inbox.models import Case, utcnow
from inbox.outbox import Claimed
from normalizer.ack_plan import AckCase, AckOut, AckRoute
from normalizer.acks import describe_eta

log = logging.getLogger(__name__)

CHANNEL = "reddit"
SUBJECT_MAX = 100  # Reddit refuses longer private message subjects
# Reddit errors that mean a public reply can never be posted there: answer privately instead.
THREAD_CLOSED = {"THREAD_LOCKED", "TOO_OLD", "DELETED_COMMENT", "DELETED_LINK", "DELETED_THING"}
_RATELIMIT_WAIT = re.compile(r"(\d+)\s*(second|minute|millisecond)", re.IGNORECASE)


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


def localized(settings: RedditSettings, key: str, language: str) -> str:
    """The template `key` in the case's language: our translation of the default, or the
    operator's own text as they wrote it."""
    default = str(RedditSettings.model_fields[key].default)
    return default_or_own(language, str(getattr(settings, key)), default)


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
    eta_words: str | None = None,
    language: str = "en",
    status_url: str = "",
) -> AckPlan:
    """One acknowledgement for a new Reddit case, or why none is sent."""
    if target.automated:
        return AckPlan(withheld=f"automated sender: {target.automated}")
    if not target.acknowledge:
        return AckPlan(withheld="imported history is never acknowledged")
    if not target.username:
        return AckPlan(withheld="the author's account is deleted: nobody to answer")
    # The one wording every channel uses (normalizer/acks.py).
    eta = eta_words or describe_eta(now, target.eta_at or target.due_at, timezone)
    publicly = settings.public_replies if public is None else public
    if target.visibility == "public" and publicly and target.fullname:
        body = localized(settings, "public_ack_template", language).format(
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
        # A private message is read by the person alone: the link with its token may go.
        "status_url": status_url,
    }
    subject = localized(settings, "private_ack_subject", language).format(**fields)
    subject = subject[:SUBJECT_MAX]
    return AckPlan(
        recipient=f"u/{target.username}",
        subject=subject,
        body=localized(settings, "private_ack_template", language).format(**fields),
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


# --- the ack route: how a new case is acknowledged -------------------------------------------

# The connector checkpoint row holding what the route must know of the running connector:
# {"account": "<the signed-in account's name>"}, written when the connector signs in
# (connectors/reddit/intake.py); the public template may name the account.
ACK_STATE = (CHANNEL, "ack_route")


def ack_route(settings: RedditSettings, case: AckCase, state: Mapping[str, Any]) -> AckOut | str:
    """A new Reddit case's acknowledgement, or why it gets none. Pure: the worker calls it
    in the transaction that opens the case (normalizer/worker.py), with ACK_STATE's value."""
    plan = plan_ack(
        AckTarget(
            reference=case.reference,
            token=case.token,
            due_at=case.now,  # unused: the worker's ETA wording is passed in
            fullname=case.external_id,
            visibility=case.visibility,
            # The handle is the account id; the name is what a message is addressed to.
            username=case.name if case.handle else "",
            automated=case.automated,
            acknowledge=case.acknowledge,
        ),
        settings,
        str(state.get("account", "")),
        case.now,
        eta_words=case.eta_words,
        language=case.language,
        status_url=case.status_url,
    )
    if plan.withheld is not None:
        return plan.withheld
    return AckOut(
        recipient=plan.recipient,
        subject=plan.subject,
        body=plan.body,
        payload=plan.payload,
        audit={"mode": plan.payload.get("mode")},
    )


def ack_routes(settings: RedditSettings) -> dict[str, AckRoute]:
    """The connector's entry of the ack-route table (connectors/registry.py)."""
    return {CHANNEL: AckRoute(partial(ack_route, settings), state=ACK_STATE)}


# --- delivering ------------------------------------------------------------------------------


class RedditSender:
    """Sends the outbox rows of channel "reddit" through the connector's praw client.

    The shared drainer (connectors/outbox.py) claims, records, retries and recovers; this
    adds Reddit's transport, its error classification and its lookup of unknown rows."""

    channel = CHANNEL
    resend_safe = False  # a comment or message carries no id Reddit could drop a copy by
    # Our own comments and sent messages list everything we posted: absent means never sent.
    resend_if_absent = True

    def __init__(
        self, settings: RedditSettings, reddit: Any, account: str, timezone: str = "UTC"
    ) -> None:
        self.settings = settings
        self.reddit = reddit
        self.account = account
        self.timezone = timezone

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        return None

    def reply_route(self, row: Claimed) -> dict[str, Any]:
        """Where an agent's reply goes (the drainer keeps it on the row)."""
        return reply_route(row.payload, row.recipient)

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

    def refs(self, row: Claimed, provider_id: str | None) -> list[str]:
        # A reply to our reply threads into this case by its parent.
        return [ref(provider_id)] if provider_id else []

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

    def classify(self, exc: BaseException) -> Failure:
        verdict = classify(exc, 1, self.settings.max_rate_wait_seconds)
        if verdict.outcome == "auth":
            # Reddit refused us, not the item, and we stop sending: not an attempt that counts.
            return Failure(False, verdict.reason, pause_s=60.0, stop=AuthFailed(verdict.reason))
        if verdict.outcome == "retry":
            return Failure(True, verdict.reason, delay_s=verdict.delay_s or None)
        if verdict.outcome == "unknown":
            return Failure(False, verdict.reason, unknown=True)
        return Failure(False, verdict.reason, fallback=verdict.closed_thread)

    def fallback(self, conn: Connection, row: Claimed) -> None:
        """The thread is closed to replies: the person still hears back, privately."""
        if row.kind != "ack" or row.payload.get("mode") != "reply":
            return
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

    def reconcile(self, row: Claimed) -> Lookup:
        """Look the row up among our own recent comments or sent messages."""
        found = self._find(row)
        return Lookup(found, self.refs(row, found))

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


def drainer(
    engine: Engine, sender: RedditSender, settings: RedditSettings, worker: str
) -> OutboxDrainer:
    """The shared drainer for Reddit's rows, with Reddit's attempt cap and sending lease."""
    return OutboxDrainer(
        engine,
        sender,
        # A copy, not a validation: Reddit's settings allow a lease of 0 (tests of a crash).
        OutboxSettings().model_copy(
            update={
                "max_attempts": settings.max_send_attempts,
                "lease_seconds": settings.sending_lease_seconds,
                "batch_size": 10,
                # An acknowledgement not sent within this is expired by the drainer, not
                # sent late ("no acks for history").
                "ack_expire_hours": settings.ack_max_age_hours,
            }
        ),
        worker=worker,
    )


def outbox_states(engine: Engine) -> dict[str, int]:
    """How many of Reddit's rows are in each state (the states it has rows in)."""
    states = outbox.counts(engine).get(CHANNEL, {}).get("states", {})
    return {str(state): int(n) for state, n in states.items() if n}


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
