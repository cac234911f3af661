"""Dead-letter replay: run input that failed through intake and the normalizer again, after a fix.

Idempotent by construction: a replay puts the very same intake row back to pending (or, for a
dead letter stored without one, stores the raw bytes through intake under a key derived from
them), so the unique intake and dedup keys make a second replay change nothing, and a
resolved dead letter is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select, update

from inbox.db import write
from inbox.models import Blob, Case, DeadLetter, Intake, Message, utcnow
from normalizer.intake import RawInput, sha256, store_in
from normalizer.worker import Normalizer


@dataclass(frozen=True)
class Replay:
    dead_letter_id: int
    # resolved | still failing | already resolved | in progress | not found
    outcome: str
    error: str | None = None
    case: str | None = None


def replay(engine: Engine, normalizer: Normalizer, dead_letter_id: int) -> Replay:
    """Replay one dead letter now; the normalizer's settings (caps, parser) are the fixed ones."""
    with write(engine) as conn:
        letter = conn.execute(
            select(DeadLetter).where(DeadLetter.id == dead_letter_id)
        ).one_or_none()
        if letter is None:
            return Replay(dead_letter_id, "not found")
        if letter.resolved:
            return Replay(dead_letter_id, "already resolved", case=_case(conn, letter.intake_id))
        intake_id = letter.intake_id
        if intake_id is None:
            # Input a connector dead-lettered before intake: it goes through intake now.
            raw = conn.execute(
                select(Blob.data).where(Blob.sha256 == letter.raw_sha256)
            ).scalar_one()
            intake_id = store_in(
                conn,
                [
                    RawInput(
                        connector=letter.connector,
                        channel=letter.channel,
                        source_key=f"replay:{sha256(raw)}",
                        payload=raw,
                        envelope={"replay_of": letter.id},
                    )
                ],
            )[0].intake_id
        state = conn.execute(select(Intake.state).where(Intake.id == intake_id)).scalar_one()
        if state == "dead":
            conn.execute(
                update(Intake)
                .where(Intake.id == intake_id, Intake.state == "dead")
                .values(
                    state="pending",
                    attempts=0,
                    claimed_by=None,
                    claimed_until=None,
                    processed_at=None,
                )
            )
        conn.execute(
            update(DeadLetter)
            .where(DeadLetter.id == letter.id)
            .values(intake_id=intake_id, replays=DeadLetter.replays + 1, replayed_at=utcnow())
        )
    normalizer.drain(only=[intake_id])
    with write(engine) as conn:
        state = conn.execute(select(Intake.state).where(Intake.id == intake_id)).scalar_one()
        if state == "done":
            conn.execute(update(DeadLetter).where(DeadLetter.id == letter.id).values(resolved=True))
            return Replay(letter.id, "resolved", case=_case(conn, intake_id))
        error = conn.execute(
            select(DeadLetter.error).where(DeadLetter.id == letter.id)
        ).scalar_one()
    if state == "pending":  # another worker holds it right now; it will finish there
        return Replay(letter.id, "in progress")
    return Replay(letter.id, "still failing", error=error)


def replay_all(engine: Engine, normalizer: Normalizer) -> list[Replay]:
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                select(DeadLetter.id).where(DeadLetter.resolved.is_(False)).order_by(DeadLetter.id)
            ).scalars()
        )
    return [replay(engine, normalizer, i) for i in ids]


def _case(conn: Connection, intake_id: int | None) -> str | None:
    # The caller's connection: on SQLite a second one would wait for this one's write lock.
    if intake_id is None:
        return None
    reference: str | None = conn.execute(
        select(Case.reference)
        .join(Message, Message.case_id == Case.id)
        .join(Intake, Intake.message_id == Message.id)
        .where(Intake.id == intake_id)
    ).scalar_one_or_none()
    return reference
