"""Due times for every turn: case_turns, and cases.reopens

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 16:00:00

- case_turns: one row per wait for us (turn 0 the first response, later turns the next
  responses), each with its own due time; the case's due_at is the open turn's.
- cases.reopens: how often the case was reopened (the reopen rate per agent).
- cases.side, first_due_at, ack_eta_at, first_responder_id: what the report needs from other
  tables, kept on the case so PostgreSQL computes the report in one scan of cases.
Existing cases get their turn 0 from their own columns, and their reopen count from the
audit log's case.reopened rows; later turns of old cases are not reconstructed.
"""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa
from alembic import op

import inbox.models

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_turns",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("started_at", inbox.models.UTCDateTime(), nullable=False),
        sa.Column("due_at", inbox.models.UTCDateTime(), nullable=False),
        sa.Column("due_rule", sa.String(length=128), nullable=True),
        sa.Column("responded_at", inbox.models.UTCDateTime(), nullable=True),
        sa.Column("responder_id", sa.BigInteger(), nullable=True),
        sa.Column("closed_at", inbox.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.ForeignKeyConstraint(["responder_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_id", "seq", name="uq_case_turns_case_seq"),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reopens", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(sa.Column("side", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("first_due_at", inbox.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("ack_eta_at", inbox.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("first_responder_id", sa.BigInteger(), nullable=True))
        batch_op.create_foreign_key(
            "fk_cases_first_responder_id_users", "users", ["first_responder_id"], ["id"]
        )
    op.execute(
        "INSERT INTO case_turns (case_id, seq, started_at, due_at, due_rule, responded_at)"
        " SELECT id, 0, first_inbound_at, due_at, due_rule, first_response_at FROM cases"
    )
    op.execute(
        "UPDATE cases SET first_due_at = due_at, side = COALESCE((SELECT m.visibility"
        " FROM messages m WHERE m.case_id = cases.id AND m.direction = 'inbound'"
        " ORDER BY m.id LIMIT 1), 'private')"
    )
    _backfill_etas()
    op.execute(
        "UPDATE cases SET reopens = (SELECT count(*) FROM audit_log"
        " WHERE audit_log.case_id = cases.id AND audit_log.action = 'case.reopened')"
        " WHERE id IN (SELECT case_id FROM audit_log WHERE action = 'case.reopened')"
    )


def _backfill_etas() -> None:
    """Each case's first promised time, from the audit log's acknowledgement rows (JSON, read
    here rather than in SQL: the two databases spell JSON access differently)."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT case_id, after FROM audit_log WHERE action = 'acknowledgement.queued'"
            " AND case_id IS NOT NULL ORDER BY id"
        )
    )
    etas: dict[int, datetime] = {}
    for case_id, after in rows:
        value = (json.loads(after) if isinstance(after, str) else after or {}).get("eta_at")
        if isinstance(value, str) and case_id not in etas:
            etas[case_id] = datetime.fromisoformat(value.replace("Z", "+00:00"))
    table = sa.table(
        "cases",
        sa.column("id", sa.BigInteger()),
        sa.column("ack_eta_at", inbox.models.UTCDateTime()),
    )
    for case_id, eta in etas.items():
        conn.execute(sa.update(table).where(table.c.id == case_id).values(ack_eta_at=eta))


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_constraint("fk_cases_first_responder_id_users", type_="foreignkey")
        for column in ("first_responder_id", "ack_eta_at", "first_due_at", "side", "reopens"):
            batch_op.drop_column(column)
    op.drop_table("case_turns")
