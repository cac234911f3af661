"""Shared fixtures: every store test runs on SQLite and on PostgreSQL.

PostgreSQL is a requirement, not an option: when it cannot be reached the PostgreSQL half of
the suite errors instead of skipping, so a green run always means both stores were tested.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from inbox import logcontext, migrate
from inbox.config import StoreSettings
from inbox.db import make_engine
from inbox.models import Base

PG_ADMIN_URL = os.environ.get(
    "PARITY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
FIXTURES = Path(__file__).parent / "fixtures"
# Tests run keyed, like production: without a key every command that writes the audit log
# refuses to start. One random key per session, in the environment, so child processes
# (`parity run`, the CLI) inherit it and chain and verify with the same key as the tests.
os.environ.setdefault("PARITY_AUDIT_KEY", "test-" + secrets.token_hex(32))
# The `sink` fixture: a real SMTP server standing in for the relay (tests/support/sink.py).
pytest_plugins = ["tests.support.sink"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    name = f"parity_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # fail, never skip: the suite promises both stores
        pytest.fail(f"PostgreSQL is required at {PG_ADMIN_URL}: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each kind; SQLite per test, PostgreSQL truncated."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "parity.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    engine = create_engine(url)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    # Generous: a test reading while a subprocess under test writes must wait, not fail,
    # on a loaded machine.
    engine = make_engine(db_url, busy_timeout_ms=15000)
    yield engine
    engine.dispose()


@pytest.fixture
def store_settings() -> StoreSettings:
    return StoreSettings()


@pytest.fixture(autouse=True)
def _fresh_log_context() -> Iterator[None]:
    """Each test starts with no connector or case bound to its log lines.

    Code that annotates outside a bound block keeps the field for the rest of its context;
    in the test runner's one thread that would leak into the next test's log lines.
    """
    with logcontext.bound(connector=None, case=None, intake_id=None):
        yield
