"""The IMAP connector: drains support mailboxes into intake, and archives only what is stored.

One poller per account and folder, each with its own connection, runs imapclient calls on a
worker thread. A round fetches new messages with BODY.PEEK[] (nothing is marked seen),
stores them together with the folder's checkpoint (UIDVALIDITY and last UID) in one
transaction, and only after that commit moves them to the archive folder or deletes them.
A crash at any point leaves each message either not stored (it is fetched again) or stored
and not yet archived (the next round archives it), so the upstream mailbox drains without
a message lost, doubled, or archived before it was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from imapclient import DELETED, IMAPClient, SocketTimeout
from imapclient.exceptions import CapabilityError, LoginError
from sqlalchemy import Engine, select

from connectors import oauth, poller
from connectors.base import ConnectorHealth
from connectors.imap.settings import ImapAccount, ImapSettings
from connectors.poller import Poller, Retry, iso, next_step, sleep_or_stop
from inbox import tokens
from inbox.db import StorageUnavailable, read
from inbox.models import Intake, utcnow
from inbox.outbox import backoff
from inbox.secrets import Secret, from_env
from normalizer.intake import CheckpointUpdate, RawInput, load_checkpoint

log = logging.getLogger(__name__)

CONNECTOR = "imap"
CHANNEL = "email"
# RFC 2177: a server may drop a client idle for 30 minutes, so IDLE is renewed before that.
IDLE_RENEW_S = 25 * 60
# How often an IDLE wait looks up from the socket to notice that the daemon is stopping.
IDLE_TICK_S = 1.0
# One FETCH never holds more than this in memory (and one commit never stores more).
MAX_BATCH_BYTES = 32 * 1024 * 1024
# UIDs per MOVE, COPY, STORE or EXPUNGE command line (about 6 KiB of digits and commas).
UIDS_PER_COMMAND = 1000
CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 120.0

# Account status words, worst first: the account shows the worst state of its folders.
STATUS_ORDER = (
    "auth failed",
    "tls failed",
    "no credentials",
    "folder missing",
    "storage unavailable",
    "reconnecting",
    "connecting",
    "ok",
)


# --- pure helpers ----------------------------------------------------------------------------


def source_key(account: str, folder: str, uidvalidity: int, uid: int) -> str:
    """The intake key of one message in one folder: the same message re-read is recognised."""
    return f"imap:{account}:{folder}:{uidvalidity}:{uid}"


def checkpoint_key(account: str, folder: str) -> str:
    return f"{account}:{folder}"


def split_by_checkpoint(found: Iterable[int], last_uid: int) -> tuple[list[int], list[int]]:
    """(above, at_or_below) the checkpoint, each sorted.

    `UID n:*` means n to the highest UID in use *in either order* (RFC 3501, 6.4.8), so the
    search always answers with the newest message even when it is at or below n - 1: the
    filter has to be ours.
    """
    uids = sorted(set(found))
    return [u for u in uids if u > last_uid], [u for u in uids if u <= last_uid]


def size_batches(
    sizes: Sequence[tuple[int, int]], max_count: int, max_bytes: int
) -> list[list[int]]:
    """Group (uid, size) in order into batches of at most `max_count` and about `max_bytes`.

    A message larger than `max_bytes` gets a batch of its own rather than being refused.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for uid, size in sizes:
        if current and (len(current) >= max_count or current_bytes + size > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(uid)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def server_path(path: str, delimiter: str | None) -> str:
    """A "/"-separated folder path from settings, spelled with the server's own delimiter.

    Dovecot with Maildir++ uses "." and refuses "/" in names; Gmail and Cyrus differ again.
    """
    if not delimiter or delimiter == "/":
        return path
    return delimiter.join(path.split("/"))


# Response codes (RFC 5530) that mean "not now" rather than "these credentials are wrong".
_TRANSIENT_LOGIN_CODES = ("[UNAVAILABLE]", "[SERVERBUG]", "[INUSE]", "[LIMIT]")


def is_credential_failure(message: str) -> bool:
    """Whether a failed login means the credentials were refused (retry slowly, alert)."""
    upper = message.upper()
    return not any(code in upper for code in _TRANSIENT_LOGIN_CODES)


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: half the ceiling fixed, half random.

    The fixed half keeps retries from hammering; the random half keeps many pollers that
    lost the same server from reconnecting in lockstep. The outbox's curve, the one every
    poller backs off on (`attempt` 0 is the first retry here).
    """
    return backoff(attempt + 1, base, cap, rand)


def quota_status(quotas: Iterable[Any], warn_percent: int) -> dict[str, Any] | None:
    """GETQUOTAROOT answers as status: each resource's usage and limit, and a warning flag.

    STORAGE is in KiB (RFC 2087), MESSAGE in messages. The percentage is the fullest
    resource's, since whichever fills first makes the server bounce mail.
    """
    resources: dict[str, dict[str, Any]] = {}
    root = ""
    for quota in quotas:
        root = root or str(quota.quota_root)
        usage, limit = int(quota.usage), int(quota.limit)
        percent = round(100.0 * usage / limit, 1) if limit > 0 else 0.0
        resources[str(quota.resource).upper()] = {
            "usage": usage,
            "limit": limit,
            "percent": percent,
        }
    if not resources:
        return None
    fullest = max(r["percent"] for r in resources.values())
    return {
        "root": root,
        "resources": resources,
        "percent": fullest,
        "warn_percent": warn_percent,
        "warning": fullest >= warn_percent,
    }


def idle_outcome(responses: Iterable[tuple[Any, ...]]) -> str:
    """What IDLE responses ask of us: "bye" (the server is leaving), "new" (mail), or ""."""
    outcome = ""
    for response in responses:
        if response and response[0] == b"BYE":
            return "bye"
        if len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT"):
            outcome = "new"
    return outcome


def server_text(error: BaseException) -> str:
    """An imapclient error's text without the b'...' wrapping of the server's bytes."""
    text = str(error)
    if len(text) >= 3 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        return text[2:-1]
    return text


def received_time(value: Any) -> datetime:
    """INTERNALDATE (when the mailbox received the message) in UTC, or now without one."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return utcnow()


# --- errors ----------------------------------------------------------------------------------


class AuthRefused(Exception):
    """The server refused these credentials: retry slowly, never in a loop."""


class TlsRefused(Exception):
    """The server's certificate did not verify, or STARTTLS is missing: never go plain."""


class FolderMissing(Exception):
    """A configured folder cannot be selected."""


class ConnectionLost(Exception):
    """The server went away (BYE, EOF) while we waited."""


# Errors after which a new connection may well work.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # includes socket.timeout, ConnectionResetError and ssl.SSLError
    imaplib.IMAP4.error,  # includes imapclient's IMAPClientError and abort
    ConnectionLost,
    EOFError,
)


# --- one connection --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    uid: int
    raw: bytes
    internal_date: datetime


class Session:
    """One blocking IMAP connection; every method runs on a worker thread."""

    def __init__(self, account: ImapAccount, secret: Secret) -> None:
        self.account = account
        self.secret = secret
        self.client: IMAPClient | None = None
        self.capabilities: frozenset[str] = frozenset()
        self.delimiter: str | None = None
        self.idling = False

    def tls_context(self) -> ssl.SSLContext:
        # The system's CAs, or the configured file; hostname checks stay on either way.
        return ssl.create_default_context(cafile=self.account.ca_file or None)

    def open(self) -> None:
        account = self.account
        timeout = SocketTimeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
        try:
            if account.tls == "implicit":
                client = IMAPClient(
                    account.host,
                    account.port,
                    ssl=True,
                    ssl_context=self.tls_context(),
                    timeout=timeout,
                )
            else:
                client = IMAPClient(account.host, account.port, ssl=False, timeout=timeout)
                if account.tls == "starttls":
                    self.client = client
                    try:
                        client.starttls(self.tls_context())
                    except CapabilityError as exc:
                        raise TlsRefused("the server does not offer STARTTLS") from exc
        except ssl.SSLCertVerificationError as exc:
            raise TlsRefused(f"certificate not trusted: {exc.verify_message or exc}") from exc
        self.client = client
        client.normalise_times = False  # INTERNALDATE with its zone, turned into UTC by us
        try:
            if account.auth in ("xoauth2", "oauth2"):
                client.oauth2_login(account.username, self.secret.reveal())
            else:
                client.login(account.username, self.secret.reveal())
        except LoginError as exc:
            text = server_text(exc)
            if is_credential_failure(text):
                raise AuthRefused(text) from exc
            raise
        self.capabilities = frozenset(
            c.decode("ascii", "replace").upper() if isinstance(c, bytes) else str(c).upper()
            for c in client.capabilities()
        )
        listing = client.list_folders("", "")
        delimiter = listing[0][1] if listing else None
        self.delimiter = delimiter.decode() if isinstance(delimiter, bytes) else delimiter

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def imap(self) -> IMAPClient:
        if self.client is None:
            raise ConnectionLost("not connected")
        return self.client

    def path(self, folder: str) -> str:
        return server_path(folder, self.delimiter)

    def select(self, folder: str) -> tuple[int, int]:
        """Select `folder`; returns (UIDVALIDITY, EXISTS)."""
        name = self.path(folder)
        try:
            info = self.imap.select_folder(name)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            raise FolderMissing(f"cannot select {name!r}: {exc}") from exc
        return int(info[b"UIDVALIDITY"]), int(info.get(b"EXISTS", 0))

    def ensure_folder(self, folder: str) -> None:
        name = self.path(folder)
        if self.imap.folder_exists(name):
            return
        try:
            self.imap.create_folder(name)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            # Another poller of this account may have created it a moment ago.
            if not self.imap.folder_exists(name):
                raise

    def search(self, uid_range: str, since: date | None) -> list[int]:
        criteria: list[Any] = ["UID", uid_range]
        if since is not None:
            criteria += ["SINCE", since]
        return [int(u) for u in self.imap.search(criteria)]

    def sizes(self, uids: Sequence[int]) -> list[tuple[int, int]]:
        found: dict[int, int] = {}
        for part in chunks(uids, 1000):
            for uid, data in self.imap.fetch(part, ["RFC822.SIZE"]).items():
                found[int(uid)] = int(data.get(b"RFC822.SIZE", 0))
        # A message expunged by someone else since the search is simply absent.
        return [(uid, found[uid]) for uid in uids if uid in found]

    def fetch(self, uids: Sequence[int]) -> list[Fetched]:
        # PEEK: \Seen is left alone, so a message we never stored still looks unread.
        data = self.imap.fetch(list(uids), ["BODY.PEEK[]", "INTERNALDATE"])
        fetched: list[Fetched] = []
        for uid in uids:
            item = data.get(uid)
            if item is None:
                continue
            raw = item.get(b"BODY[]")
            if raw is None:
                continue
            fetched.append(Fetched(uid, bytes(raw), received_time(item.get(b"INTERNALDATE"))))
        return fetched

    def archive(self, uids: Sequence[int], after_store: str, archive_folder: str) -> None:
        """Move stored messages to the archive folder, or delete them. Never before storing."""
        for part in chunks(sorted(uids), UIDS_PER_COMMAND):
            if after_store == "move" and self.has("MOVE"):
                self.imap.move(part, self.path(archive_folder))
                continue
            if after_store == "move":
                self.imap.copy(part, self.path(archive_folder))
            self.imap.add_flags(part, [DELETED], silent=True)
            if self.has("UIDPLUS"):
                self.imap.uid_expunge(part)
            else:
                # Without UIDPLUS only a plain EXPUNGE exists; it also removes whatever
                # else carries \Deleted in this folder, which is what \Deleted asks for.
                self.imap.expunge()

    def quota(self, folder: str) -> list[Any]:
        _roots, quotas = self.imap.get_quota_root(self.path(folder))
        return list(quotas)

    def idle_start(self) -> None:
        self.imap.idle()
        self.idling = True

    def idle_wait(self, timeout: float) -> tuple[list[tuple[Any, ...]], bool]:
        """IDLE responses within `timeout`, and whether the wait ended early with none.

        imapclient's idle_check swallows EOF and returns early and empty; a readable
        socket without a whole line (a TLS record, a partial line) looks the same once.
        """
        started = time.monotonic()
        responses = list(self.imap.idle_check(timeout=timeout))
        return responses, not responses and time.monotonic() - started < timeout / 2

    def idle_stop(self) -> None:
        if self.idling:
            self.idling = False
            self.imap.idle_done()

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if self.idling:
                self.idling = False
                client.idle_done()
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()


# --- state shown in status -------------------------------------------------------------------


@dataclass
class FolderState:
    status: str = "connecting"
    uidvalidity: int | None = None
    last_uid: int = 0
    backlog: int | None = None
    stored: int = 0
    archived: int = 0
    waiting: str = ""
    last_round_at: datetime | None = None
    last_error: str | None = None
    backfill: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "uidvalidity": self.uidvalidity,
            "last_uid": self.last_uid,
            "backlog": self.backlog,
            "stored": self.stored,
            "archived": self.archived,
            "waiting": self.waiting,
            "last_round_at": iso(self.last_round_at),
            "last_error": self.last_error,
            "backfill": dict(self.backfill) if self.backfill else None,
        }


@dataclass
class AccountState:
    address: str
    folders: dict[str, FolderState] = field(default_factory=dict)
    last_auth_error: str | None = None
    last_auth_error_at: datetime | None = None
    auth_failures: int = 0
    connects: int = 0
    reconnects: int = 0
    next_retry_at: datetime | None = None
    quota: dict[str, Any] | None = None
    capabilities: dict[str, bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        states = [f.status for f in self.folders.values()] or ["connecting"]
        return min(states, key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else 99)

    def as_dict(self) -> dict[str, Any]:
        backlogs = [f.backlog for f in self.folders.values() if f.backlog is not None]
        return {
            "status": self.status,
            "address": self.address,
            "backlog": sum(backlogs) if backlogs else None,
            "quota": self.quota,
            "warnings": list(self.warnings),
            "last_auth_error": self.last_auth_error,
            "last_auth_error_at": iso(self.last_auth_error_at),
            "auth_failures": self.auth_failures,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "next_retry_at": iso(self.next_retry_at),
            "capabilities": dict(self.capabilities),
            "folders": {name: f.as_dict() for name, f in self.folders.items()},
        }


def imap_core(pollers: Sequence[Poller]) -> dict[str, Any]:
    """The poller base's common fields for the connector as a whole: it polls where any of
    its folder pollers does, and stands by where all of them do. IMAP never pauses."""
    states = {p.state for p in pollers}
    state = "running" if "running" in states else "standby" if states == {"standby"} else "starting"
    reason = pollers[0].reason if state == "standby" else None
    return {"state": state, "reason": reason, "paused_until": None}


def _status_word(exc: BaseException) -> str:
    """The folder's status after a failed connection: IMAP's own words, worst first."""
    if isinstance(exc, AuthRefused):
        return "auth failed"
    if isinstance(exc, TlsRefused):
        return "tls failed"
    if isinstance(exc, FolderMissing):
        return "folder missing"
    if isinstance(exc, StorageUnavailable):
        return "storage unavailable"
    return "reconnecting"


# --- the connector ---------------------------------------------------------------------------


class ImapConnector:
    """Every configured account and folder, polled (or IDLEd) at once."""

    name = CONNECTOR

    def __init__(
        self,
        settings: ImapSettings,
        engine: Engine,
        *,
        on_stored: Callable[[int], None] | None = None,
        environ: dict[str, str] | None = None,
        token_sources: Mapping[str, oauth.TokenSource] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.on_stored = on_stored
        self.environ = environ
        # auth = "oauth2" accounts' grants, by OAuth account name ([oauth] accounts).
        self.token_sources = dict(token_sources or {})
        self.health = ConnectorHealth()
        self.accounts: dict[str, AccountState] = {}
        self.pollers: list[FolderPoller] = []
        for account in settings.accounts:
            if account.tls == "none" and account.host not in ("127.0.0.1", "::1", "localhost"):
                log.warning(
                    'imap %s: tls = "none" sends the password to %s unencrypted',
                    account.name,
                    account.host,
                )
            state = AccountState(address=account.receipt_address)
            self.accounts[account.name] = state
            for index, folder in enumerate(account.folders):
                state.folders[folder] = FolderState()
                self.pollers.append(FolderPoller(self, account, folder, reports_quota=index == 0))
        self.publish()

    def secret(self, account: ImapAccount) -> Secret | None:
        return from_env(account.password_env, self.environ)

    def publish(self) -> None:
        """Replace the status snapshot; the daemon reads it from another thread, so the
        published dict is built anew and never changed afterwards."""
        accounts = {name: state.as_dict() for name, state in self.accounts.items()}
        backlogs = [a["backlog"] for a in accounts.values() if a["backlog"] is not None]
        self.health.details = {
            **imap_core(self.pollers),
            "backlog": sum(backlogs) if backlogs else None,
            "accounts": accounts,
        }

    async def run(self, stop: asyncio.Event) -> None:
        if not self.pollers:
            await stop.wait()
            return
        # Pollers handle their own errors; should one escape anyway, the group cancels the
        # rest, so the daemon's restart never runs two pollers on one folder.
        async with asyncio.TaskGroup() as group:
            for poller in self.pollers:
                group.create_task(poller.run(stop), name=f"imap:{poller.where}")


class FolderPoller(Poller):
    """Drains one folder of one account: connect, then rounds until told to stop.

    One poller per folder across every instance sharing the store (the poller base holds
    its lock): a second one would fetch everything twice and race the first one's archive
    moves. Refused credentials are retried slowly rather than disabling the folder: an
    admin fixes a mailbox password without restarting Parity.
    """

    name = CONNECTOR
    standby_note = "another instance polls this folder"

    def __init__(
        self, connector: ImapConnector, account: ImapAccount, folder: str, *, reports_quota: bool
    ) -> None:
        self.where = f"{account.name}/{folder}"
        super().__init__(
            connector.engine,
            f"imap:{account.name}:{folder}",
            standby_retry_seconds=connector.settings.standby_retry_seconds,
            label=f"imap {self.where}",
        )
        self.health = connector.health  # the connector's one health record, all folders'
        self.connector = connector
        self.account = account
        self.folder = folder
        self.reports_quota = reports_quota
        self.settings = connector.settings
        self.account_state = connector.accounts[account.name]
        self.folder_state = self.account_state.folders[folder]
        self.key = checkpoint_key(account.name, folder)
        self.retry = Retry(
            base_s=1.0,
            cap_s=float(self.settings.max_backoff_seconds),
            auth_retry_s=float(self.settings.auth_retry_seconds),
        )
        self.last_uid = 0
        self.uidvalidity = 0
        self.backfilling = False
        self.rounds_ok = 0
        self.attempted = False

    # --- the poller base's hooks --------------------------------------------------------------

    def publish(self) -> None:
        # The folder's state lives in the connector's account snapshot, published as a whole.
        self.connector.publish()

    def standing_by(self) -> None:
        self.folder_state.status = "standby"
        self.folder_state.waiting = self.standby_note

    def took_over(self) -> None:
        # Taken over from an instance that stopped or died: start afresh.
        self.folder_state.status, self.folder_state.waiting = "connecting", ""

    def classify(self, exc: BaseException) -> poller.Verdict:
        """A refused login or certificate is retried slowly; anything else reconnects."""
        if isinstance(exc, AuthRefused | TlsRefused):
            return poller.AuthFailed(str(exc))
        if isinstance(exc, FolderMissing | StorageUnavailable):
            return poller.Transient(str(exc))
        return poller.Transient(f"{type(exc).__name__}: {exc}")

    # --- connection lifecycle ---------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        failures = 0
        # An OAuth2 access token the server refused before its expiry (revoked, or the
        # server's clock ahead): asked for a new one at once, once, before waiting.
        refused: Secret | None = None
        while not stop.is_set():
            delay = 0.0
            secret: Secret | None
            if self.account.auth == "oauth2":
                secret, problem, delay = await self._oauth_token(refused, failures)
                if problem is not None:
                    failures += problem == "reconnecting"
            else:
                secret = self.connector.secret(self.account)
            if secret is None and self.account.auth != "oauth2":
                delay = float(self.settings.auth_retry_seconds)
                self._failed("no credentials", f"{self.account.password_env} is not set", delay)
            elif secret is not None:
                session = Session(self.account, secret)
                self.rounds_ok = 0
                if self.attempted:
                    self.account_state.reconnects += 1
                self.attempted = True
                try:
                    await asyncio.to_thread(session.open)
                    self.account_state.connects += 1
                    await self._serve(session, stop)
                except Exception as exc:
                    if self.rounds_ok:
                        failures = 0  # it worked for a while: back off from the start again
                    if (
                        self.account.auth == "oauth2"
                        and isinstance(exc, AuthRefused)
                        and refused is None
                    ):
                        refused = secret
                        log.info("%s: token refused by the server: refreshing", self.label)
                        continue
                    status = _status_word(exc)
                    if status == "reconnecting" and not isinstance(exc, TRANSIENT):
                        # A bug here must not stop the other folders: logged, retried.
                        log.exception("%s: unexpected error", self.label)
                    verdict = self.classify(exc)
                    if not isinstance(verdict, poller.AuthFailed):
                        failures += 1
                    step = next_step(verdict, max(failures, 1), self.retry, time.time())
                    delay = step.wait_s or 0.0
                    self._failed(status, step.reason, delay)
                else:
                    refused = None
                finally:
                    await asyncio.to_thread(session.close)
                if self.rounds_ok:
                    refused = None
            if stop.is_set():
                break
            log.info("%s: next attempt in %.1f s", self.label, delay)
            await sleep_or_stop(delay, stop)
        self.folder_state.waiting = ""
        self.connector.publish()

    def _set_status(self, status: str) -> None:
        self.folder_state.status = status
        self.connector.publish()

    def _failed(self, status: str, error: str, retry_in: float) -> None:
        """Record a failure and when the next attempt comes, in one published snapshot."""
        if status == "auth failed":
            self.account_state.auth_failures += 1
            self.account_state.last_auth_error = error
            self.account_state.last_auth_error_at = utcnow()
        self.folder_state.status = status
        self.folder_state.last_error = error
        self.account_state.next_retry_at = utcnow() + timedelta(seconds=retry_in)
        self.connector.health.error(f"{self.where}: {status}: {error}")
        log.warning("%s: %s: %s", self.label, status, error)
        self.connector.publish()

    # --- a connected session ----------------------------------------------------------------

    async def _oauth_token(
        self, refused: Secret | None, failures: int
    ) -> tuple[Secret | None, str | None, float]:
        """(token, problem status, wait) for an auth = "oauth2" account.

        A dead grant is "auth failed" with the provider's reason, retried slowly (someone
        may authorize again meanwhile); a provider that cannot be asked now is retried on
        the reconnect curve.
        """
        source = self.connector.token_sources.get(self.account.grant)
        if source is None:
            delay = float(self.settings.auth_retry_seconds)
            self._failed(
                "no credentials", f"no [[oauth.accounts]] entry named {self.account.grant!r}", delay
            )
            return None, "no credentials", delay
        try:
            token = await asyncio.to_thread(source.token, refused=refused)
        except oauth.AuthFailed as exc:
            delay = float(self.settings.auth_retry_seconds)
            self._failed("auth failed", str(exc), delay)
            return None, "auth failed", delay
        except (tokens.KeyMissing, tokens.Undecryptable) as exc:
            delay = float(self.settings.auth_retry_seconds)
            self._failed("no credentials", str(exc), delay)
            return None, "no credentials", delay
        except Exception as exc:  # the provider or the store cannot answer now
            delay = backoff_delay(failures, 1.0, float(self.settings.max_backoff_seconds))
            self._failed("reconnecting", f"token refresh: {type(exc).__name__}: {exc}", delay)
            return None, "reconnecting", delay
        return token, None, 0.0

    async def _serve(self, session: Session, stop: asyncio.Event) -> None:
        self.account_state.next_retry_at = None
        self.account_state.capabilities = {
            "idle": session.has("IDLE"),
            "move": session.has("MOVE"),
            "uidplus": session.has("UIDPLUS"),
            "quota": session.has("QUOTA"),
        }
        if self.account.after_store == "move":
            await asyncio.to_thread(session.ensure_folder, self.account.archive_folder)
        uidvalidity, _exists = await asyncio.to_thread(session.select, self.folder)
        await self._resume(uidvalidity)
        self._set_status("ok")
        while not stop.is_set():
            while not stop.is_set() and await self._round(session, stop):
                pass  # mail arrived during the round: IDLE would not report it, so look again
            if self.reports_quota and session.has("QUOTA"):
                await self._quota(session)
            self.rounds_ok += 1
            self.folder_state.last_round_at = utcnow()
            self.connector.health.success()
            self.connector.publish()
            if stop.is_set():
                break
            if self.account.idle and session.has("IDLE"):
                await self._idle(session, stop)
            else:
                self.folder_state.waiting = "poll"
                self.connector.publish()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.poll_seconds)

    async def _resume(self, uidvalidity: int) -> None:
        """Pick up the checkpoint; a new UIDVALIDITY means the folder is read again."""
        saved = await asyncio.to_thread(load_checkpoint, self.connector.engine, CONNECTOR, self.key)
        self.uidvalidity = uidvalidity
        self.folder_state.uidvalidity = uidvalidity
        if saved is None:
            self.last_uid = 0
            self.backfilling = True
        elif int(saved.get("uidvalidity", 0)) != uidvalidity:
            # UIDs of the old folder mean nothing now. Everything is read again under new
            # source keys; the normalizer's dedup key keeps messages seen before from doubling.
            log.warning(
                "%s: UIDVALIDITY changed from %s to %s: reading the folder again",
                self.label,
                saved.get("uidvalidity"),
                uidvalidity,
            )
            self.last_uid = 0
            self.backfilling = not saved.get("backfill_complete", True)
            await asyncio.to_thread(self._save_checkpoint, [])
        else:
            self.last_uid = int(saved.get("last_uid", 0))
            self.backfilling = not saved.get("backfill_complete", True)
        self.folder_state.last_uid = self.last_uid

    def _save_checkpoint(self, items: Sequence[RawInput], last_uid: int | None = None) -> None:
        """Store `items` and the checkpoint that covers them in one transaction."""
        value = {
            "uidvalidity": self.uidvalidity,
            "last_uid": self.last_uid if last_uid is None else last_uid,
            "backfill_complete": not self.backfilling,
        }
        self.commit(items, [CheckpointUpdate(CONNECTOR, self.key, value)])

    def _stored_uids(self, uids: Sequence[int]) -> set[int]:
        """Which of these UIDs (of the current UIDVALIDITY) intake already holds."""
        keys = {source_key(self.account.name, self.folder, self.uidvalidity, u): u for u in uids}
        found: set[int] = set()
        names = list(keys)
        with read(self.connector.engine) as conn:
            for start in range(0, len(names), 500):
                rows = conn.execute(
                    select(Intake.source_key).where(
                        Intake.channel == CHANNEL, Intake.source_key.in_(names[start : start + 500])
                    )
                ).scalars()
                found.update(keys[k] for k in rows)
        return found

    async def _round(self, session: Session, stop: asyncio.Event) -> bool:
        """Store, then archive, what waits in the folder. True when that got anywhere."""
        since = self.account.backfill_since
        found = await asyncio.to_thread(session.search, f"{self.last_uid + 1}:*", since)
        new, _ = split_by_checkpoint(found, self.last_uid)
        below: list[int] = []
        if self.last_uid > 0:
            below = await asyncio.to_thread(session.search, f"1:{self.last_uid}", since)
        self.folder_state.backlog = len(new) + len(below)
        self.connector.publish()
        if not new and not below:
            await self._finish_backfill()
            return False
        todo = new
        if below:
            # Stored before a crash or a lost connection, never archived: archive them now.
            # Any the store does not know (skipped for some reason) are fetched like new ones.
            stored = await asyncio.to_thread(self._stored_uids, below)
            if stored:
                await self._archive(session, sorted(stored))
                log.info("%s: archived %d messages stored earlier", self.label, len(stored))
            unknown = sorted(set(below) - stored)
            if unknown:
                log.warning(
                    "%s: %d messages at or below the checkpoint are not stored: fetching",
                    self.label,
                    len(unknown),
                )
            todo = sorted(set(new) | set(unknown))
        total = len(todo)
        if self.backfilling and total:
            self._backfill_progress(0, total)
        archived_before = self.folder_state.archived
        sizes = await asyncio.to_thread(session.sizes, todo)
        batches = size_batches(sizes, self.settings.batch_size, MAX_BATCH_BYTES)
        done = 0
        started = time.monotonic()
        unarchived: list[int] = []  # stored, committed, not yet archived
        missing: set[int] = set()  # asked for, not answered: expunged meanwhile, or broken
        # The next batch is fetched while this one commits: IMAP and the store wait on
        # different things. The connection is never used by two threads at once, since
        # archiving waits for the fetch in flight.
        ahead: asyncio.Task[list[Fetched]] | None = None
        prefetched: list[Fetched] | None = None
        try:
            for index, batch in enumerate(batches):
                if stop.is_set():
                    break
                if prefetched is not None:
                    fetched, prefetched = prefetched, None
                elif ahead is not None:
                    fetched, ahead = await ahead, None
                else:
                    fetched = await asyncio.to_thread(session.fetch, batch)
                if index + 1 < len(batches) and not stop.is_set():
                    ahead = asyncio.create_task(
                        asyncio.to_thread(session.fetch, batches[index + 1])
                    )
                items = [self._raw_input(f) for f in fetched]
                missing.update(set(batch) - {f.uid for f in fetched})
                top = max(self.last_uid, *batch)
                # The messages and the checkpoint that covers them commit together.
                await asyncio.to_thread(self._save_checkpoint, items, top)
                self.last_uid = self.folder_state.last_uid = top
                self.folder_state.stored += len(items)
                if self.connector.on_stored is not None and items:
                    self.connector.on_stored(len(items))
                # Only now, with the commit behind us, may the upstream copies go.
                unarchived += [f.uid for f in fetched]
                # Archived in groups (each MOVE costs the server an index update); until
                # then they wait stored, and a crash leaves them to the next round.
                if len(unarchived) >= self.settings.archive_batch:
                    if ahead is not None:
                        prefetched, ahead = await ahead, None
                    await self._archive(session, unarchived)
                    unarchived = []
                done += len(batch)
                self.folder_state.backlog = total - done + len(unarchived)
                if self.backfilling:
                    self._backfill_progress(done, total)
                elif total > self.settings.batch_size:
                    log.info("%s: stored %d of %d", self.label, done, total)
                self.connector.publish()
        finally:
            if ahead is not None:
                # Never leave a fetch running on a connection that is about to be closed.
                with contextlib.suppress(Exception):
                    await ahead
        if unarchived:
            await self._archive(session, unarchived)
            self.folder_state.backlog = total - done
            self.connector.publish()
        if done:
            log.info(
                "%s: stored and archived %d messages in %.1f s",
                self.label,
                done - len(missing),
                time.monotonic() - started,
            )
        if missing:
            # Expunged by someone else since the search, or a message the server cannot
            # return. Whatever is still there is tried again next round, and said so.
            error = f"{len(missing)} messages could not be fetched (UIDs {sorted(missing)[:20]})"
            self.folder_state.last_error = error
            log.warning("%s: %s", self.label, error)
        # Another round at once only if this one got somewhere: a message that can never be
        # fetched must not turn the loop into a busy one.
        progress = self.folder_state.archived > archived_before
        return progress and not stop.is_set()

    def _raw_input(self, fetched: Fetched) -> RawInput:
        return RawInput(
            connector=CONNECTOR,
            channel=CHANNEL,
            source_key=source_key(self.account.name, self.folder, self.uidvalidity, fetched.uid),
            payload=fetched.raw,
            # The worker records a receipt for envelope["address"]: the mailbox's address.
            envelope={
                "address": self.account.receipt_address,
                "account": self.account.name,
                "folder": self.folder,
                "uidvalidity": self.uidvalidity,
                "uid": fetched.uid,
            },
            received_at=fetched.internal_date,
        )

    async def _archive(self, session: Session, uids: Sequence[int]) -> None:
        """Move or delete messages upstream; callers pass only UIDs whose commit is done."""
        await asyncio.to_thread(
            session.archive, list(uids), self.account.after_store, self.account.archive_folder
        )
        self.folder_state.archived += len(uids)

    def _backfill_progress(self, done: int, total: int) -> None:
        since = self.account.backfill_since
        self.folder_state.backfill = {
            "since": since.isoformat() if since else None,
            "done": done,
            "total": total,
            "complete": False,
        }
        log.info(
            "%s: backfill%s: %d of %d messages stored (%d%%)",
            self.label,
            f" since {since.isoformat()}" if since else "",
            done,
            total,
            100 * done // total if total else 100,
        )

    async def _finish_backfill(self) -> None:
        if not self.backfilling:
            return
        self.backfilling = False
        since = self.account.backfill_since
        state = self.folder_state.backfill or {
            "since": since.isoformat() if since else None,
            "done": 0,
            "total": 0,
        }
        self.folder_state.backfill = {**state, "complete": True}
        log.info("%s: backfill complete: %d messages", self.label, state["done"])
        # Remembered, so that a restart does not take the next round for a first start.
        await asyncio.to_thread(self._save_checkpoint, [])

    async def _quota(self, session: Session) -> None:
        try:
            quotas = await asyncio.to_thread(session.quota, self.folder)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            log.info("%s: GETQUOTAROOT failed: %s", self.label, exc)
            return
        status = quota_status(quotas, self.settings.quota_warn_percent)
        self.account_state.quota = status
        warnings = []
        if status and status["warning"]:
            warnings.append(
                f"upstream mailbox {status['percent']}% full "
                f"(warning at {self.settings.quota_warn_percent}%): "
                "it will bounce mail when full"
            )
            log.warning("imap %s: %s", self.account.name, warnings[0])
        self.account_state.warnings = warnings

    async def _idle(self, session: Session, stop: asyncio.Event) -> None:
        """Wait for new mail with IDLE, at most poll_seconds, then let a round run."""
        deadline = time.monotonic() + min(self.settings.poll_seconds, IDLE_RENEW_S)
        await asyncio.to_thread(session.idle_start)
        self.folder_state.waiting = "idle"
        self.connector.publish()
        outcome = ""
        early = 0
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                responses, ended_early = await asyncio.to_thread(session.idle_wait, IDLE_TICK_S)
                early = early + 1 if ended_early else 0
                if early >= 3:  # three early, empty returns in a row: the socket is at EOF
                    raise ConnectionLost("the server closed the connection while idle")
                outcome = idle_outcome(responses)
                if outcome:
                    break
        finally:
            self.folder_state.waiting = ""
        if outcome == "bye":
            raise ConnectionLost("the server said BYE")
        await asyncio.to_thread(session.idle_stop)
