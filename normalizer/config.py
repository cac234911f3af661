"""Settings of the normalizer worker and the caps applied before any parser runs."""

from __future__ import annotations

import os

from pydantic import Field

from inbox.config import Strict
from normalizer.mail import Caps


class NormalizerSettings(Strict):
    batch_size: int = Field(default=50, ge=1, le=1000)
    # Parsed inputs filed in one transaction (one commit, one statement for their locks);
    # one the store refuses is dead-lettered alone and the rest commit. Larger batches save
    # round trips; on SQLite a batch holds the one write lock while it is filed.
    persist_batch: int = Field(default=50, ge=1, le=1000)
    # A claimed row comes back to the queue this long after its worker stopped answering.
    lease_seconds: int = Field(default=120, ge=5)
    max_attempts: int = Field(default=5, ge=1)
    max_message_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_mime_depth: int = Field(default=100, ge=2)
    max_mime_parts: int = Field(default=1000, ge=1)
    max_header_bytes: int = Field(default=256 * 1024, ge=1024)
    max_addresses: int = Field(default=1000, ge=1)
    # Parameters of one Content-Type or Content-Disposition header, and its size (issue 16).
    max_header_params: int = Field(default=64, ge=1)
    max_param_header_bytes: int = Field(default=16 * 1024, ge=256)
    # Wall-clock budget of one input's parse, enforced by killing the parse's process.
    parse_timeout_seconds: float = Field(default=5, gt=0)
    # Parse processes: this many inputs are parsed at once, so a slow one holds no other.
    workers: int = Field(default=2, ge=1, le=64)
    # Normalizer worker processes `parity run` starts (`parity worker` too). Unset: 1 on
    # SQLite (one writer at a time; more processes would only queue on its lock), the core
    # count on PostgreSQL. 1 runs the worker inside `parity run`'s own process.
    processes: int | None = Field(default=None, ge=1, le=256)

    def process_count(self, sqlite: bool) -> int:
        """`processes`, or its default for this store."""
        if self.processes is not None:
            return self.processes
        return 1 if sqlite else max(1, os.cpu_count() or 1)

    def caps(self) -> Caps:
        return Caps(
            max_bytes=self.max_message_bytes,
            max_depth=self.max_mime_depth,
            max_parts=self.max_mime_parts,
            max_header_bytes=self.max_header_bytes,
            max_addresses=self.max_addresses,
            max_header_params=self.max_header_params,
            max_param_header_bytes=self.max_param_header_bytes,
        )
