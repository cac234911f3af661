"""Customer satisfaction (CSAT): one question after a case is resolved, on its own channel.

The decisions are small pure functions tested by tables (`decide`, `parse_answer`, `sign`,
`verify`, `compose`, `figures`); the store is touched at the edges (`plan_due`,
`answer_open`, `record_rating`, `opt_out`, `csat_by`).

- How a channel is asked is a fact of the channel registry (`ChannelFacts.survey`): a link
  to the one-click rating page (email, web, DMs), a bare 1-5 reply (SMS, WhatsApp,
  Telegram), or nothing. It is always asked privately, through the outbox, like a reply.
- One survey per case: `csat_surveys.case_id` is unique and the row is written in the
  transaction that queues the question, also when the survey is not asked (with why).
- A contact is asked at most once per `throttle_days`, never after opting out ("STOP" to a
  survey, or the page's opt-out), never on a channel whose reply window has closed.
- Every wording (the question, the page's words) is in `[csat.wording.<language>]`, one
  table per language, so translating is one table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, model_validator
from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from inbox import audit
from inbox.channels import CHANNEL_FACTS, MESSAGE_ID_CHANNELS
from inbox.config import Strict
from inbox.db import write
from inbox.models import Case, Contact, CsatSurvey, Identity, Message, Outbox, User, utcnow
from inbox.references import case_tag

RATINGS = (1, 2, 3, 4, 5)
# A rating of 4 or 5 is "satisfied": the CSAT score is their share of the answers.
SATISFIED = 4
MAX_COMMENT = 2000
DIMENSIONS = ("channel", "side", "agent")


class CsatWording(Strict):
    """Every word a survey says in one language: the question and the rating page."""

    subject: str = "{tag} How did we do?"
    link: str = (
        "Hello {name},\n\n"
        "your case {reference} is resolved. How did we do? One click tells us:\n\n"
        "{url}\n\n"
        "This is the only time we ask about this case."
    )
    reply: str = (
        "Case {reference} is resolved. How did we do? Reply with one number, "
        "1 (poor) to 5 (great). Reply STOP and we will not ask again."
    )
    page_title: str = "How did we do?"
    page_question: str = "How satisfied are you with how we handled case {reference}?"
    rating_labels: list[str] = Field(
        default_factory=lambda: ["1 Very poor", "2 Poor", "3 OK", "4 Good", "5 Great"],
        min_length=5,
        max_length=5,
    )
    page_thanks: str = "Thank you. Your rating: {rating} of 5."
    page_comment: str = "Anything you want to add? (optional)"
    page_send: str = "Send"
    page_comment_thanks: str = "Thank you for your comment."
    page_opt_out: str = "Don't ask me again"
    page_opted_out: str = "You will not be asked again."
    page_closed: str = "This survey is closed."
    page_unknown: str = "This link is not valid."
    page_busy: str = "Too many requests. Please try again in a few minutes."


class CsatSettings(Strict):
    """[csat] in settings.toml: satisfaction surveys after a case is resolved."""

    # Off by default: turning it on starts writing to customers.
    enabled: bool = False
    # How long after the case is resolved the question goes (a quick reopen cancels it).
    delay_minutes: int = Field(default=60, ge=0, le=43200)
    # A contact gets at most one survey in this many days, whatever the number of cases.
    throttle_days: int = Field(default=7, ge=0, le=3660)
    # How long a survey takes an answer (the page, or a bare 1-5 reply).
    answer_days: int = Field(default=7, ge=1, le=90)
    # Cases resolved longer ago than this are never asked (turning surveys on asks no history).
    lookback_days: int = Field(default=3, ge=1, le=90)
    # The public base URL of the rating page (https://support.example.com); without it,
    # link channels are not asked.
    public_url: str = ""
    # The environment variable holding the secret the rating links are signed with.
    secret_env: str = "PARITY_CSAT_SECRET"  # noqa: S105 (a name)
    # The language of the wording used (a key of `wording`).
    language: str = "en"
    wording: dict[str, CsatWording] = Field(default_factory=lambda: {"en": CsatWording()})
    # The rating page's rate limit per client address (token bucket).
    page_per_address_burst: int = Field(default=20, ge=1)
    page_per_address_per_hour: int = Field(default=120, ge=1)
    # Surveys decided per pass of the planner, and how often it runs in `parity run`.
    batch: int = Field(default=200, ge=1, le=10000)
    interval_s: int = Field(default=60, ge=1, le=86400)

    @model_validator(mode="after")
    def _language_known(self) -> CsatSettings:
        if self.language not in self.wording:
            raise ValueError(f"language {self.language!r} has no [csat.wording.{self.language}]")
        return self

    def words(self) -> CsatWording:
        return self.wording[self.language]


# --- pure decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SurveyFacts:
    """What deciding one case's survey needs, read from the store in its transaction."""

    case_channel: str
    handle: str | None
    opted_out: bool
    # When this contact was last asked (any case, any channel), if ever.
    last_asked_at: datetime | None
    # When this identity last wrote to us on the survey's channel (for reply windows).
    last_inbound_at: datetime | None
    now: datetime
    throttle: timedelta
    link_ready: bool


@dataclass(frozen=True)
class Ask:
    mode: Literal["link", "reply"]
    channel: str


def decide(facts: SurveyFacts) -> Ask | str:
    """Ask (how and where), or the reason the case is not asked."""
    channel = CHANNEL_FACTS.get(facts.case_channel)
    if channel is None or channel.survey == "none":
        return f"no survey on {facts.case_channel}"
    reply_channel = CHANNEL_FACTS[channel.reply_channel]
    if "private" not in reply_channel.visibilities:
        # A survey is never a public post: a channel without private messages is not asked.
        return f"{facts.case_channel} has no private messages"
    if facts.opted_out:
        return "the contact opted out of surveys"
    if not facts.handle:
        return "no identity to ask"
    if facts.last_asked_at is not None and facts.now - facts.last_asked_at < facts.throttle:
        return f"the contact was asked at {facts.last_asked_at.isoformat(timespec='seconds')}"
    window = reply_channel.reply_window
    if window.free_hours:
        last = facts.last_inbound_at
        if last is None or facts.now - last > timedelta(hours=window.free_hours):
            return f"outside {reply_channel.name}'s {window.free_hours}-hour reply window"
    if channel.survey == "link" and not facts.link_ready:
        return "no rating page: [csat] public_url or its secret is not set"
    return Ask(channel.survey, reply_channel.name)


_RATING = re.compile(r"\s*([1-5])\s*(?:/\s*5)?\s*[.!]*\s*", re.ASCII)
_STOP = frozenset({"stop", "stopp", "unsubscribe", "stop all", "opt out", "optout"})


def parse_answer(text: str) -> int | Literal["stop"] | None:
    """A reply to an open survey: a rating (a bare 1-5, "4.", "4/5"), "stop", or None for
    anything else, which threads into a case as usual."""
    if len(text) > 40:
        return None
    found = _RATING.fullmatch(text)
    if found:
        return int(found.group(1))
    if " ".join(text.strip().strip(".!").lower().split()) in _STOP:
        return "stop"
    return None


def sign(secret: bytes, survey_id: int) -> str:
    """The rating link's token: the survey's id and an HMAC of it, URL-safe."""
    mac = hmac.new(secret, f"csat:{survey_id}".encode(), hashlib.sha256).digest()[:18]
    return f"{survey_id}-{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def verify(secret: bytes, token: str) -> int | None:
    """The survey id a token names, or None when it is not ours."""
    head, sep, _ = token.partition("-")
    if not sep or not head.isdigit() or len(head) > 18 or len(token) > 64:
        return None
    survey_id = int(head)
    return survey_id if hmac.compare_digest(sign(secret, survey_id), token) else None


def survey_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/csat/{token}"


def compose(
    words: CsatWording, ask: Ask, *, reference: str, token: str, name: str, url: str
) -> tuple[str, str]:
    """(subject, body) of the question: the subject only where messages have one."""
    values = {
        "reference": reference,
        "tag": case_tag(reference, token),
        "name": name or "there",
        "url": url,
    }
    body = (words.link if ask.mode == "link" else words.reply).format(**values)
    subject = words.subject.format(**values) if ask.channel in MESSAGE_ID_CHANNELS else ""
    return subject, body


@dataclass(frozen=True)
class Figures:
    """One group's survey results."""

    asked: int
    answered: int
    response_rate_pct: float | None
    average: float | None
    csat_pct: float | None
    ratings: dict[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "asked": self.asked,
            "answered": self.answered,
            "response_rate_pct": self.response_rate_pct,
            "average": self.average,
            "csat_pct": self.csat_pct,
            "ratings": {str(k): v for k, v in self.ratings.items()},
        }


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def figures(ratings: Iterable[int | None]) -> Figures:
    """Results of asked surveys, given each one's rating (None: not answered)."""
    counts = dict.fromkeys(RATINGS, 0)
    asked = 0
    for rating in ratings:
        asked += 1
        if rating is not None:
            counts[rating] += 1
    return _figures(asked, counts)


def _figures(asked: int, counts: Mapping[int, int]) -> Figures:
    answered = sum(counts.values())
    total = sum(r * n for r, n in counts.items())
    satisfied = sum(n for r, n in counts.items() if r >= SATISFIED)
    return Figures(
        asked=asked,
        answered=answered,
        response_rate_pct=_pct(answered, asked),
        average=round(total / answered, 2) if answered else None,
        csat_pct=_pct(satisfied, answered),
        ratings=dict(counts),
    )


# --- the store: asking ------------------------------------------------------------------------


def link_ready(settings: CsatSettings, secret: bytes | None) -> bool:
    return bool(settings.public_url and secret)


def plan_due(
    engine: Engine, settings: CsatSettings, secret: bytes | None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Decide the survey of every case resolved at least `delay_minutes` ago (and within
    `lookback_days`) that has none yet; each in its own transaction. What was decided."""
    now = now or utcnow()
    due_before = now - timedelta(minutes=settings.delay_minutes)
    not_before = now - timedelta(days=settings.lookback_days)
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                select(Case.id)
                .outerjoin(CsatSurvey, CsatSurvey.case_id == Case.id)
                .where(
                    Case.status == "resolved",
                    Case.resolved_at <= due_before,
                    Case.resolved_at >= not_before,
                    CsatSurvey.id.is_(None),
                )
                .order_by(Case.resolved_at, Case.id)
                .limit(settings.batch)
            ).scalars()
        )
        conn.rollback()
    done = []
    for case_id in ids:
        with write(engine) as conn:
            outcome = _plan_one(conn, case_id, settings, secret, now, due_before)
        if outcome is not None:
            done.append(outcome)
    return done


def _opener(conn: Connection, case: Any) -> Any:
    """The case's first inbound message from its own contact, with its identity."""
    return conn.execute(
        select(Message.visibility, Identity.id, Identity.handle, Identity.display_name)
        .join(Identity, Identity.id == Message.identity_id, isouter=True)
        .where(Message.case_id == case.id, Message.direction == "inbound")
        .order_by(Message.received_at, Message.id)
        .limit(1)
    ).one_or_none()


def _plan_one(
    conn: Connection,
    case_id: int,
    settings: CsatSettings,
    secret: bytes | None,
    now: datetime,
    due_before: datetime,
) -> dict[str, Any] | None:
    case = conn.execute(select(Case).where(Case.id == case_id).with_for_update()).one()
    resolved = case.status == "resolved" and case.resolved_at is not None
    if not resolved or case.resolved_at > due_before:
        return None  # reopened meanwhile: a later resolve decides again
    if conn.execute(select(CsatSurvey.id).where(CsatSurvey.case_id == case_id)).first():
        return None  # another planner decided it
    opener = _opener(conn, case)
    contact = conn.execute(
        select(Contact.name, Contact.csat_opt_out_at).where(Contact.id == case.contact_id)
    ).one()
    identity_id = opener.id if opener is not None and opener.id is not None else None
    handle = opener.handle if identity_id is not None else None
    facts_channel = CHANNEL_FACTS.get(case.channel)
    reply_channel = facts_channel.reply_channel if facts_channel else case.channel
    last_inbound = None
    if identity_id is not None:
        last_inbound = conn.execute(
            select(func.max(Message.received_at)).where(
                Message.identity_id == identity_id,
                Message.channel == reply_channel,
                Message.direction == "inbound",
            )
        ).scalar_one_or_none()
    last_asked = conn.execute(
        select(func.max(CsatSurvey.asked_at)).where(
            CsatSurvey.contact_id == case.contact_id, CsatSurvey.state != "skipped"
        )
    ).scalar_one_or_none()
    decision = decide(
        SurveyFacts(
            case_channel=case.channel,
            handle=handle,
            opted_out=contact.csat_opt_out_at is not None,
            last_asked_at=last_asked,
            last_inbound_at=last_inbound,
            now=now,
            throttle=timedelta(days=settings.throttle_days),
            link_ready=link_ready(settings, secret),
        )
    )
    side = opener.visibility if opener is not None else "private"
    row = {
        "case_id": case_id,
        "contact_id": case.contact_id,
        "identity_id": identity_id,
        "case_channel": case.channel,
        "side": side,
        "agent_id": case.assignee_id,
        "language": settings.language,
        "asked_at": now,
    }
    if isinstance(decision, str):
        survey_id = conn.execute(
            insert(CsatSurvey)
            .values(
                **row, channel=reply_channel, mode="none", state="skipped", reason=decision[:256]
            )
            .returning(CsatSurvey.id)
        ).scalar_one()
        audit.append(
            conn,
            actor="system",
            action="csat.skipped",
            case_id=case_id,
            after={"survey_id": survey_id, "reason": decision},
        )
        return {"case": case.reference, "asked": False, "reason": decision}
    assert handle is not None
    survey_id = conn.execute(
        insert(CsatSurvey)
        .values(**row, channel=decision.channel, mode=decision.mode, state="asked")
        .returning(CsatSurvey.id)
    ).scalar_one()
    token = sign(secret, survey_id) if secret else ""
    url = survey_url(settings.public_url, token) if decision.mode == "link" else ""
    subject, body = compose(
        settings.words(),
        decision,
        reference=case.reference,
        token=case.token,
        name=(opener.display_name if opener is not None else "") or contact.name,
        url=url,
    )
    # The neutral payload of a private reply: every channel's sender routes it as a DM.
    payload = {"visibility": "private", "identity_id": identity_id, "survey_id": survey_id}
    outbox_id = conn.execute(
        insert(Outbox)
        .values(
            case_id=case_id,
            kind="survey",
            channel=decision.channel,
            recipient=handle,
            subject=subject,
            body=body,
            payload=payload,
            state="queued",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            created_by="system",
        )
        .returning(Outbox.id)
    ).scalar_one()
    conn.execute(update(CsatSurvey).where(CsatSurvey.id == survey_id).values(outbox_id=outbox_id))
    # On the case's timeline like a reply, so an agent sees what the customer was asked.
    conn.execute(
        insert(Message).values(
            case_id=case_id,
            identity_id=None,
            channel=decision.channel,
            direction="outbound",
            visibility="private",
            dedup_key=f"outbox:{outbox_id}",
            external_id=None,
            from_handle="",
            from_name="survey",
            subject=subject,
            text=body,
            html=None,
            sent_at=None,
            received_at=now,
            raw_sha256=None,
            thread={"in_reply_to": [], "references": [], "conversation": []},
            automated=None,
            meta={"kind": "survey", "outbox_id": outbox_id, "to": handle},
        )
    )
    audit.append(
        conn,
        actor="system",
        action="csat.sent",
        case_id=case_id,
        after={
            "survey_id": survey_id,
            "outbox_id": outbox_id,
            "channel": decision.channel,
            "mode": decision.mode,
        },
    )
    return {
        "case": case.reference,
        "asked": True,
        "mode": decision.mode,
        "channel": decision.channel,
    }


# --- the store: answers -----------------------------------------------------------------------


def _open_for(conn: Connection, identity_id: int, now: datetime, answer_days: int) -> Any:
    return conn.execute(
        select(CsatSurvey.id, CsatSurvey.case_id, CsatSurvey.contact_id)
        .where(
            CsatSurvey.identity_id == identity_id,
            CsatSurvey.mode == "reply",
            CsatSurvey.state == "asked",
            CsatSurvey.asked_at >= now - timedelta(days=answer_days),
        )
        .order_by(CsatSurvey.asked_at.desc(), CsatSurvey.id.desc())
        .limit(1)
    ).one_or_none()


@dataclass(frozen=True)
class Answered:
    survey_id: int
    case_id: int
    answer: int | Literal["stop"]


def answer_open(
    conn: Connection, identity_id: int | None, text: str, now: datetime, answer_days: int
) -> Answered | None:
    """A bare 1-5 (or STOP) from an identity with an open reply survey: recorded in the
    caller's transaction (the normalizer's, which files the message into the surveyed case
    without reopening it). None for anything else: it threads as usual."""
    if identity_id is None:
        return None
    answer = parse_answer(text)
    if answer is None:
        return None
    survey = _open_for(conn, identity_id, now, answer_days)
    if survey is None:
        return None
    if answer == "stop":
        opt_out(conn, survey.contact_id, survey.id, via="reply", now=now)
    else:
        _record(conn, survey.id, survey.case_id, answer, None, via="reply", now=now)
    return Answered(survey.id, survey.case_id, answer)


def _record(
    conn: Connection,
    survey_id: int,
    case_id: int,
    rating: int,
    comment: str | None,
    *,
    via: str,
    now: datetime,
) -> None:
    values: dict[str, Any] = {"rating": rating, "state": "answered", "answered_at": now}
    if comment is not None:
        values["comment"] = comment
    conn.execute(update(CsatSurvey).where(CsatSurvey.id == survey_id).values(**values))
    audit.append(
        conn,
        actor="customer",
        action="csat.answered",
        case_id=case_id,
        after={
            "survey_id": survey_id,
            "rating": rating,
            "via": via,
            "comment": comment is not None,
        },
    )


def clean_comment(text: str) -> str:
    """A comment as stored: control characters out (newlines kept), bounded."""
    kept = "".join(c for c in text if c in "\n\t" or (c.isprintable() and c != "\x7f"))
    return kept.strip()[:MAX_COMMENT]


@dataclass(frozen=True)
class SurveyView:
    id: int
    case_id: int
    reference: str
    state: str
    mode: str
    rating: int | None
    comment: str | None
    open: bool
    opted_out: bool


def view(
    engine: Engine, survey_id: int, answer_days: int, now: datetime | None = None
) -> SurveyView | None:
    now = now or utcnow()
    with engine.connect() as conn:
        row = conn.execute(
            select(CsatSurvey, Case.reference, Contact.csat_opt_out_at)
            .join(Case, Case.id == CsatSurvey.case_id)
            .join(Contact, Contact.id == CsatSurvey.contact_id)
            .where(CsatSurvey.id == survey_id)
        ).one_or_none()
        conn.rollback()
    if row is None or row.mode != "link":
        return None
    survey = row
    still = survey.state in ("asked", "answered") and now - survey.asked_at <= timedelta(
        days=answer_days
    )
    return SurveyView(
        id=survey.id,
        case_id=survey.case_id,
        reference=row.reference or "",
        state=survey.state,
        mode=survey.mode,
        rating=survey.rating,
        comment=survey.comment,
        open=still,
        opted_out=row.csat_opt_out_at is not None,
    )


def record_rating(
    engine: Engine,
    survey_id: int,
    rating: int,
    comment: str | None,
    answer_days: int,
    now: datetime | None = None,
) -> bool:
    """The rating page's answer (a later click changes it, while the survey is open)."""
    if rating not in RATINGS:
        raise ValueError("a rating is 1 to 5")
    now = now or utcnow()
    with write(engine) as conn:
        survey = conn.execute(
            select(CsatSurvey.id, CsatSurvey.case_id, CsatSurvey.state, CsatSurvey.asked_at)
            .where(CsatSurvey.id == survey_id)
            .with_for_update()
        ).one_or_none()
        if survey is None or survey.state not in ("asked", "answered"):
            return False
        if now - survey.asked_at > timedelta(days=answer_days):
            return False
        _record(conn, survey.id, survey.case_id, rating, comment, via="link", now=now)
    return True


def opt_out(
    conn: Connection, contact_id: int, survey_id: int | None, *, via: str, now: datetime
) -> None:
    """The person asked not to be surveyed again: recorded on the contact, audited."""
    conn.execute(
        update(Contact)
        .where(Contact.id == contact_id, Contact.csat_opt_out_at.is_(None))
        .values(csat_opt_out_at=now)
    )
    case_id = None
    if survey_id is not None:
        case_id = conn.execute(
            select(CsatSurvey.case_id).where(CsatSurvey.id == survey_id)
        ).scalar_one_or_none()
    audit.append(
        conn,
        actor="customer",
        action="csat.opted_out",
        case_id=case_id,
        after={"contact_id": contact_id, "survey_id": survey_id, "via": via},
    )


def opt_out_by_survey(engine: Engine, survey_id: int, now: datetime | None = None) -> bool:
    now = now or utcnow()
    with write(engine) as conn:
        contact_id = conn.execute(
            select(CsatSurvey.contact_id).where(CsatSurvey.id == survey_id)
        ).scalar_one_or_none()
        if contact_id is None:
            return False
        opt_out(conn, contact_id, survey_id, via="link", now=now)
    return True


# --- results ----------------------------------------------------------------------------------


def _key_column(dimension: str) -> Any:
    if dimension == "channel":
        return CsatSurvey.case_channel
    if dimension == "side":
        return CsatSurvey.side
    if dimension == "agent":
        return func.coalesce(User.name, "(unassigned)")
    raise ValueError(f"dimension is one of {', '.join(DIMENSIONS)}")


def csat_by(
    engine: Engine, dimension: str, since: datetime, until: datetime
) -> dict[str, dict[str, Any]]:
    """Survey results per channel, side or agent, of surveys asked in [since, until).

    Counted in SQL (counts per rating, grouped), so it costs one GROUP BY at any size;
    `figures` is the same arithmetic over a list, the tests' oracle. Surveys not asked
    (skipped) are not counted: the response rate is answers over questions asked.
    """
    key = _key_column(dimension).label("key")
    query = (
        select(key, CsatSurvey.rating, func.count())
        .select_from(CsatSurvey)
        .outerjoin(User, User.id == CsatSurvey.agent_id)
        .where(
            CsatSurvey.state != "skipped",
            and_(CsatSurvey.asked_at >= since, CsatSurvey.asked_at < until),
        )
        .group_by(key, CsatSurvey.rating)
    )
    grouped: dict[str, tuple[int, dict[int, int]]] = {}
    with engine.connect() as conn:
        for name, rating, number in conn.execute(query):
            asked, counts = grouped.get(str(name), (0, dict.fromkeys(RATINGS, 0)))
            if rating is not None:
                counts[int(rating)] += int(number)
            grouped[str(name)] = (asked + int(number), counts)
        conn.rollback()
    return {
        name: _figures(asked, counts).as_dict() for name, (asked, counts) in sorted(grouped.items())
    }


def report(engine: Engine, since: datetime, until: datetime) -> dict[str, Any]:
    """Every dimension's results and the total, for `parity csat` and the manager page."""
    result: dict[str, Any] = {d: csat_by(engine, d, since, until) for d in DIMENSIONS}
    total = {"asked": 0, "answered": 0}
    counts = dict.fromkeys(RATINGS, 0)
    for entry in result["channel"].values():
        total["asked"] += entry["asked"]
        for rating, number in entry["ratings"].items():
            counts[int(rating)] += number
    result["total"] = _figures(total["asked"], counts).as_dict()
    result["since"] = since.isoformat(timespec="seconds")
    result["until"] = until.isoformat(timespec="seconds")
    return result


def text_table(result: Mapping[str, Any], dimensions: Sequence[str] = DIMENSIONS) -> str:
    """The command's readable table: one block per dimension."""
    lines: list[str] = []
    for dimension in dimensions:
        lines.append(
            f"{dimension:<16} {'asked':>6} {'answered':>8} {'rate':>7} {'avg':>5} {'CSAT':>7}"
        )
        for name, entry in result[dimension].items():
            lines.append(_row(name, entry))
        lines.append("")
    lines.append(_row("total", result["total"]))
    return "\n".join(lines) + "\n"


def _row(name: str, entry: Mapping[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}%"

    average = "-" if entry["average"] is None else f"{entry['average']:.2f}"
    return (
        f"{name[:16]:<16} {entry['asked']:>6} {entry['answered']:>8} "
        f"{pct(entry['response_rate_pct']):>7} {average:>5} {pct(entry['csat_pct']):>7}"
    )


def speed_and_csat_text(by_channel: Mapping[str, Mapping[str, Any]]) -> str:
    """`parity audit`'s lines of satisfaction next to speed (report.add_csat's entries)."""
    if not by_channel:
        return ""
    lines = ["", f"{'channel':<12} {'first p50 s':>11} {'CSAT':>7} {'answered':>9} {'rate':>7}"]
    for name, e in by_channel.items():
        p50 = "-" if e["first_response_p50_s"] is None else f"{e['first_response_p50_s']:.0f}"
        csat = "-" if e["csat_pct"] is None else f"{e['csat_pct']:.1f}%"
        rate = "-" if e["response_rate_pct"] is None else f"{e['response_rate_pct']:.1f}%"
        lines.append(f"{name[:12]:<12} {p50:>11} {csat:>7} {e['answered']:>9} {rate:>7}")
    return "\n".join(lines) + "\n"
