"""Audit chains per case, sealed into checkpoints, instead of one chain behind one lock

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 05:00:00

- audit_log.chain / audit_log.seq: a new row belongs to the chain of its case (0 for rows
  about no case) at position seq. Rows already stored keep NULL in both and stay one chain
  in id order, verified exactly as before; nothing is rewritten, so their HMACs still hold.
- audit_chains: each chain's head. A writer locks only that row, not the whole log.
- audit_seals / audit_seal_heads: checkpoints that chain the heads of all chains; the first
  one links to the newest row of the older single chain.
See docs/architecture/audit.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.create_unique_constraint("uq_audit_log_chain_seq", ["chain", "seq"])
    op.create_table(
        "audit_chains",
        sa.Column("chain", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hmac", sa.String(length=64), nullable=False),
        sa.Column("row_id", sa.BigInteger(), nullable=False),
        sa.Column("sealed_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chain"),
    )
    op.create_index(
        "ix_audit_chains_unsealed",
        "audit_chains",
        ["chain"],
        postgresql_where=sa.text("seq > sealed_seq"),
        sqlite_where=sa.text("seq > sealed_seq"),
    )
    op.create_table(
        "audit_seals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("heads", sa.BigInteger(), nullable=False),
        sa.Column("prev_hmac", sa.String(length=64), nullable=False),
        sa.Column("hmac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_seal_heads",
        sa.Column("seal_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("chain", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("row_id", sa.BigInteger(), nullable=False),
        sa.Column("hmac", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["seal_id"], ["audit_seals.id"]),
        sa.PrimaryKeyConstraint("seal_id", "chain"),
    )


def downgrade() -> None:
    op.drop_table("audit_seal_heads")
    op.drop_table("audit_seals")
    op.drop_index("ix_audit_chains_unsealed", table_name="audit_chains")
    op.drop_table("audit_chains")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint("uq_audit_log_chain_seq", type_="unique")
        batch_op.drop_column("seq")
        batch_op.drop_column("chain")
