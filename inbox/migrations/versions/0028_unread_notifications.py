"""An index of each agent's unread notifications

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 22:45:00

Every open page asks once a second for its agent's newest notification and unread count
(inbox/notifications.py `signature`). Counted over ix_notifications_user, that read every
notification the agent ever had, and they are kept: a partial index of the unread ones
makes the count read only those.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

UNREAD = "read_at IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_notifications_unread",
        "notifications",
        ["user_id"],
        sqlite_where=sa.text(UNREAD),
        postgresql_where=sa.text(UNREAD),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_unread", table_name="notifications")
