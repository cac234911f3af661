"""Erasure and retention: audit rows of form 2 (content hashed leaf by leaf), erased marks

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 16:55:00

- audit_log.form: how a row's HMAC covers its before/after JSON. 1 (every row written before
  this migration): the JSON itself. 2: a keyed digest of each value, so erasure can replace a
  value by its digest and the row still verifies. Existing rows keep form 1 and verify as
  they always did. See docs/architecture/audit.md#erasure.
- cases.erased_at, contacts.erased_at: when their content was erased (`parity contacts
  erase`, `parity retention run`); retention skips cases already erased.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "audit_log",
        sa.Column("form", sa.SmallInteger(), nullable=False, server_default=sa.text("1")),
    )
    op.add_column("cases", sa.Column("erased_at", sa.DateTime(), nullable=True))
    op.add_column("contacts", sa.Column("erased_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("erased_at")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("erased_at")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("form")
