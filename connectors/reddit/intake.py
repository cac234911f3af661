"""The Reddit connector: the support account's inbox and watched subreddits, through praw.

Sources, each with a checkpoint of its own (connector "reddit", key = the source):
- `inbox`: private messages, username mentions and comment replies to the account;
- `r/<name>/new` and `r/<name>/comments` for each watched subreddit, kept when they match
  a keyword, name the account, or continue a thread we already hold.

A poll reads a source newest first, page by page, until it passes its checkpoint (the newest
fullname and created time seen last time, less `overlap_seconds`), then stores what it found
oldest first, together with the new checkpoint, in one transaction. praw's streams remember
the last 301 items in memory only, so a restart would replay or skip; this checkpoint lives
in the store, so a restart resumes exactly, and what an overlap reads twice is recognised
at intake by its fullname (the source key).

praw does the HTTP: the password grant, the session, its own pacing from the
`X-Ratelimit-*` headers, and retries of 5xx. It has no answer to a 429 (it raises
TooManyRequests), so `_call` waits those out and repeats the same page: nothing fetched so
far is dropped. Listings are read as JSON through `Reddit.request` rather than as praw
objects, because the store keeps what Reddit sent (a parser fix replays it) and because
praw's lazy objects make hidden requests when a missing attribute is read.

The poller base (connectors/poller.py) owns the rest: one instance polls and delivers, holding
the reddit poller lock, while any other stands by (two pollers would store nothing twice,
intake is idempotent, but would race each other's checkpoints and both sign in and spend the
account's one rate budget); an authentication failure disables the connector with a clear
status until it is restarted with working credentials, never a crash loop against Reddit's
token endpoint. What is Reddit's own here: the sources, the walk back to the checkpoint, the
filters, the raw input, and `classify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine, select

from connectors import poller
from connectors.outbox import DrainReport
from connectors.poller import Disable, Poller, Retry, next_step, sleep_or_stop
from connectors.reddit.errors import AuthFailed as AuthFailed
from connectors.reddit.errors import auth_failure as auth_failure
from connectors.reddit.errors import retry_wait as retry_wait
from connectors.reddit.parse import SYSTEM_AUTHORS, ref
from connectors.reddit.settings import RedditSettings
from inbox.db import StorageUnavailable
from inbox.models import Intake, MessageRef, utcnow
from inbox.secrets import Secret, from_env
from normalizer.intake import CheckpointUpdate, RawInput, load_checkpoint, sha256

# AuthFailed, auth_failure and retry_wait are shared with the sender (outbox.py): they
# live in the leaf module errors.py, so that the two never import each other,
# and are re-exported here under their old names.

log = logging.getLogger(__name__)

CONNECTOR = "reddit"
CHANNEL = "reddit"
PAGE_SIZE = 100  # the most Reddit returns per listing request
MAX_429_RETRIES = 5
_USERNAME = re.compile(r"[A-Za-z0-9_-]{1,20}")
T = TypeVar("T")


# --- availability and the praw client --------------------------------------------------------


def credential_envs(settings: RedditSettings) -> dict[str, str]:
    return {
        "client_id": settings.client_id_env,
        "client_secret": settings.client_secret_env,
        "username": settings.username_env,
        "password": settings.password_env,
    }


def availability(settings: RedditSettings, environ: Mapping[str, str]) -> tuple[bool, str | None]:
    """Whether the connector can start here, and why not (for `parity connectors status`)."""
    if importlib.util.find_spec("praw") is None:
        return False, "praw is not installed (pip install praw)"
    missing = [name for name in credential_envs(settings).values() if not environ.get(name)]
    if missing:
        return False, "missing environment variable(s) " + ", ".join(missing)
    if not settings.inbox and not (
        settings.subreddits and (settings.watch_submissions or settings.watch_comments)
    ):
        return False, "nothing to read: the inbox is off and no subreddit is watched"
    return True, None


def make_reddit(settings: RedditSettings, environ: Mapping[str, str], session: Any = None) -> Any:
    """A praw.Reddit for the script app in settings, pointed at `oauth_url` / `reddit_url`."""
    import praw

    secrets: dict[str, Secret] = {}
    for key, name in credential_envs(settings).items():
        secret = from_env(name, dict(environ))
        if secret is None:
            raise AuthFailed(f"environment variable {name} is not set")
        secrets[key] = secret
    return praw.Reddit(
        client_id=secrets["client_id"].reveal(),
        client_secret=secrets["client_secret"].reveal(),
        username=secrets["username"].reveal(),
        password=secrets["password"].reveal(),
        user_agent=settings.user_agent,
        oauth_url=settings.oauth_url,
        reddit_url=settings.reddit_url,
        check_for_updates=False,
        # praw runs on worker threads here, never on the event loop itself.
        check_for_async=False,
        timeout=settings.request_timeout_seconds,
        requestor_kwargs={"session": session} if session is not None else None,
    )


class Interrupted(Exception):
    """Asked to stop mid-poll: nothing of this poll was stored, so nothing is lost."""


# --- pure rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a source's last poll got to: its newest item, by fullname and created time."""

    newest: str
    created_utc: float

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> Cursor | None:
        if not value or not isinstance(value.get("newest"), str):
            return None
        return cls(value["newest"], float(value.get("created_utc") or 0.0))

    def value(self) -> dict[str, Any]:
        return {"newest": self.newest, "created_utc": self.created_utc}


def passed(
    created: float | None, cursor: Cursor | None, overlap_s: float, floor: float | None
) -> bool:
    """True once a newest-first walk has gone past what the last poll covered."""
    if created is None:
        return False
    if cursor is not None:
        return created < cursor.created_utc - overlap_s
    return floor is not None and created < floor


def advance(cursor: Cursor | None, top: Cursor | None) -> Cursor | None:
    """The new checkpoint: the newer of the old one and the listing's top item.

    The top can be older than the checkpoint when the newest item was deleted: the
    checkpoint never moves back, or the next poll would read old items as new.
    """
    if top is None:
        return cursor
    if cursor is None or top.created_utc >= cursor.created_utc:
        return top
    return cursor


def missed(cursor: Cursor | None, reached: bool, oldest: float | None) -> bool:
    """True when a listing ended before the walk got back to the checkpoint's time.

    Reddit keeps about 1,000 items per listing: what fell off its end cannot be read.
    """
    return cursor is not None and not reached and oldest is not None and oldest > cursor.created_utc


def keyword_matcher(keywords: Sequence[str], account: str) -> Callable[[str], bool]:
    """Case-blind whole-word match on any keyword, or on a mention of u/<account>."""
    words = [re.escape(k.strip()) for k in keywords if k.strip()]
    mention = re.compile(rf"(?<![\w/])/?u/{re.escape(account)}(?![\w-])", re.IGNORECASE)
    pattern = re.compile(rf"(?<!\w)(?:{'|'.join(words)})(?!\w)", re.IGNORECASE) if words else None

    def matches(text: str) -> bool:
        if mention.search(text):
            return True
        return pattern is None or bool(pattern.search(text))

    return matches


def searchable_text(data: Mapping[str, Any]) -> str:
    return "\n".join(
        str(data.get(k) or "") for k in ("title", "selftext", "body", "link_flair_text")
    )


@dataclass(frozen=True)
class Source:
    key: str  # the checkpoint key
    path: str  # the listing's API path
    address: str  # where it was received, for receipts
    filtered: bool  # a watched subreddit: keep only matching or followed items


def sources(settings: RedditSettings, account: str) -> list[Source]:
    found: list[Source] = []
    if settings.inbox:
        found.append(Source("inbox", "message/inbox/", f"u/{account}", False))
    for name in settings.subreddits:
        key = name.lower()
        if settings.watch_submissions:
            found.append(Source(f"r/{key}/new", f"r/{name}/new/", f"r/{name}", True))
        if settings.watch_comments:
            found.append(Source(f"r/{key}/comments", f"r/{name}/comments/", f"r/{name}", True))
    return found


# --- health ------------------------------------------------------------------------------------


@dataclass
class RateBudget:
    """What Reddit last said about our request budget, and what we waited."""

    remaining: float | None = None
    used: int | None = None
    reset_seconds: int | None = None
    observed_at: str | None = None
    too_many_requests: int = 0
    waited_seconds: float = 0.0

    def details(self) -> dict[str, Any]:
        return {
            "remaining": self.remaining,
            "used": self.used,
            "reset_seconds": self.reset_seconds,
            "observed_at": self.observed_at,
            "too_many_requests": self.too_many_requests,
            "waited_seconds": round(self.waited_seconds, 1),
        }


@dataclass
class SourceReport:
    key: str
    fetched: int = 0
    stored: int = 0
    duplicates: int = 0
    own: int = 0
    filtered: int = 0
    gap: bool = False
    error: str | None = None
    checkpoint: dict[str, Any] | None = None


@dataclass
class PollReport:
    sources: list[SourceReport] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return sum(s.stored for s in self.sources)


# --- the connector --------------------------------------------------------------------------


class RedditConnector(Poller):
    name = CONNECTOR

    def __init__(
        self,
        settings: RedditSettings,
        engine: Engine,
        environ: Mapping[str, str],
        *,
        instance: str = "",
        before_commit: Callable[[Source, Sequence[RawInput]], None] | None = None,
        deliver: bool = True,
        timezone: str = "UTC",
    ) -> None:
        super().__init__(
            engine, CONNECTOR, standby_retry_seconds=settings.standby_retry_seconds, label="reddit"
        )
        # The business hours' time zone, in which a promised time is worded.
        self.timezone = timezone
        self.settings = settings
        self.environ = dict(environ)
        self.instance = instance or f"reddit-{id(self):x}"
        self.budget = RateBudget()
        self.before_commit = before_commit
        self.deliver_enabled = deliver
        self.reddit: Any = None
        self.account = ""
        self.disabled_reason: str | None = None
        # Reddit failing for a moment: try again soon, at most every half minute.
        self.retry = Retry(base_s=5.0, cap_s=min(self.settings.poll_seconds, 30))
        self._karma: dict[str, tuple[float, dict[str, int]]] = {}
        self._source_state: dict[str, dict[str, Any]] = {}
        self.delivery: Any = None

    # lifecycle ------------------------------------------------------------------------------

    def connect(self) -> None:
        """Sign in and learn the account's own name (our items are never customer input)."""
        import requests

        session = requests.Session()
        session.hooks["response"].append(self._observe)
        self.reddit = make_reddit(self.settings, self.environ, session)
        try:
            me = self.reddit.user.me()
        except Exception as exc:
            verdict = self.classify(exc)
            if isinstance(verdict, poller.AuthFailed):
                raise AuthFailed(verdict.reason) from exc
            raise
        if me is None:
            raise AuthFailed("authentication failed: signed in without a user (read-only)")
        self.account = str(me.name)
        # The ack route names the account (normalizer/worker.py reads it from the store).
        from connectors.reddit.outbox import ACK_STATE

        self.commit([], [CheckpointUpdate(*ACK_STATE, {"account": self.account})])
        self.publish()
        if self.deliver_enabled:
            from connectors.reddit.outbox import RedditSender, drainer

            sender = RedditSender(self.settings, self.reddit, self.account, self.timezone)
            self.delivery = drainer(self.engine, sender, self.settings, self.instance)

    def deliver_once(self, halt: threading.Event | None = None) -> DrainReport:
        """Send due rows through the shared drainer (the worker plans acknowledgements).

        Only the holder of the poller lock runs this, so it is Reddit's one sender."""
        report: DrainReport = self.delivery.drain_once(halt=halt)
        return report

    def classify(self, exc: BaseException) -> poller.Verdict:
        """What a failure means: refused credentials, a 429 retried out, or for a moment."""
        from prawcore.exceptions import TooManyRequests

        if isinstance(exc, AuthFailed):
            return poller.AuthFailed(str(exc))
        reason = auth_failure(exc)
        if reason is not None:
            return poller.AuthFailed(reason)
        if isinstance(exc, StorageUnavailable):
            return poller.Transient(f"storage unavailable: {exc}")
        if isinstance(exc, TooManyRequests):
            wait = retry_wait(
                exc.response.headers, MAX_429_RETRIES, self.settings.max_rate_wait_seconds
            )
            return poller.RateLimited(after=wait, reason=f"{type(exc).__name__}: {exc}")
        return poller.Transient(f"{type(exc).__name__}: {exc}")

    def disable(self, reason: str) -> None:
        self.disabled_reason = f"{reason}; fix the credentials and restart"
        super().disable(self.disabled_reason)

    async def serve(self, stop: asyncio.Event) -> None:
        halt = threading.Event()  # the worker threads' view of `stop`
        mirror = asyncio.create_task(_mirror(stop, halt))
        loop = asyncio.get_running_loop()
        try:
            try:
                await asyncio.to_thread(self.connect)
            except AuthFailed as exc:
                raise Disable(str(exc)) from exc
            next_poll = 0.0
            failures = 0
            while not stop.is_set():
                try:
                    if loop.time() >= next_poll:
                        await asyncio.to_thread(self.poll_once, halt)
                        next_poll = loop.time() + self.settings.poll_seconds
                    if self.delivery is not None:
                        await asyncio.to_thread(self.deliver_once, halt)
                        self.publish()
                    failures = 0
                except Interrupted:
                    break
                except Exception as exc:
                    # The store or Reddit failing for a moment: say so and try again after a
                    # backoff, rather than restart and sign in again.
                    failures += 1
                    step = next_step(self.classify(exc), failures, self.retry, time.time())
                    if step.wait_s is None:
                        raise Disable(step.reason) from exc
                    log.warning("reddit connector: %s", step.reason)
                    self.health.error(step.reason)
                    next_poll = max(next_poll, loop.time() + step.wait_s)
                wait = min(max(0.0, next_poll - loop.time()), self.settings.outbox_poll_seconds)
                await sleep_or_stop(wait, stop)
        finally:
            halt.set()
            mirror.cancel()

    # polling --------------------------------------------------------------------------------

    def poll_once(self, halt: threading.Event | None = None) -> PollReport:
        """Read every source once; an error in one source leaves the others alone."""
        halt = halt or threading.Event()
        if self.reddit is None:
            self.connect()
        report = PollReport()
        for source in sources(self.settings, self.account):
            try:
                result = self.poll_source(source, halt)
            except (Interrupted, AuthFailed):
                raise
            except Exception as exc:
                verdict = self.classify(exc)
                if isinstance(verdict, poller.AuthFailed):
                    raise AuthFailed(verdict.reason) from exc
                if not isinstance(exc, StorageUnavailable):
                    log.warning("reddit source %s failed: %s", source.key, exc)
                # One source failing leaves the others alone; it is tried again next poll.
                result = SourceReport(source.key, error=verdict.reason)
            report.sources.append(result)
            self._record(result)
        if all(s.error is None for s in report.sources):
            self.health.success()
        self.publish()
        return report

    def poll_source(self, source: Source, halt: threading.Event) -> SourceReport:
        report = SourceReport(source.key)
        cursor = Cursor.of(load_checkpoint(self.engine, CONNECTOR, source.key))
        lookback = self.settings.initial_lookback_hours * 3600
        floor = time.time() - lookback if cursor is None and lookback else None
        top: Cursor | None = None
        fetched: list[dict[str, Any]] = []
        reached = False
        for child in self._listing(source.path, halt):
            data = _data(child)
            name = data.get("name")
            created = float(data["created_utc"]) if _number(data.get("created_utc")) else None
            if top is None and isinstance(name, str) and created is not None:
                top = Cursor(name, created)
            if passed(created, cursor, self.settings.overlap_seconds, floor):
                reached = True
                break
            fetched.append(child)
        report.fetched = len(fetched)
        times = [
            float(_data(c)["created_utc"]) for c in fetched if _number(_data(c).get("created_utc"))
        ]
        report.gap = missed(cursor, reached, min(times) if times else None)
        kept = self._select(source, fetched, report)
        about = self._authors(kept, halt) if self.settings.fetch_karma else {}
        items = [self._raw(source, child, about) for child in reversed(kept)]
        new_cursor = advance(cursor, top)
        checkpoints = []
        if new_cursor is not None and new_cursor != cursor:
            checkpoints.append(CheckpointUpdate(CONNECTOR, source.key, new_cursor.value()))
        if halt.is_set():
            raise Interrupted
        if self.before_commit is not None:
            self.before_commit(source, items)
        results = self.commit(items, checkpoints)
        report.duplicates = sum(1 for r in results if r.duplicate)
        report.stored = len(results) - report.duplicates
        current = new_cursor or cursor
        report.checkpoint = current.value() if current is not None else None
        return report

    def _select(
        self, source: Source, fetched: list[dict[str, Any]], report: SourceReport
    ) -> list[dict[str, Any]]:
        account = self.account.lower()
        candidates: list[dict[str, Any]] = []
        for child in fetched:
            if str(_data(child).get("author") or "").lower() == account:
                report.own += 1  # our own replies and messages never come back in
            else:
                candidates.append(child)
        if not source.filtered:
            return candidates
        matches = keyword_matcher(self.settings.keywords, self.account)
        keep = [matches(searchable_text(_data(c))) for c in candidates]
        if not all(keep):
            # A comment in a thread we already hold belongs to that thread's case, matching
            # keywords or not.
            kept_names = {
                str(_data(c).get("name")) for c, k in zip(candidates, keep, strict=True) if k
            }
            asked = {
                str(_data(c)[f])
                for c, k in zip(candidates, keep, strict=True)
                if not k
                for f in ("parent_id", "link_id")
                if _data(c).get(f)
            }
            followed = self._followed(asked - kept_names) | kept_names
            keep = [
                k or bool({_data(c).get("parent_id"), _data(c).get("link_id")} & followed)
                for c, k in zip(candidates, keep, strict=True)
            ]
        report.filtered = keep.count(False)
        return [c for c, k in zip(candidates, keep, strict=True) if k]

    def _followed(self, fullnames: set[str]) -> set[str]:
        """Which of these things we already hold: stored input or a thread reference."""
        if not fullnames:
            return set()
        names = sorted(fullnames)
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                found.update(
                    conn.execute(
                        select(Intake.source_key).where(
                            Intake.channel == CHANNEL, Intake.source_key.in_(chunk)
                        )
                    ).scalars()
                )
                refs = conn.execute(
                    select(MessageRef.ref).where(MessageRef.ref.in_([ref(n) for n in chunk]))
                ).scalars()
                found.update(r.removeprefix("reddit:") for r in refs)
        return found & fullnames

    def _raw(
        self, source: Source, child: dict[str, Any], about: Mapping[str, dict[str, int]]
    ) -> RawInput:
        payload = json.dumps(child, ensure_ascii=False, separators=(",", ":")).encode()
        data = _data(child)
        name = data.get("name")
        # An item without a usable fullname still goes in: the parser files it as a dead
        # letter with its bytes, instead of it vanishing here.
        key = name if isinstance(name, str) and name else "unnamed:" + sha256(payload)
        envelope: dict[str, Any] = {
            "source": source.key,
            "address": source.address,
            "account": self.account,
        }
        author = str(data.get("author") or "").lower()
        if author in about:
            envelope["author_about"] = about[author]
        return RawInput(
            connector=CONNECTOR,
            channel=CHANNEL,
            source_key=key,
            payload=payload,
            envelope=envelope,
        )

    def _authors(
        self, kept: list[dict[str, Any]], halt: threading.Event
    ) -> dict[str, dict[str, int]]:
        """Karma of the authors, from a cache; new lookups are capped per poll (rate budget)."""
        now = time.monotonic()
        budget = self.settings.karma_lookups_per_poll
        result: dict[str, dict[str, int]] = {}
        for child in kept:
            name = str(_data(child).get("author") or "")
            key = name.lower()
            if not _USERNAME.fullmatch(name) or key in result or key in SYSTEM_AUTHORS:
                continue
            cached = self._karma.get(key)
            if cached is not None and now - cached[0] < 86400:
                if cached[1]:
                    result[key] = cached[1]
                continue
            if budget <= 0:
                continue
            budget -= 1
            facts = self._lookup_karma(name, halt)
            if len(self._karma) > 50_000:
                self._karma.clear()
            self._karma[key] = (now, facts)
            if facts:
                result[key] = facts
        return result

    def _lookup_karma(self, name: str, halt: threading.Event) -> dict[str, int]:
        from prawcore import exceptions as core

        try:
            about = self._call(
                lambda: self.reddit.request(method="GET", path=f"user/{name}/about/"), halt
            )
        except (core.NotFound, core.Forbidden):
            return {}  # suspended or shadow-banned accounts have no public profile
        data = about.get("data") if isinstance(about, dict) else None
        if not isinstance(data, dict):
            return {}
        return {
            k: int(data[k])
            for k in ("link_karma", "comment_karma")
            if isinstance(data.get(k), int) and not isinstance(data.get(k), bool)
        }

    # HTTP --------------------------------------------------------------------------------

    def _listing(self, path: str, halt: threading.Event) -> Iterator[dict[str, Any]]:
        after: str | None = None
        while True:
            if halt.is_set():
                raise Interrupted
            params: dict[str, str | int] = {"limit": PAGE_SIZE}
            if after:
                params["after"] = after
            page = self._call(
                lambda p=params: self.reddit.request(method="GET", path=path, params=p),  # type: ignore[misc]
                halt,
            )
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, dict):
                raise ValueError(f"{path}: not a listing")
            children = [c for c in data.get("children") or [] if isinstance(c, dict)]
            yield from children
            following = data.get("after")
            if not children or not following or following == after:
                return
            after = str(following)

    def _call(self, request: Callable[[], T], halt: threading.Event) -> T:
        """One praw request; a 429 is waited out and the same request made again."""
        from prawcore.exceptions import TooManyRequests

        attempt = 0
        while True:
            try:
                return request()
            except TooManyRequests as exc:
                attempt += 1
                self.budget.too_many_requests += 1
                if attempt > MAX_429_RETRIES:
                    raise
                wait = retry_wait(
                    exc.response.headers, attempt, self.settings.max_rate_wait_seconds
                )
                log.warning(
                    "reddit answered 429; waiting %.1f s, then the same request again", wait
                )
                self.budget.waited_seconds += wait
                self.publish()
                if halt.wait(wait):
                    raise Interrupted from exc

    def _observe(self, response: Any, *_args: Any, **_kwargs: Any) -> None:
        # A requests response hook: every answer's X-Ratelimit-* headers, for status.
        headers = response.headers
        if "x-ratelimit-remaining" in headers:
            with contextlib.suppress(ValueError):
                self.budget.remaining = float(headers["x-ratelimit-remaining"])
                self.budget.used = int(float(headers.get("x-ratelimit-used", "0")))
                self.budget.reset_seconds = int(float(headers.get("x-ratelimit-reset", "0")))
                self.budget.observed_at = utcnow().isoformat().replace("+00:00", "Z")

    # status ---------------------------------------------------------------------------------

    def _record(self, report: SourceReport) -> None:
        state = {
            "last_poll_at": utcnow().isoformat().replace("+00:00", "Z"),
            "fetched": report.fetched,
            "stored": report.stored,
            "own_skipped": report.own,
            "filtered_out": report.filtered,
            "checkpoint": report.checkpoint,
            "error": report.error,
        }
        if report.gap:
            state["warning"] = (
                "the listing ended before the checkpoint: Reddit keeps about 1,000 items per "
                "listing, so older ones could not be read"
            )
        if report.error:
            self.health.error(f"{report.key}: {report.error}")
        self._source_state[report.key] = state

    def extras(self) -> dict[str, Any]:
        """Reddit's own status fields, next to the poller base's `state` and `reason`."""
        limits: dict[str, Any] = {}
        if self.reddit is not None:
            with contextlib.suppress(Exception):
                limits = dict(self.reddit.auth.limits)
        rate = self.budget.details()
        for key in ("remaining", "used"):
            if limits.get(key) is not None:
                rate[key] = limits[key]
        details: dict[str, Any] = {
            "account": self.account,
            "rate_limit": rate,
            "sources": {k: dict(v) for k, v in self._source_state.items()},
        }
        if self.disabled_reason:
            details["disabled_reason"] = self.disabled_reason
        if self.delivery is not None:
            from connectors.reddit.outbox import outbox_states

            details["outbox"] = outbox_states(self.engine)
        return details


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _data(child: Mapping[str, Any]) -> dict[str, Any]:
    data = child.get("data")
    return data if isinstance(data, dict) else {}


async def _mirror(stop: asyncio.Event, halt: threading.Event) -> None:
    await stop.wait()
    halt.set()
