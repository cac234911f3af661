"""Trust: sender authentication per message, a stored safe HTML view, acknowledgement buckets

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 02:00:00

- messages.auth: the SPF/DKIM/DMARC/ARC result of an inbound mail (or of the upstream
  provider's Authentication-Results we trust), so the case page and `case show --json` show
  it without evaluating DNS again, and threading can refuse an unauthenticated From.
- messages.html_view: the HTML part already depth-capped and sanitized when the message was
  filed (under the parse budget), so opening a case never parses raw HTML per request.
- cases.unverified_from: "claims to be from ...": the address an unauthenticated mail gave as
  its From, when that mail opened its own case instead of joining the address's contact.
- ack_buckets: token buckets limiting acknowledgements per recipient, per recipient domain
  and globally. Rows, not process memory, so every instance draws on the same buckets.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auth", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("html_view", sa.Text(), nullable=True))
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unverified_from", sa.String(length=320), nullable=True))
    op.create_table(
        "ack_buckets",
        sa.Column("key", sa.String(length=400), primary_key=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ack_buckets")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("unverified_from")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("html_view")
        batch_op.drop_column("auth")
