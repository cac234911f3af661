"""Notifications: per agent, de-duplicated per case, kind and turn; agents' mail and prefs

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 17:00:00

- notifications: one row per (agent, case, kind, turn): a case assigned to me, a customer
  answered on my case, a case of mine about to breach. read_at when the agent read it,
  digested_at when an email digest carried it.
- users.mail_address: where an agent's digest goes; users.notify_prefs: which kinds, browser
  notifications, the digest (JSON, empty = the defaults); users.digest_sent_at: the last
  digest, so at most one goes out per period.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("case_id", BigId, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("read_at", sa.DateTime(), nullable=True),
        sa.Column("digested_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("user_id", "case_id", "kind", "turn", name="uq_notification_turn"),
    )
    op.create_index("ix_notifications_user", "notifications", ["user_id", "id"])
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("mail_address", sa.String(length=320), nullable=True))
        batch_op.add_column(
            sa.Column("notify_prefs", sa.JSON(), nullable=False, server_default="{}")
        )
        batch_op.add_column(sa.Column("digest_sent_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("digest_sent_at")
        batch_op.drop_column("notify_prefs")
        batch_op.drop_column("mail_address")
    op.drop_index("ix_notifications_user", table_name="notifications")
    op.drop_table("notifications")
