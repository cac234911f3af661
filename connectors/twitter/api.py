"""tweepy's v2 Client, pointed at `api_base_url`, with every failure sorted by what to do next.

tweepy hard-codes https://api.twitter.com, so a requests adapter mounted on the client's
session sends its requests to the configured base URL instead (a local fake in tests, a
proxy or the real API in production). The adapter also gives every request a timeout:
tweepy sets none, and one stalled connection would otherwise hang a poller for good.

X sends its rate-limit budget in x-rate-limit-* headers on every answer and no Retry-After,
so the client is asked for the raw `requests.Response` and the headers are read here.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import requests
import tweepy
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from connectors.outbox import Halted
from connectors.twitter.auth import TwitterCredentials

TWITTER_HOST = "https://api.twitter.com"
# Where v1.1 media uploads go (tweepy.API's upload host); rebased with the API when the
# configured base URL is not X's own (one fake, or one proxy, serves both).
UPLOAD_HOST = "https://upload.twitter.com"

# What the connector does about a failure:
# rate_limited: wait for x-rate-limit-reset, then repeat the same request;
# credits: 402, the account ran out of paid credits: pause;
# auth: 401, the credentials are wrong or revoked: disable, never loop;
# forbidden: 403, this endpoint or this recipient is off limits: stop that part;
# rejected: any other 4xx: this request will never work as it is;
# transient: 5xx, timeouts, refused connections: back off and retry;
# unsure: a send whose answer was lost: it may have been posted, so never blindly retried.
ErrorKind = Literal[
    "rate_limited", "credits", "auth", "forbidden", "rejected", "transient", "unsure"
]


class XError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        reset_at: float | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.status = status
        self.reset_at = reset_at
        self.body: Mapping[str, Any] = body or {}


def classify(status: int) -> ErrorKind:
    if status == 429:
        return "rate_limited"
    if status == 402:
        return "credits"
    if status == 401:
        return "auth"
    if status == 403:
        return "forbidden"
    if status >= 500:
        return "transient"
    return "rejected"


def describe(status: int, reason: str, body: Mapping[str, Any] | None) -> str:
    """One line from an X problem document (RFC 7807 style) or a v1-style errors list."""
    parts: list[str] = []
    if body:
        for key in ("title", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value and value not in parts:
                parts.append(value)
        for error in body.get("errors") or []:
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                parts.append(error["message"])
    text = "; ".join(" ".join(p.split()) for p in parts)
    return f"{status} {reason}" + (f": {text}" if text else "")


def is_duplicate_content(body: Mapping[str, Any]) -> bool:
    """X refuses a tweet whose text equals one we posted recently (403)."""
    text = json.dumps(body).lower()
    return "duplicate content" in text


@dataclass(frozen=True)
class Budget:
    """An endpoint's rate-limit window as X last reported it."""

    limit: int | None
    remaining: int | None
    reset_at: float | None  # epoch seconds

    def as_status(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "remaining": self.remaining,
            "reset_at": (
                datetime.fromtimestamp(self.reset_at, UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z")
                if self.reset_at is not None
                else None
            ),
        }


def read_budget(headers: Mapping[str, str]) -> Budget | None:
    def number(name: str) -> int | None:
        value = headers.get(name)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    limit, remaining, reset = (
        number("x-rate-limit-limit"),
        number("x-rate-limit-remaining"),
        number("x-rate-limit-reset"),
    )
    if limit is None and remaining is None and reset is None:
        return None
    return Budget(limit, remaining, float(reset) if reset is not None else None)


class RebaseAdapter(HTTPAdapter):
    """Sends what tweepy addresses to api.twitter.com to `base_url`, always with a timeout.

    The URL is rewritten after requests has prepared (and OAuth-signed) the request, so the
    signature covers https://api.twitter.com exactly as X itself checks it.
    """

    def __init__(
        self, base_url: str, timeout: tuple[float, float], host: str = TWITTER_HOST
    ) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.host = host

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = request.url or ""
        if self.base_url != TWITTER_HOST and url.startswith(self.host):
            request.url = self.base_url + url[len(self.host) :]
        return super().send(
            request,
            stream=stream,
            timeout=timeout if timeout is not None else self.timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


def _connection_never_made(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached X (so even a send may be retried)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, NewConnectionError | ConnectTimeoutError):
            return True
        reason = getattr(current, "reason", None)
        nested = current.args[0] if current.args else None
        current = (
            reason
            if isinstance(reason, BaseException)
            else nested
            if isinstance(nested, BaseException)
            else current.__cause__ or current.__context__
        )
    return False


TWEET_FIELDS = [
    "author_id",
    "conversation_id",
    "created_at",
    "in_reply_to_user_id",
    "referenced_tweets",
    "lang",
    "note_tweet",
]
USER_FIELDS = ["username", "name", "public_metrics", "verified", "verified_type", "created_at"]
DM_EVENT_FIELDS = [
    "id",
    "text",
    "event_type",
    "created_at",
    "dm_conversation_id",
    "sender_id",
    "participant_ids",
    "referenced_tweets",
    "attachments",
]
PAGE_SIZE = 100  # the most X returns per page on both timelines
# Between two STATUS requests about a medium X is processing: never longer than the cap, so
# a hostile check_after_secs cannot park the sender in one long sleep, and never shorter than
# the floor, so a check_after_secs of 0 cannot turn the wait into a stream of requests. The
# first STATUS, after FINALIZE's answer, has no floor: one request cannot make a stream, and
# a GIF X has already processed then goes without a second's wait.
PROCESSING_WAIT_CAP_S = 10.0
PROCESSING_WAIT_FLOOR_S = 1.0
# A file goes to X in chunks of this size (tweepy's own; X takes up to 5 MiB an APPEND, and
# at most 1,000 of them, 512 for the largest DM video): the deadline is looked at between
# two, so at most one chunk's request runs past it.
UPLOAD_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ProcessingStep:
    """What to do about an uploaded medium's processing_info: send it ("ready"), refuse it
    ("failed"), ask again in `seconds` ("wait"), or stop waiting ("give_up")."""

    action: Literal["ready", "failed", "wait", "give_up"]
    seconds: float = 0.0


def processing_step(
    info: object, elapsed: float, timeout: float, *, first: bool = False
) -> ProcessingStep:
    """The next step after X answered `info` (a FINALIZE's or STATUS's processing_info, None
    when X sent none: an image needs no processing), `elapsed` seconds into a wait of at most
    `timeout`; `first` when `info` is FINALIZE's, so no STATUS was asked yet. Every value in
    `info` is X's, so none is trusted: only "succeeded" is ready, and any state but "failed"
    is waited on like "in_progress", under the same deadline."""
    if info is None:
        return ProcessingStep("ready")
    found = info if isinstance(info, Mapping) else {}
    state = found.get("state")
    if state == "succeeded":
        return ProcessingStep("ready")
    if state == "failed" or "error" in found:
        return ProcessingStep("failed")
    left = timeout - elapsed
    if left <= 0:
        return ProcessingStep("give_up")
    asked = found.get("check_after_secs")
    after = (
        float(asked)
        if isinstance(asked, int | float) and not isinstance(asked, bool) and math.isfinite(asked)
        else 0.0
    )
    floor = 0.0 if first else PROCESSING_WAIT_FLOOR_S
    wait = max(floor, min(max(after, 0.0), left, PROCESSING_WAIT_CAP_S))
    return ProcessingStep("wait", wait)


def pause(seconds: float, halt: threading.Event | None) -> bool:
    """Wait `seconds` (not at all for 0), or until `halt` is set: True when it was."""
    if halt is None:
        time.sleep(max(seconds, 0.0))
        return False
    if seconds <= 0:
        return halt.is_set()
    return halt.wait(seconds)


def processing_error(info: object) -> str:
    """X's reason for a failed processing, from processing_info's error when it gives one."""
    found = info if isinstance(info, Mapping) else {}
    error = found.get("error")
    reason = error if isinstance(error, Mapping) else {}
    return str(reason.get("message") or reason.get("name") or "processing failed")


class XApi:
    """The handful of X v2 calls Parity makes, each returning the JSON body or raising XError."""

    def __init__(
        self,
        base_url: str,
        credentials: TwitterCredentials,
        account_id: str,
        *,
        timeout: tuple[float, float] = (10.0, 30.0),
        on_budget: Callable[[str, Budget], None] | None = None,
        media_processing_timeout_s: float = 120.0,
    ) -> None:
        self.account_id = account_id
        self.media_processing_timeout_s = media_processing_timeout_s
        self.on_budget = on_budget
        bearer = credentials.bearer_token
        self.app_auth = bearer is not None
        self.client = tweepy.Client(
            bearer_token=bearer.reveal() if bearer else None,
            consumer_key=credentials.consumer_key.reveal(),
            consumer_secret=credentials.consumer_secret.reveal(),
            access_token=credentials.access_token.reveal(),
            access_token_secret=credentials.access_token_secret.reveal(),
            return_type=requests.Response,
            # Waiting is ours to do: tweepy would sleep inside a worker thread, deaf to
            # shutdown, and without telling the status what it waits for.
            wait_on_rate_limit=False,
        )
        self.client.session.mount(TWITTER_HOST, RebaseAdapter(base_url, timeout))
        # Media for DMs: v1.1's upload endpoint, which only tweepy's v1.1 API speaks, signed
        # with the same user-context keys.
        self.uploads = tweepy.API(
            tweepy.OAuth1UserHandler(
                credentials.consumer_key.reveal(),
                credentials.consumer_secret.reveal(),
                credentials.access_token.reveal(),
                credentials.access_token_secret.reveal(),
            ),
            timeout=timeout,
            wait_on_rate_limit=False,
        )
        self.uploads.session.mount(UPLOAD_HOST, RebaseAdapter(base_url, timeout, UPLOAD_HOST))

    def close(self) -> None:
        self.client.session.close()
        self.uploads.session.close()

    # --- calls -------------------------------------------------------------------------

    def mentions(self, since_id: str | None, pagination_token: str | None) -> dict[str, Any]:
        return self._call(
            "mentions",
            lambda c: c.get_users_mentions(
                self.account_id,
                since_id=since_id,
                pagination_token=pagination_token,
                max_results=PAGE_SIZE,
                expansions=["author_id"],
                tweet_fields=TWEET_FIELDS,
                user_fields=USER_FIELDS,
                user_auth=not self.app_auth,
            ),
        )

    def dm_events(self, pagination_token: str | None) -> dict[str, Any]:
        return self._call(
            "dm_events",
            lambda c: c.get_direct_message_events(
                dm_event_fields=DM_EVENT_FIELDS,
                event_types="MessageCreate",
                expansions=["sender_id"],
                user_fields=USER_FIELDS,
                max_results=PAGE_SIZE,
                pagination_token=pagination_token,
                user_auth=True,
            ),
        )

    def create_tweet(self, text: str, in_reply_to_tweet_id: str | None) -> dict[str, Any]:
        return self._call(
            "create_tweet",
            lambda c: c.create_tweet(
                text=text, in_reply_to_tweet_id=in_reply_to_tweet_id, user_auth=True
            ),
            send=True,
        )

    def create_dm(
        self, participant_id: str, text: str, media_id: str | None = None
    ) -> dict[str, Any]:
        """A DM with `text`, or with one uploaded medium and the text if any (X takes one
        medium per DM, and a DM without text when it has one)."""
        return self._call(
            "create_dm",
            lambda c: c.create_direct_message(
                participant_id=participant_id,
                text=text if text or media_id is None else None,
                media_id=media_id,
                user_auth=True,
            ),
            send=True,
        )

    def upload_media(
        self,
        data: bytes,
        filename: str,
        media_type: str,
        category: str,
        *,
        timeout: float | None = None,
        halt: threading.Event | None = None,
    ) -> str:
        """One file uploaded for a DM, by v1.1's chunked upload (INIT, APPEND per chunk,
        FINALIZE, then STATUS while X processes a video or GIF); its media id. Nothing reaches
        the customer yet: an upload may always be done again. The upload and X's processing
        take at most `timeout` seconds (what the reply has left of
        `media_processing_timeout_s`), checked before each request, and no longer than until
        `halt` is set (the connector stops): then `Halted`."""
        limit = self.media_processing_timeout_s
        timeout = limit if timeout is None else max(0.0, min(timeout, limit))
        started = time.monotonic()

        def before_request() -> None:
            # Before each request, not around the whole upload: one request is bounded by
            # the client's timeouts, and past the deadline no other one begins, so an
            # attempt ends within the outbox's sending lease (settings.LEASE_MARGIN_S).
            if halt is not None and halt.is_set():
                raise Halted(f"stopped while uploading {filename}")
            if time.monotonic() - started >= timeout:
                # Transient: the outbox tries the reply again later with its usual backoff.
                raise XError(
                    "transient",
                    f"the upload of {filename} to X did not fit in the reply's time for its "
                    f"files (media_processing_timeout_s = {limit:g})",
                )

        # Done here rather than by tweepy's chunked_upload, which sends every chunk without a
        # look at the clock (a slow link would hold the row past its lease) and then sleeps
        # X's check_after_secs for as long as X says "in progress", without end.
        before_request()
        init = self._upload_step(
            lambda: self.uploads.chunked_upload_init(len(data), media_type, media_category=category)
        )
        media_id = getattr(init, "media_id_string", None) or getattr(init, "media_id", None)
        if not media_id:
            raise XError("transient", "the media upload answered no media id")
        for index, offset in enumerate(range(0, len(data), UPLOAD_CHUNK_BYTES)):
            before_request()
            self._upload_step(
                functools.partial(
                    self.uploads.chunked_upload_append,
                    media_id,
                    (filename, data[offset : offset + UPLOAD_CHUNK_BYTES]),
                    index,
                )
            )
        before_request()
        media = self._upload_step(lambda: self.uploads.chunked_upload_finalize(media_id))
        first = True
        while True:
            waited = time.monotonic() - started
            info = getattr(media, "processing_info", None)
            step = processing_step(info, waited, timeout, first=first)
            first = False
            if step.action == "ready":
                return str(media_id)
            if step.action == "failed":
                raise XError(
                    "rejected", f"X could not process {filename}: {processing_error(info)}"
                )
            if step.action == "give_up":
                # Transient: the outbox tries the reply again later with its usual backoff.
                raise XError(
                    "transient",
                    f"X was still processing {filename} after {waited:.0f} s "
                    f"(media_processing_timeout_s = {limit:g} for the reply's files)",
                )
            # On the stop event, not a plain sleep: a shutdown must not wait out X's
            # processing (up to the timeout) before the process can end.
            if pause(step.seconds, halt):
                raise Halted(f"stopped while X was processing {filename}")
            media = self._upload_step(lambda: self.uploads.get_media_upload_status(media_id))

    def _upload_step(self, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except tweepy.HTTPException as exc:
            raise self._http_error("media_upload", exc) from exc
        except tweepy.TweepyException as exc:
            # tweepy wraps the transport's failure; an upload is safe to repeat.
            raise XError("transient", f"media upload: {exc}") from exc

    def own_tweets(self, start_time: datetime) -> dict[str, Any]:
        """Our own recent tweets, to find out whether a send with a lost answer went out."""
        return self._call(
            "user_tweets",
            lambda c: c.get_users_tweets(
                self.account_id,
                start_time=start_time,
                max_results=PAGE_SIZE,
                tweet_fields=["created_at", "referenced_tweets", "conversation_id"],
                user_auth=True,
            ),
        )

    def dm_events_with(self, participant_id: str) -> dict[str, Any]:
        return self._call(
            "dm_events",
            lambda c: c.get_direct_message_events(
                participant_id=participant_id,
                dm_event_fields=DM_EVENT_FIELDS,
                event_types="MessageCreate",
                max_results=PAGE_SIZE,
                user_auth=True,
            ),
        )

    # --- the one place errors are sorted -------------------------------------------------

    def _call(
        self,
        endpoint: str,
        request: Callable[[Any], requests.Response],
        *,
        send: bool = False,
    ) -> dict[str, Any]:
        try:
            response = request(self.client)
        except tweepy.HTTPException as exc:
            raise self._http_error(endpoint, exc) from exc
        except requests.RequestException as exc:
            kind: ErrorKind = "unsure" if send and not _connection_never_made(exc) else "transient"
            raise XError(kind, f"{type(exc).__name__}: {exc}") from exc
        self._budget(endpoint, response.headers)
        try:
            body = response.json()
        except ValueError as exc:
            # A send that answered 2xx went out, even if we cannot read its id.
            raise XError(
                "unsure" if send else "transient",
                f"{response.status_code} with a body that is not JSON",
                status=response.status_code,
            ) from exc
        if not isinstance(body, dict):
            raise XError("unsure" if send else "transient", "answer is not a JSON object")
        return body

    def _http_error(self, endpoint: str, exc: tweepy.HTTPException) -> XError:
        raw: requests.Response = exc.response
        self._budget(endpoint, raw.headers)
        body = _json_or_empty(raw)
        status = raw.status_code
        reset_at = getattr(exc, "reset_time", None)
        budget = read_budget(raw.headers)
        if reset_at is None and budget is not None:
            reset_at = budget.reset_at
        return XError(
            classify(status),
            describe(status, raw.reason or "", body),
            status=status,
            reset_at=float(reset_at) if reset_at is not None else None,
            body=body,
        )

    def _budget(self, endpoint: str, headers: Mapping[str, str]) -> None:
        budget = read_budget(headers)
        if budget is not None and self.on_budget is not None:
            self.on_budget(endpoint, budget)


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def seconds_until(
    reset_at: float | None, now: float | None = None, *, fallback: float = 60.0
) -> float:
    """How long to wait for a rate-limit window to reset: one second past it (clocks differ),
    `fallback` when X sent no reset, and never more than a window and a bit."""
    if reset_at is None:
        return fallback
    current = time.time() if now is None else now
    return min(max(reset_at - current + 1.0, 0.0), 16 * 60.0)
