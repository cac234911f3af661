"""The [connectors.webform] section: the public contact form and the case status page."""

from __future__ import annotations

from pydantic import Field, model_validator

from inbox.config import Strict

# What a person may attach by default: pictures of an error, and a document such as an ID.
# Checked against the file's first bytes, never against the type the browser declares.
DEFAULT_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")


class WebformSettings(Strict):
    # A public door: off until the operator opens it.
    enabled: bool = False
    # The URL people reach the form and the status page at (behind the TLS proxy), for the
    # status links in acknowledgements ({status_url}); empty keeps the connector off.
    public_url: str = ""
    # The server secret the form's tokens, confirmation links and codes are signed with.
    secret_env: str = "PARITY_WEBFORM_SECRET"
    # A form token (CSRF and proof-of-work challenge in one) is good this long.
    token_max_age_minutes: int = Field(default=120, ge=1, le=24 * 60)
    # The proof of work: leading zero bits of SHA-256(challenge ":" nonce), and the most it
    # is raised to when the global rate-limit bucket runs low (one bit per halving).
    pow_bits: int = Field(default=16, ge=0, le=28)
    pow_max_bits: int = Field(default=22, ge=0, le=32)
    # Without JavaScript no proof of work can be made: such a post must be at least this
    # old (a robot posts at once) and draws on the stricter no-script buckets below.
    nojs_min_fill_seconds: int = Field(default=5, ge=0, le=600)
    # Token buckets (stored, shared by every instance): a burst and a refill per hour.
    per_address_burst: int = Field(default=5, ge=1)
    per_address_per_hour: float = Field(default=10.0, ge=0)
    global_burst: int = Field(default=200, ge=1)
    global_per_hour: float = Field(default=600.0, ge=0)
    nojs_per_address_burst: int = Field(default=2, ge=1)
    nojs_per_address_per_hour: float = Field(default=3.0, ge=0)
    nojs_global_burst: int = Field(default=40, ge=1)
    nojs_global_per_hour: float = Field(default=120.0, ge=0)
    # Status page reads and wrong tokens, per client address.
    status_per_address_burst: int = Field(default=30, ge=1)
    status_per_address_per_hour: float = Field(default=120.0, ge=0)
    # What one post may carry.
    max_attachments: int = Field(default=5, ge=0, le=5)
    max_attachment_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    attachment_types: list[str] = Field(default_factory=lambda: list(DEFAULT_TYPES))
    max_text_chars: int = Field(default=20_000, ge=100, le=100_000)
    # How long the answer page waits for the normalizer to open the case before it shows
    # "received" and refreshes itself until the reference exists.
    wait_seconds: float = Field(default=3.0, ge=0, le=30)
    # A confirmation link or code is good this long.
    confirm_hours: int = Field(default=48, ge=1)

    @model_validator(mode="after")
    def _bits(self) -> WebformSettings:
        if self.pow_max_bits < self.pow_bits:
            raise ValueError("pow_max_bits must be at least pow_bits")
        return self
