"""inbox.db.insert_ignore reports the rows it added, not the ones its conflict skipped, on
SQLite and PostgreSQL, however it is executed: one row, many rows (executemany), one
multi-row VALUES, with RETURNING. The expected count is read from the table itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from inbox.db import insert_ignore, write
from inbox.models import AckBucket, utcnow


def rows(keys: list[str]) -> list[dict[str, Any]]:
    return [{"key": k, "tokens": 1.0, "updated_at": utcnow()} for k in keys]


def one_row(conn: Connection, keys: list[str]) -> int:
    (row,) = rows(keys)
    return int(conn.execute(insert_ignore(conn, AckBucket, ["key"]).values(**row)).rowcount)


def execute_many(conn: Connection, keys: list[str]) -> int:
    return int(conn.execute(insert_ignore(conn, AckBucket, ["key"]), rows(keys)).rowcount)


def multi_values(conn: Connection, keys: list[str]) -> int:
    return int(conn.execute(insert_ignore(conn, AckBucket, ["key"]).values(rows(keys))).rowcount)


def returning(conn: Connection, keys: list[str]) -> int:
    statement = insert_ignore(conn, AckBucket, ["key"]).values(rows(keys))
    return len(conn.execute(statement.returning(AckBucket.key)).all())


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(AckBucket)).scalar_one())


@pytest.mark.parametrize(
    "run",
    [one_row, execute_many, multi_values, returning],
    ids=lambda f: f.__name__,
)
def test_the_count_is_what_was_added(engine: Engine, run: Callable[..., int]) -> None:
    with write(engine) as conn:
        conn.execute(insert_ignore(conn, AckBucket, ["key"]), rows(["taken"]))
    batches = [["new1"], ["taken"]] if run is one_row else [["taken", "new1", "new2"], ["new1"]]
    for keys in batches:
        before = stored(engine)
        with write(engine) as conn:
            reported = run(conn, keys)
        assert reported == stored(engine) - before, keys
