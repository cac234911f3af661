"""Audit rows of form 3: a row written before 0020 that named an erased person, re-attested

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07 18:45:00

- audit_log.attest: for form 3 only, the HMAC over the row as it is after an erasure (its
  values digested as in form 2, its kept HMAC and link). Erasure checks a form-1 row before
  it replaces a value by its digest, so such rows can be erased now instead of left. See
  docs/architecture/audit.md#erasure.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("attest", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("attest")
