"""The [connectors.imap] section: the mailboxes IMAP polling drains."""

from __future__ import annotations

from datetime import date

from pydantic import Field, field_validator, model_validator

from inbox.config import Strict


class ImapAccount(Strict):
    # Names the account in status, checkpoints and source keys: keep it once chosen.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    host: str
    port: int = Field(default=993, ge=1, le=65535)
    tls: str = "implicit"
    # A PEM file of CA certificates to trust instead of the system's, for a private CA.
    # Certificates and host names are always verified.
    ca_file: str = ""
    username: str
    # The variable holds the password, or a static OAuth2 access token when auth =
    # "xoauth2" (it expires within the hour). Not used with auth = "oauth2".
    password_env: str = ""
    # password | xoauth2 (a static token from password_env) | oauth2 (a grant from
    # `parity mailbox authorize`, refreshed before it expires: see docs/operations/mailboxes.md)
    auth: str = "password"
    # The [[oauth.accounts]] entry whose grant signs in (auth = "oauth2"); default: this
    # account's own name.
    oauth_account: str = ""
    # The support address this mailbox receives for, recorded on receipts (default: username).
    address: str = ""
    # Folder paths use "/" between levels; the server's own separator is used on the wire.
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    after_store: str = "move"
    archive_folder: str = "Parity/Archived"
    # First start: only messages that arrived on or after this date are taken (and later
    # ones always); older ones stay where they are. Unset: everything in the folder.
    backfill_since: date | None = None
    # Wait with IDLE where the server offers it; `poll_seconds` stays the safety net.
    idle: bool = True

    @field_validator("tls")
    @classmethod
    def _tls(cls, value: str) -> str:
        if value not in ("implicit", "starttls", "none"):
            raise ValueError('tls is "implicit", "starttls" or "none"')
        return value

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        if value not in ("password", "xoauth2", "oauth2"):
            raise ValueError('auth is "password", "xoauth2" or "oauth2"')
        return value

    @field_validator("after_store")
    @classmethod
    def _after(cls, value: str) -> str:
        if value not in ("move", "delete"):
            raise ValueError('after_store is "move" or "delete"')
        return value

    @model_validator(mode="after")
    def _archive_elsewhere(self) -> ImapAccount:
        if self.after_store == "move" and self.archive_folder in self.folders:
            raise ValueError("archive_folder must not be one of the folders it drains")
        return self

    @model_validator(mode="after")
    def _secret_named(self) -> ImapAccount:
        if self.auth != "oauth2" and not self.password_env:
            raise ValueError(f'password_env is required with auth = "{self.auth}"')
        return self

    @property
    def grant(self) -> str:
        """The OAuth account whose grant this mailbox signs in with (auth = "oauth2")."""
        return self.oauth_account or self.name

    @property
    def receipt_address(self) -> str:
        return (self.address or self.username).lower()


class ImapSettings(Strict):
    enabled: bool = False
    poll_seconds: int = Field(default=60, ge=1)
    # Messages fetched and stored per commit (also capped at 32 MiB per batch).
    batch_size: int = Field(default=100, ge=1, le=1000)
    # Stored messages are moved or deleted upstream in groups of this many, and at the end of
    # each round: one MOVE of 1,000 costs the server far less than ten of 100.
    archive_batch: int = Field(default=1000, ge=1, le=5000)
    # After an authentication or certificate failure, wait this long before trying again:
    # hammering a server with a bad password gets the account locked.
    auth_retry_seconds: int = Field(default=300, ge=1)
    # Cap of the exponential backoff (with jitter) between reconnects after network errors.
    max_backoff_seconds: int = Field(default=300, ge=1)
    # Status warns when the upstream mailbox uses this share of its quota.
    quota_warn_percent: int = Field(default=80, ge=1, le=100)
    # A standby instance (another one polls the folder) retries the folder's poller lock
    # this often: the takeover time after the active instance dies (plus
    # database.keepalive_s * 2 when its whole host vanished).
    standby_retry_seconds: int = Field(default=15, ge=1)
    accounts: list[ImapAccount] = Field(default_factory=list)

    @field_validator("accounts")
    @classmethod
    def _unique(cls, value: list[ImapAccount]) -> list[ImapAccount]:
        names = [a.name for a in value]
        if len(names) != len(set(names)):
            raise ValueError("account names must be unique")
        return value
