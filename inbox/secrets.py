"""Secrets read from the environment, masked wherever they could be printed.

Secrets never live in settings files: a file names the environment variable, and this module
reads it. Every value read is remembered so that the logging filter can mask it, even when
a library puts it into an exception message or a URL.
"""

from __future__ import annotations

import logging
import os
import re
import threading

_lock = threading.Lock()
_known: set[str] = set()
MASK = "***"


class Secret:
    """A string that never shows itself in repr, str or f-strings."""

    __slots__ = ("_value", "env")

    def __init__(self, value: str, env: str = "") -> None:
        self._value = value
        self.env = env
        if len(value) >= 4:  # masking 1-3 character strings would mangle every log line
            with _lock:
                _known.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.env or 'value'}={MASK})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def from_env(name: str, environ: dict[str, str] | None = None) -> Secret | None:
    """The secret in environment variable `name`, or None when it is unset or empty."""
    env = os.environ if environ is None else environ
    value = env.get(name, "")
    return Secret(value, name) if value else None


def mask(text: str) -> str:
    """`text` with every known secret value, and URL passwords, replaced by the mask."""
    with _lock:
        values = sorted(_known, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return _URL_PASSWORD.sub(rf"\1{MASK}@", text)


_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+@")


class MaskingFilter(logging.Filter):
    """Rewrites every log record so no known secret reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg = masked
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if mask(str(exc)) != str(exc):
                record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return True
