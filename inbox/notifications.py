"""Notifications for an agent: a case assigned to me, a customer answered on my case, a case
of mine about to breach; read in the page (bell, list, browser notifications) and, if the
agent asks for it, in an email digest.

A notification is stored per agent, once per (case, kind, turn): the turn is the case's
current wait for us (inbox/turns.py), so a customer writing three times before we answer is
one "answered", and a breach sweep run every minute is one "breach" per turn. The unique
constraint says it, so two processes racing add one row (INSERT ... ON CONFLICT DO NOTHING).

"About to breach" is found by a sweep (`sweep_breaches`), run by `parity run` every minute
(and by `parity notifications sweep`), never by reading: a page that asks for its
notifications writes nothing. Open pages learn of new ones through a live stream that
watches `signature` (inbox/web/notify_page.py). The digest is sent through the outbox like
any mail, so it is retried, logged and never sent twice, and goes out at most once per
period per agent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, exists, func, select, update

from inbox import outbox, snooze
from inbox.channels import MAIL_CHANNEL
from inbox.db import insert_ignore, read, write
from inbox.models import Case, CaseTurn, Notification, User, utcnow
from inbox.references import format_reference

KINDS: tuple[str, ...] = ("assigned", "answered", "breach")
# Cases whose open turn can breach: waiting for us (pending_customer waits for them).
BREACH_STATUSES = ("new", "open")
MAX_ADDRESS = 320
LIST_MAX = 100
# A digest lists at most this many; the rest are counted and wait in the page.
DIGEST_MAX = 50


class BadPrefs(ValueError):
    pass


@dataclass(frozen=True)
class Prefs:
    kinds: frozenset[str] = frozenset(KINDS)
    browser: bool = True
    digest: bool = False  # off by default: mail is opt-in

    def as_dict(self) -> dict[str, Any]:
        return {
            "kinds": [k for k in KINDS if k in self.kinds],
            "browser": self.browser,
            "digest": self.digest,
        }


def prefs_of(raw: Mapping[str, Any] | None) -> Prefs:
    """An agent's stored preferences, the defaults for anything missing or malformed (a
    row written by an older version, or edited by hand, never stops notifications)."""
    raw = raw or {}
    kinds = raw.get("kinds")
    chosen = (
        frozenset(k for k in kinds if isinstance(k, str) and k in KINDS)
        if isinstance(kinds, list)
        else frozenset(KINDS)
    )
    browser = raw.get("browser")
    digest = raw.get("digest")
    return Prefs(
        kinds=chosen,
        browser=browser if isinstance(browser, bool) else True,
        digest=digest if isinstance(digest, bool) else False,
    )


def check_address(value: str | None) -> str | None:
    """An agent's digest address: one plain addr-spec, or None to clear it."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain
        or len(value) > MAX_ADDRESS
        or any(c.isspace() or c in '<>(),;:"[]\\' or ord(c) < 32 for c in value)
    ):
        raise BadPrefs(f"not a mail address: {value!r}")
    return value


def should_notify_assignee(target: int | None, previous: int | None, actor: int | None) -> bool:
    """Whether assigning a case tells the new assignee: only when someone else gave it to
    them (taking a case yourself is no news to you) and it was not theirs already."""
    return target is not None and target != previous and target != actor


def describe(kind: str, reference: str, subject: str) -> str:
    """The one-line text of a notification, in the page, the browser and the digest."""
    about = f"{reference} {subject}".strip() if subject else reference
    if kind == "assigned":
        return f"Assigned to you: {about}"
    if kind == "answered":
        return f"The customer answered: {about}"
    if kind == "breach":
        return f"About to breach its due time: {about}"
    return about


def digest_due(
    prefs: Prefs,
    address: str | None,
    last_sent: datetime | None,
    now: datetime,
    period: timedelta,
) -> bool:
    """Whether an agent may get a digest now: asked for, an address, one per period."""
    if not prefs.digest or not address:
        return False
    return last_sent is None or now - last_sent >= period


def digest_text(name: str, lines: Sequence[str], more: int) -> tuple[str, str]:
    """Subject and body of a digest (plain text: it is the agent's own mail)."""
    count = len(lines) + more
    subject = f"Parity: {count} unread notification{'s' if count != 1 else ''}"
    body = [f"Hello {name},", "", "These wait for you in the inbox:", ""]
    body += [f"- {line}" for line in lines]
    if more:
        body.append(f"- and {more} more")
    body += [
        "",
        "Mark them read in the inbox to leave them out of the next digest.",
        "Turn the digest off on your notification settings page.",
    ]
    return subject, "\n".join(body) + "\n"


# --- writing notifications (inside the caller's transaction) --------------------------------


def current_turn(conn: Connection, case_id: int) -> int:
    seq = conn.execute(select(func.max(CaseTurn.seq)).where(CaseTurn.case_id == case_id)).scalar()
    return int(seq) if seq is not None else 0


def add(conn: Connection, user_id: int, case_id: int, kind: str, turn: int, now: datetime) -> bool:
    """Store one notification unless the agent turned this kind off or has it already."""
    row = conn.execute(
        select(User.notify_prefs, User.disabled).where(User.id == user_id)
    ).one_or_none()
    if row is None or row.disabled or kind not in prefs_of(row.notify_prefs).kinds:
        return False
    # RETURNING: the row added, or none when the conflict skipped it (insert_ignore's
    # rowcount says the same on both stores; this also gives the id, were it wanted).
    added = conn.execute(
        insert_ignore(conn, Notification, ("user_id", "case_id", "kind", "turn"))
        .values(user_id=user_id, case_id=case_id, kind=kind, turn=turn, created_at=now)
        .returning(Notification.id)
    ).first()
    return added is not None


def case_assigned(
    conn: Connection,
    case_id: int,
    target: int | None,
    previous: int | None,
    actor: int | None,
    now: datetime,
) -> None:
    if target is not None and should_notify_assignee(target, previous, actor):
        add(conn, target, case_id, "assigned", current_turn(conn, case_id), now)


def customer_answered(conn: Connection, case_id: int, now: datetime) -> None:
    """A customer message joined a case (its row is locked by the caller): tell the
    assignee, once per turn."""
    assignee = conn.execute(select(Case.assignee_id).where(Case.id == case_id)).scalar()
    if assignee is not None:
        add(conn, int(assignee), case_id, "answered", current_turn(conn, case_id), now)


def _breaching(now: datetime, within: timedelta, user_id: int | None) -> Any:
    """SQL: (case, assignee, turn) of awake assigned cases whose open turn is due within
    `within` (or overdue already) and who have no breach notification for that turn."""
    query = (
        select(Case.id, Case.assignee_id, CaseTurn.seq)
        .join(
            CaseTurn,
            and_(
                CaseTurn.case_id == Case.id,
                CaseTurn.responded_at.is_(None),
                CaseTurn.closed_at.is_(None),
            ),
        )
        .where(
            Case.assignee_id.is_not(None),
            Case.status.in_(BREACH_STATUSES),
            CaseTurn.due_at <= now + within,
            snooze.awake(now),
            ~exists().where(
                Notification.user_id == Case.assignee_id,
                Notification.case_id == Case.id,
                Notification.kind == "breach",
                Notification.turn == CaseTurn.seq,
            ),
        )
    )
    if user_id is not None:
        query = query.where(Case.assignee_id == user_id)
    return query


def sweep_breaches(
    conn: Connection, now: datetime, within: timedelta, user_id: int | None = None
) -> int:
    """Notify assignees of their awake cases whose open turn is due within `within` (or
    overdue already). Returns how many notifications were added."""
    added = 0
    for row in conn.execute(_breaching(now, within, user_id)).all():
        added += add(conn, int(row.assignee_id), int(row.id), "breach", int(row.seq), now)
    return added


# --- reading and marking (the API) -----------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def signature(engine: Engine, user_id: int) -> tuple[int, int]:
    """(my newest notification's id, my unread count): what an open page's live stream
    watches, once a second. It changes when one is added for me or I read some (in any tab,
    on any instance), and never for another agent's. One statement, reading one entry of
    ix_notifications_user and my unread ones in ix_notifications_unread: not every
    notification I ever had, as counting them beside the newest did."""
    with read(engine) as conn:
        newest, unread = conn.execute(signature_query(user_id)).one()
    return int(newest or 0), int(unread or 0)


def signature_query(user_id: int) -> Select[int | None, int]:
    """The statement `signature` runs (bench/notifications.py and its test explain it)."""
    newest = select(func.max(Notification.id)).where(Notification.user_id == user_id)
    return select(newest.scalar_subquery(), unread_query(user_id).scalar_subquery())


def unread_query(user_id: int) -> Select[int]:
    """How many of my notifications are unread, over ix_notifications_unread."""
    return (
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
    )


def listing(
    engine: Engine,
    user_id: int,
    *,
    unread_only: bool = False,
    limit: int = 30,
) -> dict[str, Any]:
    """My notifications, newest first, and how many are unread. Only reads: breaches are
    found by the sweep (`sweep_breaches`), not by asking."""
    limit = max(1, min(limit, LIST_MAX))
    with read(engine) as conn:
        query = (
            select(
                Notification.id,
                Notification.kind,
                Notification.case_id,
                Notification.created_at,
                Notification.read_at,
                Case.reference,
                Case.subject,
            )
            .join(Case, Case.id == Notification.case_id)
            .where(Notification.user_id == user_id)
            .order_by(Notification.id.desc())
            .limit(limit)
        )
        if unread_only:
            query = query.where(Notification.read_at.is_(None))
        rows = conn.execute(query).all()
        unread = conn.execute(unread_query(user_id)).scalar_one()
        prefs = prefs_of(conn.execute(select(User.notify_prefs).where(User.id == user_id)).scalar())
    items = []
    for r in rows:
        reference = r.reference or format_reference(r.case_id)
        items.append(
            {
                "id": r.id,
                "kind": r.kind,
                "reference": reference,
                "subject": r.subject,
                "text": describe(r.kind, reference, r.subject),
                "created_at": _iso(r.created_at),
                "read_at": _iso(r.read_at),
            }
        )
    return {"unread": int(unread), "browser": prefs.browser, "notifications": items}


def mark_read(
    engine: Engine, user_id: int, ids: Sequence[int] | None, now: datetime | None = None
) -> dict[str, Any]:
    """Mark my notifications read: these ids (others' ids are ignored), or all of them."""
    now = now or utcnow()
    where = [Notification.user_id == user_id, Notification.read_at.is_(None)]
    if ids is not None:
        where.append(Notification.id.in_(list(ids)))
    with write(engine) as conn:
        changed = conn.execute(update(Notification).where(*where).values(read_at=now)).rowcount
        unread = conn.execute(unread_query(user_id)).scalar_one()
    return {"marked": int(changed), "unread": int(unread)}


def get_prefs(engine: Engine, user_id: int) -> dict[str, Any]:
    with read(engine) as conn:
        row = conn.execute(
            select(User.notify_prefs, User.mail_address).where(User.id == user_id)
        ).one()
    return {**prefs_of(row.notify_prefs).as_dict(), "address": row.mail_address}


def set_prefs(
    engine: Engine,
    user_id: int,
    *,
    kinds: Sequence[str] | None = None,
    browser: bool | None = None,
    digest: bool | None = None,
    address: str | None = None,
    address_given: bool = False,
) -> dict[str, Any]:
    """Change my preferences; what is not given stays. A digest needs an address."""
    with write(engine) as conn:
        row = conn.execute(
            select(User.notify_prefs, User.mail_address).where(User.id == user_id)
        ).one()
        prefs = prefs_of(row.notify_prefs)
        mail = check_address(address) if address_given else row.mail_address
        new = Prefs(
            kinds=frozenset(kinds) if kinds is not None else prefs.kinds,
            browser=prefs.browser if browser is None else browser,
            digest=prefs.digest if digest is None else digest,
        )
        if new.digest and not mail:
            raise BadPrefs("an email digest needs your mail address")
        conn.execute(
            update(User)
            .where(User.id == user_id)
            .values(notify_prefs=new.as_dict(), mail_address=mail)
        )
    return {**new.as_dict(), "address": mail}


# --- the digest -------------------------------------------------------------------------------


def send_digests(
    engine: Engine,
    *,
    after: timedelta,
    period: timedelta,
    breach_within: timedelta | None = None,
    now: datetime | None = None,
) -> int:
    """Queue a digest for each agent who asked for one, has unread notifications older than
    `after` that no digest carried yet, and got no digest within `period`. Returns how many
    were queued. The agent's row is locked, so two instances never send one twice."""
    now = now or utcnow()
    if breach_within is not None:
        with write(engine) as conn:
            sweep_breaches(conn, now, breach_within)
    with read(engine) as conn:
        candidates = conn.execute(
            select(User.id).where(User.disabled.is_(False), User.mail_address.is_not(None))
        ).all()
    sent = 0
    for (user_id,) in candidates:
        with write(engine) as conn:
            user = conn.execute(
                select(User.name, User.mail_address, User.notify_prefs, User.digest_sent_at)
                .where(User.id == user_id)
                .with_for_update()
            ).one()
            if not digest_due(
                prefs_of(user.notify_prefs), user.mail_address, user.digest_sent_at, now, period
            ):
                continue
            waiting = (
                Notification.user_id == user_id,
                Notification.read_at.is_(None),
                Notification.digested_at.is_(None),
                Notification.created_at <= now - after,
            )
            rows = conn.execute(
                select(
                    Notification.id,
                    Notification.kind,
                    Notification.case_id,
                    Case.reference,
                    Case.subject,
                )
                .join(Case, Case.id == Notification.case_id)
                .where(*waiting)
                .order_by(Notification.id)
                .limit(DIGEST_MAX + 1)
            ).all()
            if not rows:
                continue
            total = conn.execute(
                select(func.count()).select_from(Notification).where(*waiting)
            ).scalar_one()
            shown = rows[:DIGEST_MAX]
            lines = [
                describe(r.kind, r.reference or format_reference(r.case_id), r.subject)
                for r in shown
            ]
            subject, body = digest_text(user.name, lines, int(total) - len(shown))
            outbox.enqueue(
                conn,
                case_id=None,
                kind="digest",
                channel=MAIL_CHANNEL,
                recipient=user.mail_address,
                subject=subject,
                body=body,
                payload={"to_name": user.name},
            )
            conn.execute(update(Notification).where(*waiting).values(digested_at=now))
            conn.execute(update(User).where(User.id == user_id).values(digest_sent_at=now))
            sent += 1
    return sent
