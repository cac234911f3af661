"""outbox lease and the indexes acknowledgements ask

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 00:56:35.306397

- outbox.claimed_until: the lease of a row being sent, so a row left "sending" by a process
  that died is found and recovered (resent for email, "unknown" for other channels);
- ix_outbox_recipient: "was this sender acknowledged recently?", asked for every new case;
- ix_cases_first_response: recent answer throughput, for the expected response time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import inbox.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index("ix_cases_first_response", ["first_response_at"], unique=False)

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_until", inbox.models.UTCDateTime(), nullable=True))
        batch_op.create_index(
            "ix_outbox_recipient", ["channel", "recipient", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_recipient")
        batch_op.drop_column("claimed_until")

    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_first_response")
