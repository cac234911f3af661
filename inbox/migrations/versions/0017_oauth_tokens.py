"""OAuth2 grants of mailboxes: refresh and access tokens (encrypted), status, refresh lease

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 15:30:00

- oauth_tokens: one row per OAuth account (`parity mailbox authorize ACCOUNT`). The tokens
  are Fernet-encrypted under PARITY_SECRET_KEY; status "auth failed" with the provider's
  reason when a refresh was refused; refresh_owner/refresh_until are the lease that lets
  one instance refresh at a time. See docs/operations/mailboxes.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_tokens",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("refresh_token_enc", sa.Text(), nullable=False),
        sa.Column("access_token_enc", sa.Text(), nullable=True),
        sa.Column("access_expires_at", sa.DateTime(), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("failed_at", sa.DateTime(), nullable=True),
        sa.Column("authorized_at", sa.DateTime(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(), nullable=True),
        sa.Column("refreshes", sa.Integer(), nullable=False),
        sa.Column("refresh_owner", sa.String(length=128), nullable=True),
        sa.Column("refresh_until", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )


def downgrade() -> None:
    op.drop_table("oauth_tokens")
