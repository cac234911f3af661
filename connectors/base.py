"""The connector contract: a small Protocol, and the status every connector reports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from inbox.models import utcnow


@dataclass
class ConnectorHealth:
    """What a running connector knows about itself; the daemon persists it for status."""

    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def success(self) -> None:
        self.last_success_at = utcnow()

    def error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = utcnow()


class Connector(Protocol):
    """Anything the daemon can run: a server or a poller with a name and a health record."""

    name: str
    health: ConnectorHealth

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set. Raising means a crash; the daemon restarts it."""
        ...


class Disabled(Exception):
    """A connector cannot run with these settings or this installation; says why."""
