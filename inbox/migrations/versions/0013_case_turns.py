"""Due times for every turn: case_turns, and cases.reopens

Revision ID: 0013
Revises: 0009
Create Date: 2026-12-07 16:00:00

- case_turns: one row per wait for us (turn 0 the first response, later turns the next
  responses), each with its own due time; the case's due_at is the open turn's.
- cases.reopens: how often the case was reopened (the reopen rate per agent).
Existing cases get their turn 0 from their own columns, and their reopen count from the
audit log's case.reopened rows; later turns of old cases are not reconstructed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import inbox.models

revision = "0013"
down_revision = "0009"
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
    op.execute(
        "INSERT INTO case_turns (case_id, seq, started_at, due_at, due_rule, responded_at)"
        " SELECT id, 0, first_inbound_at, due_at, due_rule, first_response_at FROM cases"
    )
    op.execute(
        "UPDATE cases SET reopens = (SELECT count(*) FROM audit_log"
        " WHERE audit_log.case_id = cases.id AND audit_log.action = 'case.reopened')"
        " WHERE id IN (SELECT case_id FROM audit_log WHERE action = 'case.reopened')"
    )


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("reopens")
    op.drop_table("case_turns")
