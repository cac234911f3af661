"""Outbox Message-IDs in one form: without angle brackets

Revision ID: 0026
Revises: 0021
Create Date: 2026-12-07 18:45:00

An agent's mail reply used to keep its Message-ID in angle brackets, an acknowledgement
without; a delivery status notification names the id without them (normalizer/dsn.py), so a
bounce of an agent's reply never found its outbox row. Every id is now kept bare
(inbox.references.bare_message_id); this strips the brackets from rows written before.
Downgrading leaves the ids bare: the older code sends them the same way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    outbox = sa.table("outbox", sa.column("message_id_header", sa.String(600)))
    column = outbox.c.message_id_header
    op.execute(
        outbox.update()
        .where(column.like("<%>"))
        .values(message_id_header=sa.func.substr(column, 2, sa.func.length(column) - 2))
    )


def downgrade() -> None:
    pass
