"""The [connectors.smtp] section: the SMTP server that takes mail in."""

from __future__ import annotations

from pydantic import Field, field_validator

from inbox.config import Strict


class SmtpSettings(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)
    # The name we give in the greeting and EHLO answer.
    hostname: str = "parity.localhost"
    # Mail is accepted only for these domains: anything else is refused, never relayed.
    support_domains: list[str] = Field(default_factory=lambda: ["support.example.com"])
    # The one 5xx besides relay denial; there is no mailbox quota.
    max_message_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    # aiosmtpd's RFC default of 1001 rejects real HTML mail with long lines. 0: a line may be
    # as long as the whole message may be, so the size limit stays the only content 5xx.
    max_line_length: int = Field(default=0, ge=0)
    # STARTTLS is offered when both are set (PEM files).
    tls_cert: str = ""
    tls_key: str = ""

    @field_validator("max_line_length")
    @classmethod
    def _line(cls, value: int) -> int:
        if 0 < value < 1001:
            raise ValueError("0 (no limit of its own) or at least 1001, the RFC 5321 minimum")
        return value

    @field_validator("support_domains")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one support domain is needed, or mail has nowhere to go")
        return [d.strip().lower().lstrip("@") for d in value]
