"""case merges (with what each moved, for undo) and near-duplicate signatures with LSH bands

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import inbox.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "case_merges",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("source_case_id", BigId, nullable=False),
        sa.Column("into_case_id", BigId, nullable=False),
        sa.Column("merged_at", inbox.models.UTCDateTime(), nullable=False),
        sa.Column("merged_by", sa.String(length=128), nullable=False),
        sa.Column("moved", sa.JSON(), nullable=False),
        sa.Column("source_state", sa.JSON(), nullable=False),
        sa.Column("into_state", sa.JSON(), nullable=False),
        sa.Column("undone_at", inbox.models.UTCDateTime(), nullable=True),
        sa.Column("undone_by", sa.String(length=128), nullable=True),
        sa.Column("undo_details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["source_case_id"], ["cases.id"]),
        sa.ForeignKeyConstraint(["into_case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_merges_source_case_id", "case_merges", ["source_case_id"])
    op.create_index("ix_case_merges_into_case_id", "case_merges", ["into_case_id"])
    op.create_table(
        "case_signatures",
        sa.Column("case_id", BigId, nullable=False),
        sa.Column("hashvalues", sa.LargeBinary(), nullable=False),
        sa.Column("shingles", sa.Integer(), nullable=False),
        sa.Column("updated_at", inbox.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("case_id"),
    )
    op.create_table(
        "case_bands",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("case_id", BigId, nullable=False),
        sa.Column("band", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_bands_case_id", "case_bands", ["case_id"])
    op.create_index("ix_case_bands_bucket", "case_bands", ["band", "bucket"])


def downgrade() -> None:
    op.drop_index("ix_case_bands_bucket", table_name="case_bands")
    op.drop_index("ix_case_bands_case_id", table_name="case_bands")
    op.drop_table("case_bands")
    op.drop_table("case_signatures")
    op.drop_index("ix_case_merges_into_case_id", table_name="case_merges")
    op.drop_index("ix_case_merges_source_case_id", table_name="case_merges")
    op.drop_table("case_merges")
