"""Merge-suggestion signatures say which MinHash scheme made them

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 19:00:00

- case_signatures.scheme: 1 (every row written before this migration) is datasketch's
  universal hashing; 2 is one-permutation hashing (inbox/minhash.py, issue 24). The two are
  never compared: rows of scheme 1 are compared only with each other until `parity
  suggestions reindex` (or `parity run` in the background) rebuilds them from the stored
  messages. Their bands stay as they are: a band's bucket is hashed with its scheme, so the
  bands of scheme 1 only ever meet each other too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "case_signatures",
        sa.Column("scheme", sa.SmallInteger(), nullable=False, server_default=sa.text("1")),
    )


def downgrade() -> None:
    # The code before this migration would fold scheme-2 values into datasketch's: drop them
    # (and their bands), so that code only ever sees its own kind of signature.
    op.execute(
        "DELETE FROM case_bands WHERE case_id IN "
        "(SELECT case_id FROM case_signatures WHERE scheme <> 1)"
    )
    op.execute("DELETE FROM case_signatures WHERE scheme <> 1")
    with op.batch_alter_table("case_signatures") as batch:
        batch.drop_column("scheme")
