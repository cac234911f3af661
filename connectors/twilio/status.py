"""Twilio's status callbacks on the SMS we sent: stored raw first, applied after the 200.

`POST /twilio/status` stores the signed form through intake in state "report", keyed
`status:<MessageSid>:<MessageStatus>` (a retried callback adds nothing), and answers; then
the stored reports are applied to our outbox rows (connectors/reports.py), here and on the
connector's next pass for any a crash left. Twilio does not promise the order of its
callbacks, so a report never moves a row back: "sent" after "delivered", or "delivered"
after "undelivered", changes nothing. Twilio's own word is kept on the row
(`payload.status`), and a move is recorded on the case and in the audit like any provider's
report (inbox/outbox.py `record_report`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from connectors.reports import StoredReport, apply_all, apply_stored
from connectors.twilio.parse import form
from inbox.channels import channels_of
from inbox.models import Outbox, utcnow
from inbox.outbox import record_report
from normalizer.message import ParseError

CONNECTOR = "twilio"
# How far a sent SMS got, by Twilio's word (queued and sending say no more than sent).
# undelivered and failed are final: the carrier or Twilio gave up.
RANK = {"accepted": 0, "queued": 0, "sending": 0, "sent": 0, "delivered": 1}
FINAL = {"undelivered": 2, "failed": 2}
RANK.update(FINAL)
# The outbox keeps channel-neutral states; queued, sending and sent leave a sent row sent.
OUTBOX_STATE = {"delivered": "delivered", "undelivered": "undelivered", "failed": "undelivered"}
REPORTED_STATES = ("sent", "unknown", "delivered", "undelivered")
_SID = re.compile(r"[A-Za-z0-9]{2,64}")
_STATE = re.compile(r"[a-z_-]{1,32}")


@dataclass(frozen=True)
class Report:
    sid: str
    state: str
    error: str | None


def report_of(params: Mapping[str, str]) -> Report | None:
    """A status callback's report, or None when it has no message id or no status."""
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    state = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    # Bounded shapes: both go into an intake key (at most 512 characters) and a query.
    if not _SID.fullmatch(sid) or not _STATE.fullmatch(state):
        return None
    code = (params.get("ErrorCode") or "").strip()[:20]
    return Report(sid, state, f"Twilio error {code}" if code else None)


def report_key(report: Report) -> str:
    return f"status:{report.sid}:{report.state}"


def current_rank(outbox_state: str, payload: Mapping[str, Any] | None) -> int:
    """How far a row already got: Twilio's last word on it, else what its state says."""
    known = (payload or {}).get("status")
    if isinstance(known, str) and known in RANK:
        return RANK[known]
    return {"sent": 0, "delivered": 1, "undelivered": 2}.get(outbox_state, -1)


def apply_in(conn: Connection, report: Report) -> list[int]:
    """One report on the rows sent with its id, in the caller's transaction; the ids of the
    rows it moved. A state Twilio may add later (not in RANK) is kept and moves nothing."""
    if report.state not in RANK:
        return []
    rows = conn.execute(
        select(Outbox.id, Outbox.kind, Outbox.case_id, Outbox.state, Outbox.payload).where(
            Outbox.channel.in_(channels_of(CONNECTOR)),
            Outbox.provider_id == report.sid,
            Outbox.state.in_(REPORTED_STATES),
        )
    ).all()
    moved: list[int] = []
    for row in rows:
        if RANK[report.state] <= current_rank(row.state, row.payload):
            continue
        state = OUTBOX_STATE.get(report.state, row.state)
        values: dict[str, Any] = {
            "state": state,
            "payload": {
                **(row.payload or {}),
                "status": report.state,
                "status_at": utcnow().isoformat(),
            },
        }
        if report.state in FINAL:
            values["last_error"] = report.error or f"Twilio reported the message {report.state}"
        conn.execute(update(Outbox).where(Outbox.id == row.id).values(**values))
        moved.append(row.id)
        if state == row.state or row.case_id is None:
            continue  # sent after queued: Twilio's word is kept, the row has not moved
        record_report(conn, row, state, str(values.get("last_error") or f"Twilio: {report.state}"))
    return moved


def _apply(conn: Connection, stored: StoredReport) -> list[int] | None:
    try:
        report = report_of(form(stored.data))
    except ParseError:
        return None
    if report is None or report_key(report) != stored.source_key:
        return None
    return apply_in(conn, report)


def apply_reports(engine: Engine) -> int:
    """Apply the status callbacks stored and not yet applied; how many were taken."""
    return apply_stored(engine, CONNECTOR, _apply)


def apply_left(engine: Engine) -> int:
    """Every stored callback not yet applied (what a crash or a refusing store left)."""
    return apply_all(engine, CONNECTOR, _apply)
