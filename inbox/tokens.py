"""OAuth2 grants in the store: encrypted at rest, one refresher at a time, status for operators.

A grant (refresh token, current access token and its expiry) lives in `oauth_tokens`, so it
survives restarts and every instance sharing the store sees the same one. Both tokens are
encrypted with Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under a key
derived from PARITY_SECRET_KEY: a database dump or backup alone gives nobody the mailbox.

Refreshing is guarded by a lease on the row (`refresh_owner`, `refresh_until`), taken with
one conditional UPDATE that works the same on SQLite and PostgreSQL: providers that rotate
refresh tokens invalidate the old one when it is used, so two instances refreshing at once
would leave one of them holding a dead token. The others wait and read what the holder
stored. The HTTP side (connectors/oauth.py) calls these; this module does no network I/O.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, or_, select, update

from inbox.db import read, write
from inbox.models import OAuthToken, utcnow
from inbox.secrets import Secret

KEY_ENV = "PARITY_SECRET_KEY"
# Keys used before a rotation: tokens written under them still decrypt, and are rewritten
# under the current key at their next refresh. Comma-separated.
OLD_KEYS_ENV = "PARITY_SECRET_KEY_OLD"
# Fixed context for HKDF: the same secret used elsewhere yields an unrelated key here.
_KDF_INFO = b"parity oauth token encryption v1"
MIN_KEY_CHARS = 32

OK = "ok"
AUTH_FAILED = "auth failed"


class KeyMissing(Exception):
    """PARITY_SECRET_KEY is unset or too short: tokens cannot be stored or read."""


class Undecryptable(Exception):
    """A stored token does not decrypt under any configured key (the key was changed)."""


def _fernet_key(secret: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(
        secret.encode()
    )
    return base64.urlsafe_b64encode(derived)


def key_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """Why tokens cannot be encrypted with this environment, or None."""
    env = os.environ if environ is None else environ
    value = env.get(KEY_ENV, "")
    if not value:
        return f"{KEY_ENV} is not set"
    if len(value) < MIN_KEY_CHARS:
        return f"{KEY_ENV} is shorter than {MIN_KEY_CHARS} characters"
    return None


class Cipher:
    """Encrypts with the current key; decrypts with it or any old one (MultiFernet)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        env = os.environ if environ is None else environ
        problem = key_problem(env)
        if problem is not None:
            raise KeyMissing(problem)
        Secret(env[KEY_ENV], KEY_ENV)  # remembered, so the logs mask it
        secrets = [env[KEY_ENV]] + [k for k in env.get(OLD_KEYS_ENV, "").split(",") if k]
        self._fernet = MultiFernet([Fernet(_fernet_key(s)) for s in secrets])

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def decrypt(self, value: str) -> Secret:
        from cryptography.fernet import InvalidToken

        try:
            return Secret(self._fernet.decrypt(value.encode("ascii")).decode())
        except (InvalidToken, ValueError) as exc:
            raise Undecryptable(
                f"a stored token does not decrypt: {KEY_ENV} changed? "
                f"(put the old one in {OLD_KEYS_ENV}, or authorize again)"
            ) from exc


@dataclass(frozen=True)
class Grant:
    """A grant as read from the store, tokens decrypted (as Secrets: never printed)."""

    account: str
    provider: str
    refresh_token: Secret
    access_token: Secret | None
    expires_at: datetime | None
    status: str
    reason: str | None
    refresh_owner: str | None
    refresh_until: datetime | None

    def fresh(self, now: datetime, margin: timedelta) -> bool:
        """Whether the access token may still be used for `margin` from `now`."""
        return (
            self.access_token is not None
            and self.expires_at is not None
            and self.expires_at - margin > now
        )


def load(engine: Engine, cipher: Cipher, account: str) -> Grant | None:
    with read(engine) as conn:
        row = conn.execute(select(OAuthToken).where(OAuthToken.account == account)).first()
    if row is None:
        return None
    return Grant(
        account=row.account,
        provider=row.provider,
        refresh_token=cipher.decrypt(row.refresh_token_enc),
        access_token=cipher.decrypt(row.access_token_enc) if row.access_token_enc else None,
        expires_at=row.access_expires_at,
        status=row.status,
        reason=row.reason,
        refresh_owner=row.refresh_owner,
        refresh_until=row.refresh_until,
    )


def save_authorized(
    engine: Engine,
    cipher: Cipher,
    *,
    account: str,
    provider: str,
    refresh_token: str,
    access_token: str | None,
    expires_at: datetime | None,
    scopes: str,
) -> None:
    """A new grant from `parity mailbox authorize`: replaces any old one, clears a failure."""
    now = utcnow()
    with write(engine) as conn:
        conn.execute(delete(OAuthToken).where(OAuthToken.account == account))
        conn.execute(
            insert(OAuthToken).values(
                account=account,
                provider=provider,
                refresh_token_enc=cipher.encrypt(refresh_token),
                access_token_enc=cipher.encrypt(access_token) if access_token else None,
                access_expires_at=expires_at,
                scopes=scopes,
                status=OK,
                reason=None,
                failed_at=None,
                authorized_at=now,
                refreshed_at=None,
                refreshes=0,
                refresh_owner=None,
                refresh_until=None,
                updated_at=now,
            )
        )


def take_lease(engine: Engine, account: str, owner: str, seconds: float) -> bool:
    """Become the one instance that refreshes `account` for `seconds`; False if another is.

    One conditional UPDATE: under SQLite's single writer and PostgreSQL's row lock alike,
    exactly one of several instances racing here sees a row count of 1.
    """
    now = utcnow()
    with write(engine) as conn:
        done = conn.execute(
            update(OAuthToken)
            .where(
                OAuthToken.account == account,
                or_(
                    OAuthToken.refresh_until.is_(None),
                    OAuthToken.refresh_until < now,
                    OAuthToken.refresh_owner == owner,
                ),
            )
            .values(refresh_owner=owner, refresh_until=now + timedelta(seconds=seconds))
        )
    return bool(done.rowcount == 1)


def release_lease(engine: Engine, account: str, owner: str) -> None:
    with write(engine) as conn:
        conn.execute(
            update(OAuthToken)
            .where(OAuthToken.account == account, OAuthToken.refresh_owner == owner)
            .values(refresh_owner=None, refresh_until=None)
        )


def save_refreshed(
    engine: Engine,
    cipher: Cipher,
    *,
    account: str,
    owner: str,
    access_token: str,
    expires_at: datetime,
    refresh_token: str | None,
) -> bool:
    """Store a refreshed access token (and a rotated refresh token), ending the lease.

    Only while `owner` holds the lease: a holder whose lease ran out meanwhile must not
    overwrite what the next holder stored. False when that happened.
    """
    now = utcnow()
    values: dict[str, Any] = {
        "access_token_enc": cipher.encrypt(access_token),
        "access_expires_at": expires_at,
        "refreshed_at": now,
        "refreshes": OAuthToken.refreshes + 1,
        "status": OK,
        "reason": None,
        "refresh_owner": None,
        "refresh_until": None,
        "updated_at": now,
    }
    if refresh_token:
        values["refresh_token_enc"] = cipher.encrypt(refresh_token)
    with write(engine) as conn:
        done = conn.execute(
            update(OAuthToken)
            .where(OAuthToken.account == account, OAuthToken.refresh_owner == owner)
            .values(**values)
        )
    return bool(done.rowcount == 1)


def mark_failed(conn: Connection, account: str, reason: str) -> bool:
    """Set the grant's status to "auth failed" with the provider's reason, in the caller's
    transaction. True only for the call that changed it from ok: that one alerts, so a
    failure seen by every instance and every retry still alerts once."""
    now = utcnow()
    done = conn.execute(
        update(OAuthToken)
        .where(OAuthToken.account == account, OAuthToken.status != AUTH_FAILED)
        .values(
            status=AUTH_FAILED,
            reason=reason,
            failed_at=now,
            access_token_enc=None,
            access_expires_at=None,
            refresh_owner=None,
            refresh_until=None,
            updated_at=now,
        )
    )
    return bool(done.rowcount == 1)


def statuses(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every stored grant's status, without its tokens: for doctor, status and /healthz."""
    with read(engine) as conn:
        rows = list(conn.execute(select(OAuthToken).order_by(OAuthToken.account)))
    return {
        r.account: {
            "provider": r.provider,
            "status": r.status,
            "reason": r.reason,
            "failed_at": _iso(r.failed_at),
            "authorized_at": _iso(r.authorized_at),
            "refreshed_at": _iso(r.refreshed_at),
            "access_expires_at": _iso(r.access_expires_at),
            "refreshes": r.refreshes,
        }
        for r in rows
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
