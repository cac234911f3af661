"""Teams, their members, a case's team and the team's auto-assignment

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 17:00:00

- teams: a name, the auto-assignment mode ("off", "round_robin", "load_balanced") and
  round-robin's cursor (the member who got the last case).
- team_members: (team, user); indexed by user, since claim-next reads "my teams".
- cases.team_id: set by routing rules ([[inbox.routing]]) when a case opens, or by an
  agent; the manager report groups by it. See docs/agents/teams.md.
- ix_cases_team_claimable: claim-next's tiers (my teams, no team) in queue order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("auto_assign", sa.String(length=16), nullable=False, server_default="off"),
        sa.Column("last_assignee_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "team_members",
        sa.Column("team_id", sa.BigInteger(), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "user_id"),
    )
    op.create_index("ix_team_members_user_id", "team_members", ["user_id"])
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team_id", sa.BigInteger(), nullable=True))
        batch_op.create_foreign_key("fk_cases_team_id", "teams", ["team_id"], ["id"])
        batch_op.create_index("ix_cases_team_id", ["team_id"])
    # Claim-next's team tiers walk this in queue order (partial, like ix_cases_claimable).
    op.create_index(
        "ix_cases_team_claimable",
        "cases",
        ["team_id", "due_at", "first_inbound_at", "id"],
        sqlite_where=sa.text("status IN ('new', 'open')"),
        postgresql_where=sa.text("status IN ('new', 'open')"),
    )


def downgrade() -> None:
    op.drop_index("ix_cases_team_claimable", table_name="cases")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_team_id")
        batch_op.drop_constraint("fk_cases_team_id", type_="foreignkey")
        batch_op.drop_column("team_id")
    op.drop_index("ix_team_members_user_id", table_name="team_members")
    op.drop_table("team_members")
    op.drop_table("teams")
