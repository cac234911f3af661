"""Logging set-up: secrets masked on every record, plain text or JSON lines."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from inbox.logcontext import FIELDS, ContextFilter
from inbox.secrets import MaskingFilter

# Fields a record may carry (through `extra=` or the bound context) on every JSON line.
_CONTEXT = FIELDS


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT:
            entry[key] = getattr(record, key, None)
        if record.exc_info:
            entry["error"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # Context first, so the masking filter also sees whatever the context added.
    handler.addFilter(ContextFilter())
    handler.addFilter(MaskingFilter())
    handler.setFormatter(
        JsonLines()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("mail.log", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
