"""Providers' delivery reports: stored raw before the 200, applied to the outbox after it.

A status webhook (a WhatsApp status, a Twilio status callback) is input like any other: the
connector stores it through intake in state "report" (the normalizer never claims those)
and answers only then, so the provider is never told "got it" about something we did not
keep. Applying it, which takes locks on outbox rows and writes the audit, happens after the
answer (`AfterReply`), and again on the connector's next pass for whatever a crash or a
store refusing writes left behind (`apply_stored`). Each connector says what one report
does (`Apply`); the rows, the order, marking them applied and the dead letter of a report
that cannot be read are the same for every channel, and kept here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, select, update

from connectors.base import ConnectorHealth
from inbox.db import is_sqlite, write
from inbox.models import Blob, DeadLetter, Intake, utcnow

log = logging.getLogger(__name__)

MAX_REPORTS = 200
NOT_IN_BODY = "the delivery report is not in its stored body"


@dataclass(frozen=True)
class StoredReport:
    """One report row as stored: its intake row, its key and the raw body it came in."""

    intake_id: int
    channel: str
    source_key: str
    raw_sha256: str
    data: bytes


# What one report does, in the caller's transaction: the outbox rows it moved, or None when
# the report cannot be read from its body (it is then dead-lettered with why, never lost).
Apply = Callable[[Connection, StoredReport], "list[int] | None"]


def apply_stored(engine: Engine, connector: str, apply: Apply, limit: int = MAX_REPORTS) -> int:
    """Apply `connector`'s reports stored and not yet applied, oldest first, each in the
    transaction that marks it "applied"; how many were taken (`limit` at most)."""
    taken = 0
    with write(engine) as conn:
        query = (
            select(Intake.id, Intake.channel, Intake.source_key, Intake.raw_sha256, Blob.data)
            .join(Blob, Blob.sha256 == Intake.raw_sha256)
            .where(Intake.connector == connector, Intake.state == "report")
            .order_by(Intake.id)
            .limit(limit)
        )
        if not is_sqlite(conn):
            # Two instances sweeping at once: each takes other rows (applying one twice
            # would be harmless, but audited twice).
            query = query.with_for_update(of=Intake, skip_locked=True)
        for row in conn.execute(query).all():
            taken += 1
            report = StoredReport(row.id, row.channel, row.source_key, row.raw_sha256, row.data)
            moved = apply(conn, report)
            if moved is None:
                dead_letter_report(conn, connector, report, NOT_IN_BODY)
                continue
            if moved:
                log.info("%s: report %s moved outbox %s", connector, row.source_key, moved)
            conn.execute(
                update(Intake)
                .where(Intake.id == row.id, Intake.state == "report")
                .values(state="applied", processed_at=utcnow())
            )
    return taken


def apply_all(engine: Engine, connector: str, apply: Apply) -> int:
    """`apply_stored` until nothing is left; how many in all (a connector's periodic pass)."""
    total = 0
    while (taken := apply_stored(engine, connector, apply)) >= MAX_REPORTS:
        total += taken
    return total + taken


def dead_letter_report(conn: Connection, connector: str, report: StoredReport, error: str) -> None:
    conn.execute(
        update(Intake)
        .where(Intake.id == report.intake_id)
        .values(state="dead", processed_at=utcnow())
    )
    conn.execute(
        insert(DeadLetter).values(
            intake_id=report.intake_id,
            connector=connector,
            channel=report.channel,
            raw_sha256=report.raw_sha256,
            error=error,
            created_at=utcnow(),
            replays=0,
            resolved=False,
        )
    )


class AfterReply:
    """Applies a connector's stored reports right after the webhook's answer, one pass at a
    time: a report stored during a pass gets another pass; one the store refused to apply
    is left for the connector's periodic pass (`apply_all`)."""

    def __init__(
        self, connector: str, apply_pass: Callable[[], int], health: ConnectorHealth
    ) -> None:
        self.connector = connector
        # One `apply_stored` pass of the connector's (run in a thread: it commits).
        self.apply_pass = apply_pass
        self.health = health
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def soon(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await asyncio.to_thread(self.apply_pass)
            except Exception as exc:  # the store away: the periodic pass applies them
                log.warning("%s: applying delivery reports: %s", self.connector, exc)
                self.health.error(f"delivery reports: {exc}"[:500])
                return
            if not self._again:
                return

    async def settled(self) -> None:
        """Wait until the reports stored so far are applied (tests; a clean shutdown)."""
        while self._task is not None and not self._task.done():
            await self._task
