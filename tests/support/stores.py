"""A store of each kind at an older migration, for tests of what an upgrade does to rows an
earlier version wrote: made empty at `revision`, dropped afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from inbox import migrate
from inbox.db import make_engine
from tests.conftest import PG_ADMIN_URL


@contextmanager
def store_at(kind: str, tmp_path: Path, revision: str) -> Iterator[str]:
    """The URL of an empty `kind` ("sqlite" or "postgresql") store migrated to `revision`."""
    admin = None
    name = f"parity_old_{os.getpid()}_{secrets.token_hex(3)}"
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    migrate.upgrade(engine, revision)
    engine.dispose()
    try:
        yield url
    finally:
        if admin is not None:
            with admin.connect() as conn:
                # FORCE (PostgreSQL 13+) ends the sessions a failed test left on it.
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
