"""Accounts of the agent inbox: users and roles, passwords, API tokens, sessions, logins.

Passwords are hashed with Argon2id (memory-hard). API tokens and session secrets are long
random strings, so a plain SHA-256 of them is what is stored: a stolen table gives nobody a
usable credential, and looking one up stays a single indexed read per request.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from inbox import audit
from inbox.db import read, write
from inbox.models import ApiToken, LoginAttempt, User, WebSession, utcnow

Role = Literal["agent", "manager", "admin"]
ROLES: tuple[Role, ...] = ("agent", "manager", "admin")
_RANK = {"agent": 1, "manager": 2, "admin": 3}
MIN_PASSWORD_LENGTH = 10
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TOKEN_PREFIX = "parity_"  # noqa: S105 - a prefix that makes leaked tokens greppable
# A session is touched at most this often: a write per request would make every read a write.
_TOUCH_EVERY = timedelta(seconds=60)


class AccountError(ValueError):
    """A request about accounts that cannot be done; the message says why."""


class UnknownAccount(LookupError):
    """No user or token by that name or id (a 404, not a bad request)."""


def has_role(role: str, needed: str) -> bool:
    """Whether `role` includes the rights of `needed` (admin > manager > agent)."""
    return _RANK.get(role, 0) >= _RANK[needed]


def normalize_name(name: str) -> str:
    value = name.strip().lower()
    if not _NAME.match(value):
        raise AccountError(
            "a user name is 1-64 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise AccountError(f"the role is one of {', '.join(ROLES)}, not {role!r}")


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    return password


# --- passwords -----------------------------------------------------------------------------


@cache
def _hasher() -> PasswordHasher:
    # argon2-cffi's defaults are RFC 9106's second recommended profile: Argon2id, 64 MiB,
    # 3 passes, 4 lanes (about 0.1 s here).
    return PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def verify_password(encoded: str | None, password: str) -> bool:
    """Whether `password` matches; an unknown user costs the same time as a known one."""
    try:
        return _hasher().verify(encoded or _dummy_hash(), password) and encoded is not None
    except (VerificationError, InvalidHashError):
        return False


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- who is asking -------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """An authenticated user, and how: by session (needs CSRF tokens) or by bearer token."""

    id: int
    name: str
    role: Role
    via: Literal["session", "token", "cli"]
    session_id: str | None = None
    csrf_token: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this user."""
        return f"user:{self.name}"

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role, "via": self.via}


def _principal(row: Any, via: Literal["session", "token", "cli"], **extra: Any) -> Principal:
    return Principal(id=row.id, name=row.name, role=check_role(row.role), via=via, **extra)


# --- users ---------------------------------------------------------------------------------


def user_json(row: Any) -> dict[str, Any]:
    from inbox.queries import iso

    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "disabled": row.disabled,
        "created_at": iso(row.created_at),
        "last_login_at": iso(row.last_login_at),
    }


def add_user(
    engine: Engine, name: str, role: str, password: str, *, actor: str = "cli"
) -> dict[str, Any]:
    name, checked_role = normalize_name(name), check_role(role)
    encoded = hash_password(check_password(password))
    with write(engine) as conn:
        if conn.execute(select(User.id).where(User.name == name)).first() is not None:
            raise AccountError(f"there is already a user named {name!r}")
        user_id = conn.execute(
            insert(User)
            .values(
                name=name,
                role=checked_role,
                password_hash=encoded,
                disabled=False,
                created_at=utcnow(),
            )
            .returning(User.id)
        ).scalar_one()
        audit.append(
            conn, actor=actor, action="user.created", after={"user": name, "role": checked_role}
        )
        row = conn.execute(select(User).where(User.id == user_id)).one()
        return user_json(row)


def get_user(conn: Connection, name: str) -> Any:
    return conn.execute(select(User).where(User.name == name)).one_or_none()


def list_users(engine: Engine) -> list[dict[str, Any]]:
    with read(engine) as conn:
        return [user_json(r) for r in conn.execute(select(User).order_by(User.name))]


def update_user(
    engine: Engine,
    name: str,
    *,
    actor: str,
    role: str | None = None,
    disabled: bool | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """Change a user's role, disable or enable them, or set a new password."""
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = check_role(role)
    if disabled is not None:
        values["disabled"] = disabled
    if password is not None:
        values["password_hash"] = hash_password(check_password(password))
    with write(engine) as conn:
        row = get_user(conn, name)
        if row is None:
            raise UnknownAccount(f"no user named {name!r}")
        before = {"role": row.role, "disabled": row.disabled}
        if values:
            conn.execute(update(User).where(User.id == row.id).values(**values))
        if disabled or password is not None:
            # A disabled account or a changed password ends every session at once.
            conn.execute(delete(WebSession).where(WebSession.user_id == row.id))
        after = {
            "role": values.get("role", row.role),
            "disabled": values.get("disabled", row.disabled),
            "password_changed": password is not None,
        }
        audit.append(
            conn, actor=actor, action="user.updated", before={"user": name, **before}, after=after
        )
        return user_json(conn.execute(select(User).where(User.id == row.id)).one())


# --- API tokens ----------------------------------------------------------------------------


def create_token(engine: Engine, name: str, *, label: str = "", actor: str = "cli") -> str:
    """A new bearer token for user `name`; it is shown once and only its hash is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with write(engine) as conn:
        row = get_user(conn, name)
        if row is None:
            raise UnknownAccount(f"no user named {name!r}")
        if row.disabled:
            raise AccountError(f"user {name!r} is disabled")
        token_id = conn.execute(
            insert(ApiToken)
            .values(user_id=row.id, token_hash=digest(token), label=label, created_at=utcnow())
            .returning(ApiToken.id)
        ).scalar_one()
        audit.append(
            conn,
            actor=actor,
            action="token.created",
            after={"user": name, "token_id": token_id, "label": label},
        )
    return token


def list_tokens(engine: Engine, user_id: int) -> list[dict[str, Any]]:
    from inbox.queries import iso

    with read(engine) as conn:
        rows = conn.execute(
            select(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.id)
        )
        return [
            {
                "id": r.id,
                "label": r.label,
                "created_at": iso(r.created_at),
                "last_used_at": iso(r.last_used_at),
            }
            for r in rows
        ]


def revoke_token(engine: Engine, token_id: int, principal: Principal) -> None:
    with write(engine) as conn:
        row = conn.execute(
            select(ApiToken.user_id, ApiToken.revoked_at).where(ApiToken.id == token_id)
        ).one_or_none()
        if row is None or row.revoked_at is not None:
            raise UnknownAccount(f"no token {token_id}")
        if row.user_id != principal.id and not has_role(principal.role, "admin"):
            raise PermissionError("only an admin may revoke another user's token")
        conn.execute(update(ApiToken).where(ApiToken.id == token_id).values(revoked_at=utcnow()))
        audit.append(
            conn, actor=principal.actor, action="token.revoked", after={"token_id": token_id}
        )


def principal_for_token(engine: Engine, token: str) -> Principal | None:
    now = utcnow()
    with read(engine) as conn:
        row = conn.execute(
            select(
                User.id, User.name, User.role, ApiToken.id.label("token_id"), ApiToken.last_used_at
            )
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(
                ApiToken.token_hash == digest(token),
                ApiToken.revoked_at.is_(None),
                User.disabled.is_(False),
            )
        ).one_or_none()
    if row is None:
        return None
    if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
        with write(engine) as conn:
            conn.execute(
                update(ApiToken).where(ApiToken.id == row.token_id).values(last_used_at=now)
            )
    return _principal(row, "token")


# --- sessions and logins -------------------------------------------------------------------


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(hours=8)
    lifetime: timedelta = timedelta(hours=72)


@dataclass(frozen=True)
class LoginLimits:
    """The login throttle. Failures are counted per (account, client address) and per client
    address, never per account alone: a stranger's failures slow only the stranger's address,
    so they cannot lock a person out of their own account from elsewhere.

    Below its free allowance a counter costs nothing; from there each failure doubles the wait
    before the next try from that address (delay, 2 x delay, 4 x delay, ... up to max_delay),
    measured from the latest failure. Failures older than `window` are forgotten.
    """

    # Free failures per (account, address) and per address.
    per_account: int = 5
    per_ip: int = 20
    window: timedelta = timedelta(minutes=15)
    delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class LoginResult:
    principal: Principal | None = None
    # The cookie's value; only its hash is stored.
    session_secret: str | None = None
    # Set when the login was refused by the rate limit: seconds until it may be tried again.
    retry_after: int | None = None


def address_key(ip: str) -> str:
    """The client address as the throttle counts it: an IPv6 client is its /64 (one customer
    line holds a whole /64, so counting single addresses would give it 2^64 fresh counters);
    an IPv4-mapped IPv6 address is the IPv4 address. Anything unparsable is kept as it is."""
    try:
        address = ipaddress.ip_address(ip.strip().split("%", 1)[0])
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def throttle_delay(failures: int, free: int, limits: LoginLimits) -> timedelta | None:
    """How long after the latest of `failures` the next try must wait (None: not at all)."""
    if failures < free:
        return None
    # Capped before the power is taken: a long flood must not build a huge integer.
    doublings = min(failures - free, 40)
    wait: timedelta = min(limits.delay * (2**doublings), limits.max_delay)
    return wait


def login_blocked(
    conn: Connection, name: str, ip: str, limits: LoginLimits, now: datetime
) -> int | None:
    """Seconds until a login for `name` from `ip` (an address_key) may be tried again, or
    None if it may now. The name alone never blocks: see LoginLimits."""
    since = now - limits.window
    waits: list[int] = []
    for condition, free in (
        ((LoginAttempt.name == name) & (LoginAttempt.ip == ip), limits.per_account),
        (LoginAttempt.ip == ip, limits.per_ip),
    ):
        count, latest = conn.execute(
            select(func.count(), func.max(LoginAttempt.at)).where(
                condition, LoginAttempt.at > since
            )
        ).one()
        wait = throttle_delay(count, free, limits)
        if wait is None:
            continue
        latest = _aware(latest) if isinstance(latest, datetime) else now
        left = (latest + wait - now).total_seconds()
        if left > 0:
            waits.append(max(1, math.ceil(left)))
    return max(waits) if waits else None


def _aware(at: datetime) -> datetime:
    # A naive time from the store is UTC (the column type says so; this guards a raw driver).
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def login(
    engine: Engine,
    name: str,
    password: str,
    *,
    ip: str,
    user_agent: str = "",
    limits: LoginLimits = LoginLimits(),
    policy: SessionPolicy = SessionPolicy(),
    now_fn: Callable[[], datetime] = utcnow,
) -> LoginResult:
    """Check a password under the rate limit and open a session. Blocking (Argon2): thread it."""
    now = now_fn()
    name = name.strip().lower()[:64]
    ip = ip[:64]
    counted = address_key(ip)
    with read(engine) as conn:
        wait = login_blocked(conn, name, counted, limits, now)
        user = get_user(conn, name) if name else None
        conn.rollback()
    if wait is not None:
        # Refused before the password is even checked: a guesser learns nothing more.
        return LoginResult(retry_after=wait)
    encoded = user.password_hash if user is not None and not user.disabled else None
    ok = verify_password(encoded, password)
    if not ok or user is None:
        with write(engine) as conn:
            conn.execute(insert(LoginAttempt).values(at=now, name=name, ip=counted))
            conn.execute(delete(LoginAttempt).where(LoginAttempt.at < now - timedelta(days=1)))
        return LoginResult()
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with write(engine) as conn:
        values: dict[str, Any] = {"last_login_at": now}
        if _hasher().check_needs_rehash(user.password_hash):
            values["password_hash"] = hash_password(password)
        conn.execute(update(User).where(User.id == user.id).values(**values))
        # Only this address's failures for this account: a success elsewhere must not hand a
        # guesser fresh tries.
        conn.execute(
            delete(LoginAttempt).where(LoginAttempt.name == name, LoginAttempt.ip == counted)
        )
        conn.execute(delete(WebSession).where(WebSession.expires_at < now))
        conn.execute(
            insert(WebSession).values(
                id=digest(secret),
                user_id=user.id,
                csrf_token=csrf,
                created_at=now,
                last_seen_at=now,
                expires_at=now + policy.lifetime,
                ip=ip,
                user_agent=user_agent[:250],
            )
        )
        audit.append(
            conn,
            actor=f"user:{user.name}",
            action="user.login",
            after={"ip": ip, "via": "password"},
        )
    principal = _principal(user, "session", session_id=digest(secret), csrf_token=csrf)
    return LoginResult(principal=principal, session_secret=secret)


def principal_for_session(
    engine: Engine, secret: str, policy: SessionPolicy = SessionPolicy()
) -> Principal | None:
    now = utcnow()
    session_id = digest(secret)
    with read(engine) as conn:
        row = conn.execute(
            select(
                User.id,
                User.name,
                User.role,
                WebSession.csrf_token,
                WebSession.last_seen_at,
                WebSession.expires_at,
            )
            .join(WebSession, WebSession.user_id == User.id)
            .where(WebSession.id == session_id, User.disabled.is_(False))
        ).one_or_none()
    if row is None or row.expires_at <= now or now - row.last_seen_at > policy.idle:
        return None
    if now - row.last_seen_at > _TOUCH_EVERY:
        with write(engine) as conn:
            conn.execute(
                update(WebSession).where(WebSession.id == session_id).values(last_seen_at=now)
            )
    return _principal(row, "session", session_id=session_id, csrf_token=row.csrf_token)


def logout(engine: Engine, principal: Principal) -> None:
    with write(engine) as conn:
        if principal.session_id is not None:
            conn.execute(delete(WebSession).where(WebSession.id == principal.session_id))
        audit.append(
            conn, actor=principal.actor, action="user.logout", after={"via": principal.via}
        )
