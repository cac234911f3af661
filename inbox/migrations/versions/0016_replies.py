"""Replies: uploads for attachments, drafts per agent and case, canned replies

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 16:00:00

- reply_uploads: a file an agent uploaded for a reply (its bytes are a blob), owned by that
  agent and case; once sent it names the outbound message it became an attachment of.
- reply_drafts: one unsent reply per agent and case (text, target, copies, uploads), kept on
  the server so a reload or another browser finds it.
- canned_replies: shared (owner_id NULL, made by a manager) and personal reply texts, with
  per-channel variants.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reply_uploads",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("case_id", BigId, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("sha256", sa.String(length=64), sa.ForeignKey("blobs.sha256"), nullable=False),
        sa.Column("filename", sa.String(length=128), nullable=False),
        sa.Column("content_type", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("message_id", BigId, sa.ForeignKey("messages.id"), nullable=True),
    )
    op.create_index("ix_reply_uploads_user_id", "reply_uploads", ["user_id"])
    op.create_index("ix_reply_uploads_case_id", "reply_uploads", ["case_id"])
    op.create_table(
        "reply_drafts",
        sa.Column("user_id", BigId, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("case_id", BigId, sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("draft", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "canned_replies",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("title", sa.String(length=128), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("owner_id", BigId, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_canned_replies_owner_id", "canned_replies", ["owner_id"])


def downgrade() -> None:
    op.drop_index("ix_canned_replies_owner_id", table_name="canned_replies")
    op.drop_table("canned_replies")
    op.drop_table("reply_drafts")
    op.drop_index("ix_reply_uploads_case_id", table_name="reply_uploads")
    op.drop_index("ix_reply_uploads_user_id", table_name="reply_uploads")
    op.drop_table("reply_uploads")
