"""The language of each case and of each inbound message

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-07 16:00:00

- cases.language: the language the case is answered in (its acknowledgement, its status
  page): chosen on the contact form, detected from the opening message's text, or the
  contact's known language, else "en". Cases stored before get "en", which is what they
  were acknowledged in. The manager report groups by it (docs/managers).
- messages.language: what the parser chose or detected for that message; NULL when the
  text was too short or too mixed to tell (the case then falls back).
See docs/architecture/languages.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("language", sa.String(length=8), nullable=False, server_default="en")
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("language")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("language")
