"""the agent inbox: users, API tokens, sessions, login attempts, leases, assignment, notes,
presence, and full-text search

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 01:00:00

Search is kept in sync by the database itself, so no writer (the normalizer, a reply, a
future import) can forget it: SQLite gets FTS5 tables with triggers, PostgreSQL a stored
generated tsvector column with a GIN index. Both index the same words: runs of letters and
digits, lower-cased (see inbox/search.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import inbox.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN = "status IN ('new', 'open', 'pending_customer')"
CLAIMABLE = "status IN ('new', 'open')"

# PostgreSQL: the text is cut to its first 200,000 characters before indexing, because a
# tsvector is limited to 1 MiB and an over-long message must still be stored; punctuation
# becomes a space so words split exactly as SQLite's unicode61 tokenizer splits them.
_PG_MESSAGE_VECTOR = (
    "to_tsvector('simple'::regconfig, regexp_replace(left("
    "coalesce(subject, '') || ' ' || coalesce(text, '') || ' ' || "
    "coalesce(from_handle, '') || ' ' || coalesce(from_name, ''), 200000), "
    "'[^[:alnum:]]+', ' ', 'g'))"
)
_PG_IDENTITY_VECTOR = (
    "to_tsvector('simple'::regconfig, regexp_replace("
    "coalesce(handle, '') || ' ' || coalesce(display_name, ''), '[^[:alnum:]]+', ' ', 'g'))"
)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", inbox.models.UTCDateTime(), nullable=False),
        sa.Column("last_login_at", inbox.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("created_at", inbox.models.UTCDateTime(), nullable=False),
        sa.Column("last_used_at", inbox.models.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", inbox.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", inbox.models.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", inbox.models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", inbox.models.UTCDateTime(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_table(
        "login_attempts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", inbox.models.UTCDateTime(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_login_attempts_name", "login_attempts", ["name", "at"])
    op.create_index("ix_login_attempts_ip", "login_attempts", ["ip", "at"])
    op.create_table(
        "case_notes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("case_id", BigId, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", inbox.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_notes_case_id", "case_notes", ["case_id"])
    op.create_table(
        "case_viewers",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("case_id", BigId, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("since", inbox.models.UTCDateTime(), nullable=False),
        sa.Column("seen_at", inbox.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_id", "user_id", name="uq_case_viewer"),
    )

    # Plain ADD COLUMN (no batch mode): SQLite would otherwise rebuild `cases`, and dropping
    # the old table with foreign keys on fails once messages point at it. SQLite accepts an
    # inline REFERENCES on ADD COLUMN, which Alembic does not render, so it is written out.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE cases ADD COLUMN claimed_by INTEGER REFERENCES users (id)")
        op.execute("ALTER TABLE cases ADD COLUMN lease_until DATETIME")
        op.execute("ALTER TABLE cases ADD COLUMN assignee_id INTEGER REFERENCES users (id)")
    else:
        for column in ("claimed_by", "assignee_id"):
            op.add_column(
                "cases",
                sa.Column(
                    column,
                    BigId,
                    sa.ForeignKey("users.id", name=f"fk_cases_{column}_users"),
                    nullable=True,
                ),
            )
        op.add_column("cases", sa.Column("lease_until", inbox.models.UTCDateTime(), nullable=True))
    op.create_index("ix_cases_assignee_id", "cases", ["assignee_id"])
    op.create_index(
        "ix_cases_open_queue",
        "cases",
        ["due_at", "first_inbound_at", "id"],
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_index(
        "ix_cases_claimable",
        "cases",
        ["due_at", "first_inbound_at", "id"],
        sqlite_where=sa.text(CLAIMABLE),
        postgresql_where=sa.text(CLAIMABLE),
    )

    op.create_index(
        "ix_cases_claimed_by",
        "cases",
        ["claimed_by"],
        sqlite_where=sa.text("claimed_by IS NOT NULL"),
        postgresql_where=sa.text("claimed_by IS NOT NULL"),
    )

    if op.get_bind().dialect.name == "sqlite":
        _sqlite_search()
    else:
        _postgresql_search()
        _postgresql_vacuum()


def _sqlite_search() -> None:
    # Table and column names below are this file's constants, never input.
    for table, columns in (
        ("messages", ("subject", "text", "from_handle", "from_name")),
        ("identities", ("handle", "display_name")),
    ):
        fts = f"{table}_fts"
        cols = ", ".join(columns)
        new = ", ".join(f"new.{c}" for c in columns)
        old = ", ".join(f"old.{c}" for c in columns)
        # External content: the words are indexed, the text stays only in `table`.
        op.execute(
            f"CREATE VIRTUAL TABLE {fts} USING fts5({cols}, "
            f"content='{table}', content_rowid='id', tokenize='unicode61')"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_ai AFTER INSERT ON {table} BEGIN "  # noqa: S608
            f"INSERT INTO {fts}(rowid, {cols}) VALUES (new.id, {new}); END"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_ad AFTER DELETE ON {table} BEGIN "  # noqa: S608
            f"INSERT INTO {fts}({fts}, rowid, {cols}) VALUES ('delete', old.id, {old}); END"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_au AFTER UPDATE OF {cols} ON {table} BEGIN "  # noqa: S608
            f"INSERT INTO {fts}({fts}, rowid, {cols}) VALUES ('delete', old.id, {old}); "
            f"INSERT INTO {fts}(rowid, {cols}) VALUES (new.id, {new}); END"
        )
        op.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")  # noqa: S608


def _postgresql_vacuum() -> None:
    # Every claim and resolve leaves a dead row version at the head of the queue index that
    # SKIP LOCKED must step over; the default (vacuum at 20% dead rows, 200,000 of a
    # million cases) comes far too late for that, so vacuum at 1%.
    op.execute(
        "ALTER TABLE cases SET (autovacuum_vacuum_scale_factor = 0.01, "
        "autovacuum_analyze_scale_factor = 0.02)"
    )


def _postgresql_search() -> None:
    op.execute(
        "ALTER TABLE messages ADD COLUMN search_vector tsvector "
        f"GENERATED ALWAYS AS ({_PG_MESSAGE_VECTOR}) STORED"
    )
    op.execute("CREATE INDEX ix_messages_search ON messages USING gin (search_vector)")
    op.execute(
        "ALTER TABLE identities ADD COLUMN search_vector tsvector "
        f"GENERATED ALWAYS AS ({_PG_IDENTITY_VECTOR}) STORED"
    )
    op.execute("CREATE INDEX ix_identities_search ON identities USING gin (search_vector)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for fts in ("messages_fts", "identities_fts"):
            for suffix in ("ai", "ad", "au"):
                op.execute(f"DROP TRIGGER IF EXISTS {fts}_{suffix}")
            op.execute(f"DROP TABLE IF EXISTS {fts}")
    else:
        op.execute(
            "ALTER TABLE cases RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_analyze_scale_factor)"
        )
        op.execute("DROP INDEX IF EXISTS ix_identities_search")
        op.execute("ALTER TABLE identities DROP COLUMN IF EXISTS search_vector")
        op.execute("DROP INDEX IF EXISTS ix_messages_search")
        op.execute("ALTER TABLE messages DROP COLUMN IF EXISTS search_vector")
    op.drop_index("ix_cases_claimed_by", table_name="cases")
    op.drop_index("ix_cases_claimable", table_name="cases")
    op.drop_index("ix_cases_open_queue", table_name="cases")
    op.drop_index("ix_cases_assignee_id", table_name="cases")
    # Plain DROP COLUMN on both (SQLite 3.35+ has it); batch mode would rebuild `cases`.
    op.drop_column("cases", "assignee_id")
    op.drop_column("cases", "lease_until")
    op.drop_column("cases", "claimed_by")
    op.drop_table("case_viewers")
    op.drop_index("ix_case_notes_case_id", table_name="case_notes")
    op.drop_table("case_notes")
    op.drop_index("ix_login_attempts_ip", table_name="login_attempts")
    op.drop_index("ix_login_attempts_name", table_name="login_attempts")
    op.drop_table("login_attempts")
    op.drop_index("ix_web_sessions_user_id", table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_index("ix_api_tokens_user_id", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
