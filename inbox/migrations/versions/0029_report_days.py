"""The manager report's rollups: each day's figures per channel, side, language, agent and
team, kept by PostgreSQL

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-08 05:00:00

- ix_cases_first_inbound: the report's period is a range of cases.first_inbound_at; the
  days the rollups do not cover are read from the cases through it.
- PostgreSQL only (SQLite reads every case into Python, docs/architecture/report.md):
  - report_days: per day (UTC, of the case's first inbound message) and per channel, side,
    language, agent and team, the counts and the exact values (durations, and the times
    the report compares with "now") of the cases, and the counts and values of their later
    turns. Written only by the fold (inbox/report_days.py `fold`), which recomputes whole
    days from the cases.
  - report_folded: the days the fold has computed. A day without a row is not covered (a
    store upgraded to this revision, a restored backup): the report reads it from the cases.
  - report_dirty: a row per change since the fold, naming the day it changed. Append-only,
    so no two writers wait on the same row (issue 19); the report reads a marked day from
    the cases, and the fold recomputes it and deletes the marks it saw.
  - Triggers mark the days: a new case or later turn (per statement, so a bulk insert
    marks each day once), an update of a column the report reads (per row, filtered by WHEN
    so other updates cost nothing), a deletion. TRUNCATE of cases or case_turns empties the
    three tables (every day is then read from the cases until folded again).
"""

from __future__ import annotations

from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

# What a case's contribution to the report is computed from (inbox/report_days.py
# CASE_COLUMNS and TURN_COLUMNS, which a test checks against these).
CASE_COLUMNS = (
    "first_inbound_at",
    "channel",
    "side",
    "language",
    "assignee_id",
    "first_responder_id",
    "team_id",
    "status",
    "ack_state",
    "ack_eta_at",
    "first_response_at",
    "first_due_at",
    "due_at",
    "resolved_at",
    "followups",
    "reopens",
)
TURN_COLUMNS = ("case_id", "seq", "started_at", "due_at", "responded_at", "closed_at")


def _changed(columns: tuple[str, ...]) -> str:
    old = ", ".join(f"OLD.{c}" for c in columns)
    new = ", ".join(f"NEW.{c}" for c in columns)
    return f"({old}) IS DISTINCT FROM ({new})"


def upgrade() -> None:
    op.create_index("ix_cases_first_inbound", "cases", ["first_inbound_at"])
    if op.get_bind().dialect.name != "postgresql":
        return
    statements = [
        """CREATE TABLE report_days (
            day date NOT NULL,
            channel text NOT NULL,
            side text NOT NULL,
            language text NOT NULL,
            agent bigint,
            team bigint,
            volume integer NOT NULL DEFAULT 0,
            ack_eligible integer NOT NULL DEFAULT 0,
            ack_sent integer NOT NULL DEFAULT 0,
            sla_attained integer NOT NULL DEFAULT 0,
            open integer NOT NULL DEFAULT 0,
            unanswered integer NOT NULL DEFAULT 0,
            followups bigint NOT NULL DEFAULT 0,
            promised_answered integer NOT NULL DEFAULT 0,
            kept integer NOT NULL DEFAULT 0,
            reopened integer NOT NULL DEFAULT 0,
            ever_resolved integer NOT NULL DEFAULT 0,
            next_turns integer NOT NULL DEFAULT 0,
            next_sla_attained integer NOT NULL DEFAULT 0,
            oldest_open timestamp,
            oldest_unanswered timestamp,
            fr float8[],
            res float8[],
            perr float8[],
            due_waiting float8[],
            eta_waiting float8[],
            nr float8[],
            turn_due_waiting float8[]
        )""",
        "CREATE INDEX ix_report_days_day ON report_days (day)",
        """CREATE TABLE report_folded (
            day date PRIMARY KEY,
            folded_at timestamp NOT NULL
        )""",
        """CREATE TABLE report_dirty (
            id bigserial PRIMARY KEY,
            day date NOT NULL
        )""",
        """CREATE FUNCTION report_mark_new_cases() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO report_dirty (day)
            SELECT DISTINCT first_inbound_at::date FROM new_rows
            WHERE first_inbound_at IS NOT NULL;
            RETURN NULL;
        END $$""",
        """CREATE FUNCTION report_mark_case() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' AND OLD.first_inbound_at IS NOT NULL THEN
                INSERT INTO report_dirty (day) VALUES (OLD.first_inbound_at::date);
            END IF;
            IF TG_OP <> 'DELETE' AND NEW.first_inbound_at IS NOT NULL
               AND (TG_OP = 'INSERT' OR NEW.first_inbound_at::date
                                        IS DISTINCT FROM OLD.first_inbound_at::date) THEN
                INSERT INTO report_dirty (day) VALUES (NEW.first_inbound_at::date);
            END IF;
            RETURN NULL;
        END $$""",
        """CREATE FUNCTION report_mark_new_turns() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO report_dirty (day)
            SELECT DISTINCT c.first_inbound_at::date
            FROM new_rows t JOIN cases c ON c.id = t.case_id
            WHERE t.seq >= 1 AND c.first_inbound_at IS NOT NULL;
            RETURN NULL;
        END $$""",
        """CREATE FUNCTION report_mark_turn() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- UPDATE or DELETE: the turn's case before, and after if it moved.
            INSERT INTO report_dirty (day)
            SELECT c.first_inbound_at::date FROM cases c
            WHERE c.id = OLD.case_id AND c.first_inbound_at IS NOT NULL;
            IF TG_OP = 'UPDATE' AND NEW.case_id IS DISTINCT FROM OLD.case_id THEN
                INSERT INTO report_dirty (day)
                SELECT c.first_inbound_at::date FROM cases c
                WHERE c.id = NEW.case_id AND c.first_inbound_at IS NOT NULL;
            END IF;
            RETURN NULL;
        END $$""",
        """CREATE FUNCTION report_forget() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            TRUNCATE report_days, report_folded, report_dirty;
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER report_new_cases AFTER INSERT ON cases
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION report_mark_new_cases()""",
        f"""CREATE TRIGGER report_case_changed AFTER UPDATE ON cases
            FOR EACH ROW WHEN ({_changed(CASE_COLUMNS)})
            EXECUTE FUNCTION report_mark_case()""",
        """CREATE TRIGGER report_case_deleted AFTER DELETE ON cases
            FOR EACH ROW EXECUTE FUNCTION report_mark_case()""",
        """CREATE TRIGGER report_cases_truncated AFTER TRUNCATE ON cases
            FOR EACH STATEMENT EXECUTE FUNCTION report_forget()""",
        """CREATE TRIGGER report_turns_truncated AFTER TRUNCATE ON case_turns
            FOR EACH STATEMENT EXECUTE FUNCTION report_forget()""",
        """CREATE TRIGGER report_new_turns AFTER INSERT ON case_turns
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION report_mark_new_turns()""",
        f"""CREATE TRIGGER report_turn_changed AFTER UPDATE ON case_turns
            FOR EACH ROW WHEN ({_changed(TURN_COLUMNS)})
            EXECUTE FUNCTION report_mark_turn()""",
        """CREATE TRIGGER report_turn_deleted AFTER DELETE ON case_turns
            FOR EACH ROW EXECUTE FUNCTION report_mark_turn()""",
    ]
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for function in (
            "report_mark_new_cases",
            "report_mark_case",
            "report_mark_new_turns",
            "report_mark_turn",
            "report_forget",
        ):
            # CASCADE: with each function go the triggers that call it.
            op.execute(f"DROP FUNCTION IF EXISTS {function}() CASCADE")
        for table in ("report_days", "report_folded", "report_dirty"):
            op.execute(f"DROP TABLE IF EXISTS {table}")
    op.drop_index("ix_cases_first_inbound", table_name="cases")
