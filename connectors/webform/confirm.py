"""Confirming the address or number a form gave: only a confirmed identity joins the
person's other cases.

The form post stores, in the same transaction as the post itself (`RawInput.on_first_store`),
a checkpoint row `webform` / `confirm:<submission>` naming what it claims. Once the
normalizer has opened the case, `ConfirmationQueue` (a task of the connector, on every
instance; the row is claimed under a lock) queues the confirmation through the outbox: a
link by email, a code by SMS (with the link to type it at). Each draws on the
acknowledgements' token buckets for that recipient, so the form cannot be used to make us
write to a stranger more than an acknowledgement would.

The link's key and the code are HMACs of the submission and the handle with the server
secret: nothing to steal from the store, and a code is checked in constant time. Confirming
files the handle as an identity (found or made) and moves the submission's cases to that
identity's contact; an audit row says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection, Engine, delete, insert, select, update

from connectors.base import ConnectorHealth
from connectors.webform import abuse
from connectors.webform.form import Checked
from connectors.webform.settings import WebformSettings
from connectors.webform.status import opened_by
from connectors.webform.text import t_in
from inbox import audit
from inbox.channels import CHANNEL_FACTS, MAIL_CHANNEL, REPLY_CHANNEL_OF_KIND
from inbox.db import read, write
from inbox.models import Case, Checkpoint, Identity, Message, utcnow
from inbox.outbox import enqueue
from normalizer.ack_limits import take_ack_tokens
from normalizer.acks import AckLimits
from normalizer.intake import CheckpointUpdate

log = logging.getLogger(__name__)

CONNECTOR = "webform"
PREFIX = "confirm:"
# One small row per confirmation still to queue, deleted when it is queued: the task scans
# only these, however many submissions were ever confirmed.
DUE_PREFIX = "confirm-due:"
CODE_DIGITS = 6


def key_of(sid: str) -> str:
    return PREFIX + sid


# The identity kind of a mail address: what a confirmed address becomes.
MAIL_KIND = CHANNEL_FACTS[MAIL_CHANNEL].identity_kind


def claims_of(checked: Checked) -> list[dict[str, str]]:
    found = []
    if checked.email:
        found.append({"kind": MAIL_KIND, "handle": checked.email})
    if checked.phone:
        found.append({"kind": "phone", "handle": checked.phone})
    return found


class Confirmations:
    """The confirmation rows of one instance's form: written with a post, read and settled
    by the page handlers, sent by `ConfirmationQueue`."""

    def __init__(self, settings: WebformSettings, engine: Engine, secret: bytes) -> None:
        self.settings = settings
        self.engine = engine
        self.secret = secret
        self.base = settings.public_url.rstrip("/")

    def pending(self, sid: str, checked: Checked, now: datetime) -> tuple[CheckpointUpdate, ...]:
        claims = claims_of(checked)
        if not claims:
            return ()
        value = {"state": "pending", "claims": claims, "at": now.isoformat(), "confirmed": []}
        return (
            CheckpointUpdate(CONNECTOR, key_of(sid), value),
            CheckpointUpdate(CONNECTOR, DUE_PREFIX + sid, {"at": now.isoformat()}),
        )

    def _row(self, sid: str) -> dict[str, Any] | None:
        with read(self.engine) as conn:
            value = conn.execute(
                select(Checkpoint.value).where(
                    Checkpoint.connector == CONNECTOR, Checkpoint.key == key_of(sid)
                )
            ).scalar_one_or_none()
        return dict(value) if value else None

    def claimed(self, sid: str) -> list[str]:
        row = self._row(sid)
        return [c["handle"] for c in row.get("claims", [])] if row else []

    def link(self, sid: str, handle: str, *, with_code: bool) -> str:
        query = {"s": sid, "h": handle}
        if with_code:
            query["c"] = abuse.confirm_code(self.secret, sid, handle)
        return f"{self.base}/contact/confirm?{urlencode(query)}"

    def _code_ok(self, sid: str, kind: str, handle: str, code: str) -> bool:
        if kind == "phone":
            return abuse.same(code, abuse.confirm_code(self.secret, sid, handle, CODE_DIGITS))
        return abuse.same(code, abuse.confirm_code(self.secret, sid, handle))

    def _claim(self, row: dict[str, Any] | None, handle: str, now: datetime) -> str | None:
        """The kind of `handle` when the row claims it and has not expired."""
        if row is None:
            return None
        at = datetime.fromisoformat(str(row.get("at")))
        if now - at > timedelta(hours=self.settings.confirm_hours):
            return None
        for claim in row.get("claims", []):
            if claim.get("handle") == handle:
                return str(claim.get("kind"))
        return None

    def _expired(self, sid: str, now: datetime) -> bool:
        row = self._row(sid)
        if row is None:
            return True
        at = datetime.fromisoformat(str(row.get("at")))
        return now - at > timedelta(hours=self.settings.confirm_hours)

    def kind_of(self, sid: str, handle: str, now: datetime) -> str | None:
        return self._claim(self._row(sid), handle, now)

    def valid(self, sid: str, handle: str, code: str, now: datetime) -> bool:
        """A link may be shown: the claim exists; an email link must carry its key (an SMS
        link asks for the code instead)."""
        kind = self.kind_of(sid, handle, now)
        if kind is None:
            return False
        return kind == "phone" or self._code_ok(sid, kind, handle, code)

    def confirm(self, sid: str, handle: str, code: str, now: datetime) -> bool:
        """File `handle` as the person's identity when `code` proves it; False otherwise."""
        with write(self.engine) as conn:
            value = self._locked(conn, sid)
            row = dict(value) if value else None
            kind = self._claim(row, handle, now)
            if row is None or kind is None or not self._code_ok(sid, kind, handle, code):
                return False
            if handle in row.get("confirmed", []):
                return True  # a second click changes nothing
            web = conn.execute(
                select(Identity.id, Identity.contact_id).where(
                    Identity.kind == "web", Identity.handle == sid
                )
            ).one_or_none()
            if web is None:
                return False  # the case is not open yet: try again in a moment
            known = conn.execute(
                select(Identity.id, Identity.contact_id).where(
                    Identity.kind == kind, Identity.handle == handle
                )
            ).one_or_none()
            if known is None:
                conn.execute(
                    insert(Identity).values(
                        kind=kind,
                        handle=handle,
                        display_name="",
                        contact_id=web.contact_id,
                        verified=True,
                        facts={},
                        created_at=now,
                    )
                )
                contact = web.contact_id
            else:
                contact = known.contact_id
                conn.execute(update(Identity).where(Identity.id == known.id).values(verified=True))
            case_ids = list(
                conn.execute(
                    select(Message.case_id).where(Message.identity_id == web.id).distinct()
                ).scalars()
            )
            # The submission's cases now belong to the person who proved the handle: they
            # join that person's other cases in the queue and in threading.
            conn.execute(
                update(Case)
                .where(Case.id.in_(case_ids))
                .values(contact_id=contact, unverified_from=None)
            )
            conn.execute(update(Identity).where(Identity.id == web.id).values(contact_id=contact))
            for case_id in case_ids:
                audit.append(
                    conn,
                    actor="system",
                    action="identity.confirmed",
                    case_id=case_id,
                    after={"kind": kind, "via": "webform", "joined_contact": contact},
                )
            row["confirmed"] = [*row.get("confirmed", []), handle]
            conn.execute(
                update(Checkpoint)
                .where(Checkpoint.connector == CONNECTOR, Checkpoint.key == key_of(sid))
                .values(value=row, updated_at=now)
            )
        return True

    def send_due(self, now: datetime, limits: AckLimits | None = None) -> int:
        """Queue the confirmations of submissions whose case is open; how many were queued."""
        with read(self.engine) as conn:
            keys = conn.execute(
                select(Checkpoint.key)
                .where(Checkpoint.connector == CONNECTOR, Checkpoint.key.startswith(DUE_PREFIX))
                .order_by(Checkpoint.updated_at)
                .limit(500)
            ).scalars()
            due = [key.removeprefix(DUE_PREFIX) for key in keys]
        queued = 0
        for sid in due:
            queued += self._send_one(sid, now, limits or AckLimits())
        return queued

    def _opened(self, sid: str) -> bool:
        with read(self.engine) as conn:
            return (
                conn.execute(
                    select(Identity.id).where(Identity.kind == "web", Identity.handle == sid)
                ).first()
                is not None
            )

    def _send_one(self, sid: str, now: datetime, limits: AckLimits) -> int:
        # Read first: a case not opened yet (the normalizer is behind) costs no write.
        if not self._opened(sid) and not self._expired(sid, now):
            return 0
        with write(self.engine) as conn:
            value = self._locked(conn, sid)
            row = dict(value or {})
            if row.get("state") != "pending":
                self._done(conn, sid)
                return 0  # another instance sent it
            at = datetime.fromisoformat(str(row.get("at")))
            if now - at > timedelta(hours=self.settings.confirm_hours):
                # Its case never opened (a dead letter): nothing to confirm any more.
                row.update(state="expired")
                self._save(conn, sid, row, now)
                self._done(conn, sid)
                return 0
            case = conn.execute(
                opened_by(sid, Case.id, Case.reference, Case.language)
            ).one_or_none()
            if case is None:
                return 0  # not opened yet
            sent: list[dict[str, Any]] = []
            for claim in row.get("claims", []):
                kind, handle = str(claim["kind"]), str(claim["handle"])
                channel = REPLY_CHANNEL_OF_KIND[kind]
                withheld = take_ack_tokens(conn, channel, handle, limits, now)
                if withheld is not None:
                    sent.append({"handle": handle, "withheld": withheld})
                    continue
                # In the language the person wrote in (chosen on the form).
                lang = case.language or "en"
                if kind == "phone":
                    code = abuse.confirm_code(self.secret, sid, handle, CODE_DIGITS)
                    body = t_in(
                        lang,
                        "confirm_sms",
                        reference=case.reference,
                        code=code,
                        link=self.link(sid, handle, with_code=False),
                    )
                    subject = ""
                else:
                    subject = t_in(lang, "confirm_mail_subject", reference=case.reference)
                    body = t_in(
                        lang,
                        "confirm_mail_body",
                        reference=case.reference,
                        link=self.link(sid, handle, with_code=True),
                    )
                outbox_id = enqueue(
                    conn,
                    case_id=case.id,
                    kind="confirm",
                    channel=channel,
                    recipient=handle,
                    subject=subject,
                    body=body,
                )
                sent.append({"handle": handle, "outbox_id": outbox_id})
            row.update(state="sent", sent=sent)
            self._save(conn, sid, row, now)
            self._done(conn, sid)
        return sum(1 for s in sent if "outbox_id" in s)

    @staticmethod
    def _locked(conn: Connection, sid: str) -> Any:
        """The submission's confirmation record, locked until the transaction ends (FOR
        UPDATE: two instances never send or confirm the same claim twice)."""
        return conn.execute(
            select(Checkpoint.value)
            .where(Checkpoint.connector == CONNECTOR, Checkpoint.key == key_of(sid))
            .with_for_update()
        ).scalar_one_or_none()

    @staticmethod
    def _save(conn: Connection, sid: str, row: dict[str, Any], now: datetime) -> None:
        conn.execute(
            update(Checkpoint)
            .where(Checkpoint.connector == CONNECTOR, Checkpoint.key == key_of(sid))
            .values(value=row, updated_at=now)
        )

    @staticmethod
    def _done(conn: Connection, sid: str) -> None:
        conn.execute(
            delete(Checkpoint).where(
                Checkpoint.connector == CONNECTOR, Checkpoint.key == DUE_PREFIX + sid
            )
        )


class ConfirmationQueue:
    """The connector's task: queues due confirmations every `interval` seconds."""

    name = "webform"

    def __init__(self, confirmations: Confirmations, interval: float = 2.0) -> None:
        self.confirmations = confirmations
        self.interval = interval
        self.health = ConnectorHealth()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                count = await asyncio.to_thread(self.confirmations.send_due, utcnow())
                self.health.success()
                if count:
                    self.health.details["confirmations_queued"] = (
                        self.health.details.get("confirmations_queued", 0) + count
                    )
            except Exception as exc:  # the store may be busy: try again at the next turn
                log.warning("webform confirmations: %s", exc)
                self.health.error(str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
