"""cases.callback_requested_at: a caller pressed 1 for a callback

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-21 02:30:00

A column, not message meta, so the queue and the case view show the flag without reading
every message of the case.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_requested_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("callback_requested_at")
