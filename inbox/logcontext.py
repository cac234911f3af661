"""Fields every log line carries where known (connector, case, intake), via contextvars.

A connector's loop and the normalizer bind what they work on; a logging filter copies the
fields onto each record. Context variables follow asyncio tasks and `asyncio.to_thread`, so
a line logged deep inside a library call still names the connector and case.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

FIELDS = ("connector", "case", "intake_id")

_fields: ContextVar[dict[str, Any] | None] = ContextVar("parity_log_fields", default=None)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """These fields on every line logged inside the block (and tasks started in it)."""
    token = _fields.set({**(_fields.get() or {}), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


def annotate(**fields: Any) -> None:
    """Add fields learnt midway (the case, once found) to the innermost bound block.

    Outside any block it binds for the rest of the current context: a task's own copy.
    """
    current = _fields.get()
    if current is None:
        _fields.set(dict(fields))
    else:
        current.update(fields)


def current() -> dict[str, Any]:
    return dict(_fields.get() or {})


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record, unless the call passed its own `extra=`."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_fields.get() or {}).items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True
