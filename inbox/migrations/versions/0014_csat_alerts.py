"""csat_surveys, alert_events, contacts.csat_opt_out_at: satisfaction surveys and alerts

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 15:30:00

One survey row per resolved case (unique case_id), so a case is never asked twice even when
two planners run; the person's opt-out is a column of the contact, a fact of the person on
every channel. Alerts are de-duplicated by a unique key per condition and period.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("csat_opt_out_at", sa.DateTime(), nullable=True))
    op.create_table(
        "csat_surveys",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("case_id", BigId, sa.ForeignKey("cases.id"), nullable=False, unique=True),
        sa.Column("contact_id", BigId, sa.ForeignKey("contacts.id"), nullable=False),
        sa.Column("identity_id", BigId, sa.ForeignKey("identities.id"), nullable=True),
        sa.Column("case_channel", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("agent_id", BigId, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(256), nullable=True),
        sa.Column("outbox_id", BigId, sa.ForeignKey("outbox.id"), nullable=True),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("asked_at", sa.DateTime(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_csat_surveys_contact_id", "csat_surveys", ["contact_id"])
    op.create_index(
        "ix_csat_surveys_identity", "csat_surveys", ["identity_id", "state", "asked_at"]
    )
    op.create_index("ix_csat_surveys_asked", "csat_surveys", ["asked_at"])
    op.create_table(
        "alert_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(256), nullable=False, unique=True),
        sa.Column("condition", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_events")
    op.drop_index("ix_csat_surveys_asked", table_name="csat_surveys")
    op.drop_index("ix_csat_surveys_identity", table_name="csat_surveys")
    op.drop_index("ix_csat_surveys_contact_id", table_name="csat_surveys")
    op.drop_table("csat_surveys")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("csat_opt_out_at")
