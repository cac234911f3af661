"""Alembic environment: runs migrations on the connection inbox.migrate hands over."""

from __future__ import annotations

from typing import Any

from alembic import context

from inbox.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `parity db upgrade` (inbox.migrate)")


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Leave the search machinery of 0003 (FTS5 tables, tsvector columns) to that migration.

    They are kept by the database itself and have no model, so autogenerate must not
    propose dropping them.
    """
    if type_ == "table" and name is not None and "_fts" in name:
        return False
    return not (type_ in ("column", "index") and name is not None and "search" in name)


context.configure(
    connection=connection,
    include_object=include_object,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
