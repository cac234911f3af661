"""The agent's day: tags, custom fields, snooze and the per-agent flow setting

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 16:00:00

- case_tags: short labels on a case, set by agents (one by one or in bulk) and by content
  rules when the case opens. One row per (case, tag); the tag index serves the filter.
- case_fields: custom fields, one value per (case, name), set by agents and by rules.
- cases.snoozed_until / snoozed_by / snooze_after_message_id: a snoozed case leaves the
  queue until the time passes, or (with no time) until a customer message newer than
  snooze_after_message_id arrives. A query condition, so no worker must run for it to
  come back.
- users.after_done: where an agent goes after resolving or replying ("next" case or
  "stay" on the page); NULL follows the global setting.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "case_tags",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.BigInteger(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("set_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("case_id", "tag", name="uq_case_tag"),
    )
    op.create_index("ix_case_tags_tag", "case_tags", ["tag", "case_id"])
    op.create_table(
        "case_fields",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.BigInteger(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=512), nullable=False),
        sa.Column("set_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("case_id", "name", name="uq_case_field"),
    )
    op.create_index("ix_case_fields_name_value", "case_fields", ["name", "value"])
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("snoozed_until", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("snoozed_by", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("snooze_after_message_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("after_done", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("after_done")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("snooze_after_message_id")
        batch_op.drop_column("snoozed_by")
        batch_op.drop_column("snoozed_until")
    op.drop_index("ix_case_fields_name_value", table_name="case_fields")
    op.drop_table("case_fields")
    op.drop_index("ix_case_tags_tag", table_name="case_tags")
    op.drop_table("case_tags")
