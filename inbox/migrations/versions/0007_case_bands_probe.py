"""case_bands: the probe index covers case_id

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21 04:00:00

A suggestion lookup reads (band, bucket) -> case_id for 16 buckets. With the old index on
(band, bucket) alone, every row found cost a second B-tree lookup into the table for its
case_id; at a million open cases those lookups land on pages all over a 2 GB file. With
case_id in the index the probe is answered from the index alone (SQLite's covering index,
PostgreSQL's index-only scan), and the index's own size grows by one integer per row.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_case_bands_probe", "case_bands", ["band", "bucket", "case_id"])
    op.drop_index("ix_case_bands_bucket", table_name="case_bands")


def downgrade() -> None:
    op.create_index("ix_case_bands_bucket", "case_bands", ["band", "bucket"])
    op.drop_index("ix_case_bands_probe", table_name="case_bands")
