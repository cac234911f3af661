"""A throw-away PostgreSQL database for a benchmark, migrated to the head: created before the
run and dropped after it, whatever happens in between. Shared by the bench scripts that
load their own data at scale (csat_report, search; audit_report keeps its own copy for now).

The server is PARITY_BENCH_PG, else PARITY_TEST_PG, else postgres@127.0.0.1:5432.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text

from inbox import migrate
from inbox.db import make_engine

ADMIN = os.environ.get(
    "PARITY_BENCH_PG",
    os.environ.get("PARITY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
)


@contextmanager
def scratch_database(prefix: str) -> Iterator[Engine]:
    """An engine on a new database named `prefix` plus a random suffix, migrated."""
    name = f"{prefix}_{secrets.token_hex(3)}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(ADMIN.rsplit("/", 1)[0] + f"/{name}")
    try:
        migrate.upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            # FORCE (PostgreSQL 13+) ends the sessions still on it, as a crashed run leaves.
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load, printed beside every figure."""
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])
