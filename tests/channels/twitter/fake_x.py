"""A local fake of the X API v2 (aiohttp), for the real tweepy client to talk to.

It serves the world in tests/channels/twitter/fixtures/ (users, mentions, DM events, error bodies),
written by us after X's documented formats, and behaves like X where Parity depends on it:
- OAuth 1.0a signatures are verified over https://api.twitter.com (what X checks), and app
  bearer tokens are refused on the user-context-only DM endpoints (403);
- fields and expansions: only the default fields unless tweet.fields / user.fields /
  dm_event.fields ask for more, and users only in `includes` when the expansion is asked;
- since_id, max_results and opaque pagination tokens, newest first;
- x-rate-limit-limit / -remaining / -reset headers on every answer, 429 when a window is
  used up, and no Retry-After;
- posted tweets go to our timeline, posted DMs become DM events sent by us (so the poller
  sees its own acknowledgements come back, as with the real API);
- v1.1's chunked media upload on the upload host (INIT, APPEND, FINALIZE, STATUS), signed
  over https://upload.twitter.com with the form's fields where the body is a form; the
  bytes are kept as the chunks arrive, and a DM may name one finalized media id only;
  FINALIZE answers a GIF or video "pending" (`processing_wait` as check_after_secs), or
  "succeeded" (`finalize_done`); STATUS answers "in_progress" as many times as a test says
  (`processing_rounds`, with its `status_wait` as check_after_secs), then "succeeded" or
  "failed" (`processing_result`); each APPEND may take `append_delay` seconds, a slow link.
Failures are injected as behaviour of the fake (`inject`, `before`, `hold_posts`), never by
patching Parity's code.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

from aiohttp import BodyPartReader, web
from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849.utils import parse_authorization_header

FIXTURES = Path(__file__).parent / "fixtures"
X_HOST = "https://api.twitter.com"
UPLOAD_HOST = "https://upload.twitter.com"
UPLOAD_PATH = "/1.1/media/upload.json"
# "In progress for ever" ends after this many STATUS answers (see FakeX.processing_rounds).
PROCESSING_FOREVER = 50
# X's processing_info when it could not process a medium (its documented shape).
PROCESSING_ERROR = {"code": 1, "name": "InvalidMedia", "message": "Unsupported video format"}
# What X's v1.1 upload takes for a DM, by category.
DM_CATEGORIES = {
    "dm_image": {"image/jpeg", "image/png", "image/webp"},
    "dm_gif": {"image/gif"},
    "dm_video": {"video/mp4"},
}
TWITTER_EPOCH_MS = 1288834974657

ACCOUNT_ID = "1412345678901234567"
CREDENTIALS = {
    "TWITTER_CONSUMER_KEY": "xvz1evFS4wEEPTGEFPHBog",
    "TWITTER_CONSUMER_SECRET": "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
    "TWITTER_ACCESS_TOKEN": f"{ACCOUNT_ID}-Nz4kX0pQ2rT8vW1yB5cD7eF9gH3jK6mL",
    "TWITTER_ACCESS_TOKEN_SECRET": "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
}

TWEET_DEFAULT = ("id", "text", "edit_history_tweet_ids")
USER_DEFAULT = ("id", "name", "username")
DM_DEFAULT = ("id", "event_type", "text")
LIMITS = {
    "mentions": 450,
    "dm_events": 300,
    "create_tweet": 200,
    "create_dm": 200,
    "user_tweets": 900,
}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def snowflake(when: datetime, sequence: int = 0) -> str:
    """An X id for an instant: milliseconds since X's epoch, shifted, plus a sequence."""
    ms = int(when.timestamp() * 1000) - TWITTER_EPOCH_MS
    return str((ms << 22) | (sequence & 0x3FFFFF))


def x_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass
class Rule:
    """One injected answer: the next `times` requests matching `path`/`when` get it."""

    method: str
    path: str  # a substring of the request path
    status: int
    body: Any
    times: int = 1
    reset_in: float | None = None  # seconds until x-rate-limit-reset
    when: Callable[[dict[str, str]], bool] | None = None
    hits: int = 0


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    status: int
    at: float
    body: Any = None


@dataclass
class Window:
    limit: int
    remaining: int
    reset: int


@dataclass
class FakeX:
    account_id: str = ACCOUNT_ID
    credentials: dict[str, str] = field(default_factory=lambda: dict(CREDENTIALS))
    bearer_token: str | None = None
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    mentions: list[dict[str, Any]] = field(default_factory=list)
    dm_events: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)  # our own tweets
    posted_tweets: list[dict[str, Any]] = field(default_factory=list)
    posted_dms: list[dict[str, Any]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=lambda: dict(LIMITS))
    window_seconds: float = 900.0
    # Called (in the fake's thread) before a matching request is answered.
    before: list[tuple[str, Callable[[dict[str, str]], None]]] = field(default_factory=list)
    # While set, POSTs are recorded (the tweet/DM exists) and then never answered.
    hold_posts: bool = False
    # While set, POSTs are never answered and nothing is created (the request was lost).
    drop_posts: bool = False
    post_received: threading.Event = field(default_factory=threading.Event)
    # Uploaded media by id: media_type, category, total_bytes, chunks by segment index, and
    # once finalized the whole bytes ("data") and the processing state.
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The check_after_secs a video's or GIF's FINALIZE answers (X processes those first).
    processing_wait: int = 1
    # X had processed the GIF or video by the time it answered FINALIZE: "succeeded" there.
    finalize_done: bool = False
    # How many STATUS requests about one medium are answered "in_progress" (with
    # `status_wait` as check_after_secs) before processing ends as `processing_result`;
    # None: "in_progress" for ever, or rather up to PROCESSING_FOREVER answers, so that a
    # sender that waits without a bound of its own fails its test instead of hanging it.
    processing_rounds: int | None = 0
    status_wait: int = 1
    processing_result: str = "succeeded"
    # Seconds each APPEND takes before its answer: a slow link to the upload host.
    append_delay: float = 0.0
    # Every upload request's command as it arrived (an APPEND before its delay).
    upload_commands: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._tokens: dict[str, tuple[str, str]] = {}
        self._windows: dict[str, Window] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._release = threading.Event()
        self.base_url = ""
        self._sequence = 0

    # --- the world ---------------------------------------------------------------------

    @classmethod
    def from_fixtures(cls, **kwargs: Any) -> FakeX:
        fake = cls(**kwargs)
        fake.users = {u["id"]: u for u in fixture("users.json")}
        fake.mentions = fixture("mentions.json")
        fake.dm_events = fixture("dm_events.json")
        return fake

    def add_user(self, user: dict[str, Any]) -> None:
        self.users[user["id"]] = user

    def next_id(self, when: datetime | None = None) -> str:
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
        return snowflake(when or datetime.now(UTC), sequence)

    def add_mention(
        self, author_id: str, text: str, when: datetime | None = None, **extra: Any
    ) -> dict[str, Any]:
        when = when or datetime.now(UTC)
        tweet_id = self.next_id(when)
        tweet = {
            "id": tweet_id,
            "text": text,
            "edit_history_tweet_ids": [tweet_id],
            "author_id": author_id,
            "conversation_id": extra.pop("conversation_id", tweet_id),
            "created_at": x_time(when),
            "lang": "en",
            **extra,
        }
        self.mentions.append(tweet)
        return tweet

    def add_dm(self, sender_id: str, text: str, when: datetime | None = None) -> dict[str, Any]:
        when = when or datetime.now(UTC)
        pair = sorted([sender_id, self.account_id], key=int)
        event = {
            "id": self.next_id(when),
            "event_type": "MessageCreate",
            "text": text,
            "sender_id": sender_id,
            "dm_conversation_id": "-".join(pair),
            "participant_ids": pair,
            "created_at": x_time(when),
        }
        self.dm_events.append(event)
        return event

    def inject(
        self,
        path: str,
        status: int,
        body: Any,
        *,
        method: str = "GET",
        times: int = 1,
        reset_in: float | None = None,
        when: Callable[[dict[str, str]], bool] | None = None,
    ) -> Rule:
        if isinstance(body, str) and body.endswith(".json"):
            body = fixture(body)
        rule = Rule(method, path, status, body, times, reset_in, when)
        self.rules.append(rule)
        return rule

    def requests(self, path: str, method: str = "GET") -> list[Seen]:
        return [s for s in self.seen if path in s.path and s.method == method]

    # --- serving -----------------------------------------------------------------------

    def start(self) -> str:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.base_url = f"http://127.0.0.1:{port}"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-x", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.base_url

    def stop(self) -> None:
        self._release.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def release_posts(self) -> None:
        self._release.set()

    async def _handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        path = request.path
        body: Any = None
        if path == UPLOAD_PATH:
            status, payload = await self._upload(request, query)
            self.seen.append(Seen(request.method, path, query, status, time.time(), None))
            if payload is None:
                return web.Response(status=status)
            return web.json_response(payload, status=status)
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        status, payload, headers = await self._answer(request, path, query, body)
        self.seen.append(Seen(request.method, path, query, status, time.time(), body))
        return web.json_response(payload, status=status, headers=headers)

    async def _answer(
        self, request: web.Request, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        endpoint = _endpoint(request.method, path)
        user_context = self._user_context(request, path, query)
        app_only = self._app_only(request)
        if not user_context and not app_only:
            return 401, fixture("errors/401_unauthorized.json"), {}
        for prefix, hook in self.before:
            if prefix in path:
                await asyncio.get_running_loop().run_in_executor(None, hook, query)
        window = self._window(endpoint)
        headers = {
            "x-rate-limit-limit": str(window.limit),
            "x-rate-limit-reset": str(window.reset),
        }
        for rule in self.rules:
            if (
                rule.hits < rule.times
                and rule.method == request.method
                and rule.path in path
                and (rule.when is None or rule.when(query))
            ):
                rule.hits += 1
                if rule.reset_in is not None:
                    headers["x-rate-limit-reset"] = str(int(time.time() + rule.reset_in))
                    headers["x-rate-limit-remaining"] = "0"
                else:
                    headers["x-rate-limit-remaining"] = str(window.remaining)
                return rule.status, rule.body, headers
        if window.remaining <= 0:
            headers["x-rate-limit-remaining"] = "0"
            return 429, fixture("errors/429_too_many_requests.json"), headers
        window.remaining -= 1
        headers["x-rate-limit-remaining"] = str(window.remaining)
        if app_only and not user_context and endpoint not in ("mentions", "user_tweets"):
            return 403, fixture("errors/403_unsupported_authentication.json"), headers
        parts = path.strip("/").split("/")
        if request.method == "POST" and self.drop_posts:
            self.post_received.set()
            await asyncio.get_running_loop().run_in_executor(None, self._release.wait, 60)
            return 503, fixture("errors/503_service_unavailable.json"), headers
        if request.method == "GET" and endpoint == "mentions":
            return (*self._mentions(parts[2], query), headers)
        if request.method == "GET" and endpoint == "user_tweets":
            return (*self._user_tweets(query), headers)
        if request.method == "GET" and endpoint == "dm_events":
            participant = parts[3] if len(parts) > 3 and parts[2] == "with" else None
            return (*self._dm_events(query, participant), headers)
        if request.method == "POST" and endpoint == "create_tweet":
            answer = self._create_tweet(body or {})
        elif request.method == "POST" and endpoint == "create_dm":
            answer = self._create_dm(parts[3], body or {})
        else:
            return 404, {"title": "Not Found Error", "detail": f"no route {path}"}, headers
        if self.hold_posts:
            self.post_received.set()
            await asyncio.get_running_loop().run_in_executor(None, self._release.wait, 60)
        return (*answer, headers)

    def _window(self, endpoint: str) -> Window:
        now = time.time()
        with self._lock:
            window = self._windows.get(endpoint)
            if window is None or now >= window.reset:
                limit = self.limits.get(endpoint, 300)
                window = Window(limit, limit, int(now + self.window_seconds) + 1)
                self._windows[endpoint] = window
            return window

    # --- authentication ------------------------------------------------------------------

    def _app_only(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return bool(self.bearer_token) and hmac.compare_digest(
            header, f"Bearer {self.bearer_token}"
        )

    def _user_context(
        self,
        request: web.Request,
        path: str,
        query: dict[str, str],
        form: list[tuple[str, str]] | None = None,
        host: str = X_HOST,
    ) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("OAuth "):
            return False
        params = dict(parse_authorization_header(header))
        creds = self.credentials
        if params.get("oauth_consumer_key") != creds["TWITTER_CONSUMER_KEY"]:
            return False
        if params.get("oauth_token") != creds["TWITTER_ACCESS_TOKEN"]:
            return False
        # X checks the signature over its own URL, whatever host the request came through.
        # A form body's fields are signed too (OAuth 1.0a); a multipart body's are not.
        collected = oauth_signature.collect_parameters(
            uri_query=request.rel_url.raw_query_string,
            body=form or [],
            headers={"Authorization": header},
            exclude_oauth_signature=True,
        )
        base = oauth_signature.signature_base_string(
            request.method,
            oauth_signature.base_string_uri(host + path),
            oauth_signature.normalize_parameters(collected),
        )
        expected = oauth_signature.sign_hmac_sha1_with_client(
            base,
            SimpleNamespace(
                client_secret=creds["TWITTER_CONSUMER_SECRET"],
                resource_owner_secret=creds["TWITTER_ACCESS_TOKEN_SECRET"],
            ),
        )
        return hmac.compare_digest(expected, unquote(params.get("oauth_signature", "")))

    # --- endpoints -------------------------------------------------------------------------

    def _page(
        self, kind: str, items: list[dict[str, Any]], query: dict[str, str]
    ) -> tuple[list[dict[str, Any]], str | None] | None:
        """Newest first, `max_results` per page, opaque tokens naming where the next starts."""
        ordered = sorted(items, key=lambda i: int(i["id"]), reverse=True)
        token = query.get("pagination_token")
        if token:
            entry = self._tokens.get(token)
            if entry is None or entry[0] != kind:
                return None
            ordered = [i for i in ordered if int(i["id"]) < int(entry[1])]
        size = max(1, min(int(query.get("max_results", "100")), 100))
        page, rest = ordered[:size], ordered[size:]
        next_token = None
        if rest:
            next_token = secrets.token_hex(16)
            self._tokens[next_token] = (kind, page[-1]["id"])
        return page, next_token

    def _bad_token(self, query: dict[str, str]) -> tuple[int, Any]:
        body = copy.deepcopy(fixture("errors/400_invalid_pagination_token.json"))
        token = query.get("pagination_token", "")
        body["errors"][0]["parameters"]["pagination_token"] = [token]
        body["errors"][0]["message"] = body["errors"][0]["message"].replace("PLACEHOLDER", token)
        return 400, body

    def _mentions(self, user_id: str, query: dict[str, str]) -> tuple[int, Any]:
        mentioned = [t for t in self.mentions if user_id == self.account_id]
        since = query.get("since_id")
        if since:
            mentioned = [t for t in mentioned if int(t["id"]) > int(since)]
        paged = self._page("mentions", mentioned, query)
        if paged is None:
            return self._bad_token(query)
        page, next_token = paged
        if not page:
            return 200, {"meta": {"result_count": 0}}
        fields = _fields(query, "tweet.fields", TWEET_DEFAULT)
        data = [_select(t, fields) for t in page]
        answer: dict[str, Any] = {"data": data}
        if "author_id" in _list(query.get("expansions")):
            answer.update(self._includes([t["author_id"] for t in page], query, "author_id"))
        meta: dict[str, Any] = {
            "result_count": len(page),
            "newest_id": page[0]["id"],
            "oldest_id": page[-1]["id"],
        }
        if next_token:
            meta["next_token"] = next_token
        answer["meta"] = meta
        return 200, answer

    def _dm_events(self, query: dict[str, str], participant: str | None) -> tuple[int, Any]:
        events = self.dm_events
        if participant is not None:
            events = [e for e in events if participant in e.get("participant_ids", [])]
        types = _list(query.get("event_types"))
        if types:
            events = [e for e in events if e.get("event_type") in types]
        paged = self._page(f"dm:{participant}", events, query)
        if paged is None:
            return self._bad_token(query)
        page, next_token = paged
        if not page:
            return 200, {"meta": {"result_count": 0}}
        fields = _fields(query, "dm_event.fields", DM_DEFAULT)
        answer: dict[str, Any] = {"data": [_select(e, fields) for e in page]}
        if "sender_id" in _list(query.get("expansions")):
            answer.update(self._includes([e["sender_id"] for e in page], query, "sender_id"))
        meta: dict[str, Any] = {"result_count": len(page)}
        if next_token:
            meta["next_token"] = next_token
        answer["meta"] = meta
        return 200, answer

    def _user_tweets(self, query: dict[str, str]) -> tuple[int, Any]:
        tweets = list(self.timeline)
        start = query.get("start_time")
        if start:
            after = datetime.fromisoformat(start.replace("Z", "+00:00"))
            tweets = [
                t
                for t in tweets
                if datetime.fromisoformat(t["created_at"].replace("Z", "+00:00")) >= after
            ]
        paged = self._page("timeline", tweets, query)
        if paged is None:
            return self._bad_token(query)
        page, next_token = paged
        if not page:
            return 200, {"meta": {"result_count": 0}}
        fields = _fields(query, "tweet.fields", TWEET_DEFAULT)
        meta: dict[str, Any] = {
            "result_count": len(page),
            "newest_id": page[0]["id"],
            "oldest_id": page[-1]["id"],
        }
        if next_token:
            meta["next_token"] = next_token
        return 200, {"data": [_select(t, fields) for t in page], "meta": meta}

    def _includes(self, ids: list[str], query: dict[str, str], parameter: str) -> dict[str, Any]:
        fields = _fields(query, "user.fields", USER_DEFAULT)
        users, errors = [], []
        for user_id in dict.fromkeys(ids):
            user = self.users.get(user_id)
            if user is None:
                errors.append(
                    {
                        "value": user_id,
                        "detail": f"Could not find user with {parameter}: [{user_id}].",
                        "title": "Not Found Error",
                        "resource_type": "user",
                        "parameter": parameter,
                        "resource_id": user_id,
                        "type": "https://api.twitter.com/2/problems/resource-not-found",
                    }
                )
            else:
                users.append(_select(user, fields))
        answer: dict[str, Any] = {"includes": {"users": users}} if users else {}
        if errors:
            answer["errors"] = errors
        return answer

    def _create_tweet(self, body: dict[str, Any]) -> tuple[int, Any]:
        text = str(body.get("text", ""))
        if any(t["text"] == text for t in self.timeline):
            return 403, fixture("errors/403_duplicate_content.json")
        now = datetime.now(UTC)
        tweet_id = self.next_id(now)
        tweet: dict[str, Any] = {
            "id": tweet_id,
            "text": text,
            "edit_history_tweet_ids": [tweet_id],
            "author_id": self.account_id,
            "created_at": x_time(now),
        }
        reply_to = (body.get("reply") or {}).get("in_reply_to_tweet_id")
        if reply_to:
            tweet["referenced_tweets"] = [{"type": "replied_to", "id": str(reply_to)}]
            parent = next((t for t in self.mentions if t["id"] == str(reply_to)), None)
            tweet["conversation_id"] = parent["conversation_id"] if parent else str(reply_to)
            if parent:
                tweet["in_reply_to_user_id"] = parent["author_id"]
        else:
            tweet["conversation_id"] = tweet_id
        self.timeline.append(tweet)
        self.posted_tweets.append(tweet)
        return 201, {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}}

    # --- v1.1 media upload ----------------------------------------------------------------

    async def _upload(self, request: web.Request, query: dict[str, str]) -> tuple[int, Any]:
        fields: dict[str, str] = {}
        chunk: bytes | None = None
        form: list[tuple[str, str]] = []
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                assert isinstance(part, BodyPartReader)
                if part.name == "media":
                    chunk = bytes(await part.read())
                elif part.name:
                    fields[part.name] = await part.text()
        elif request.method == "POST":
            posted = await request.post()
            form = [(k, str(v)) for k, v in posted.items()]
            fields = dict(form)
        else:
            fields = dict(query)
        if not self._user_context(request, UPLOAD_PATH, query, form, UPLOAD_HOST):
            return 401, {"errors": [{"code": 32, "message": "Could not authenticate you."}]}
        for rule in self.rules:
            if (
                rule.hits < rule.times
                and rule.method == request.method
                and rule.path in UPLOAD_PATH
                and (rule.when is None or rule.when(fields))
            ):
                rule.hits += 1
                return rule.status, rule.body
        command = fields.get("command", "")
        self.upload_commands.append(command)
        media = self.media.get(fields.get("media_id", ""))
        if command == "INIT":
            return self._upload_init(fields)
        if media is None:
            return 400, {"errors": [{"code": 324, "message": "Invalid media id."}]}
        if command == "APPEND" and request.method == "POST" and chunk is not None:
            await asyncio.sleep(self.append_delay)
            index = int(fields.get("segment_index", "-1"))
            if not 0 <= index <= 999 or len(chunk) > 5 * 1024 * 1024 or "data" in media:
                return 400, {"errors": [{"code": 324, "message": "Invalid segment."}]}
            media["chunks"][index] = chunk
            return 204, None
        if command == "FINALIZE" and request.method == "POST":
            data = b"".join(media["chunks"][i] for i in sorted(media["chunks"]))
            if len(data) != media["total_bytes"]:
                message = "Segments do not add up to provided total file size."
                return 400, {"errors": [{"code": 324, "message": message}]}
            media["data"] = data
            answer = self._media_answer(media)
            if media["category"] in ("dm_gif", "dm_video") and self.finalize_done:
                media["state"] = "succeeded"
                answer["processing_info"] = {"state": "succeeded", "progress_percent": 100}
            elif media["category"] in ("dm_gif", "dm_video"):
                media["state"] = "pending"
                info = {"state": "pending", "check_after_secs": self.processing_wait}
                answer["processing_info"] = info
            else:
                media["state"] = "succeeded"
            return 201, answer
        if command == "STATUS" and request.method == "GET":
            return 200, self._status(media)
        return 400, {"errors": [{"code": 214, "message": f"Bad command {command!r}."}]}

    def _status(self, media: dict[str, Any]) -> dict[str, Any]:
        """STATUS: "in_progress" for `processing_rounds` answers, then `processing_result`."""
        answer = self._media_answer(media)
        if media.get("state") in ("pending", "in_progress"):
            media["status_asked"] = asked = media.get("status_asked", 0) + 1
            rounds = self.processing_rounds
            if rounds is None:
                rounds = PROCESSING_FOREVER
            if asked <= rounds:
                media["state"] = "in_progress"
                percent = min(99, 100 * asked // (rounds + 1))
                answer["processing_info"] = {
                    "state": "in_progress",
                    "check_after_secs": self.status_wait,
                    "progress_percent": percent,
                }
                return answer
            media["state"] = self.processing_result
        info: dict[str, Any] = {"state": media.get("state"), "progress_percent": 100}
        if media["state"] == "failed":
            info["error"] = dict(PROCESSING_ERROR)
        answer["processing_info"] = info
        return answer

    def _upload_init(self, fields: dict[str, str]) -> tuple[int, Any]:
        kind = fields.get("media_type", "")
        category = fields.get("media_category", "")
        if kind not in DM_CATEGORIES.get(category, set()):
            message = f"media type {kind!r} is not allowed in category {category!r}"
            return 400, {"errors": [{"code": 324, "message": message}]}
        total = int(fields.get("total_bytes", "0") or 0)
        media_id = self.next_id()
        self.media[media_id] = {
            "id": media_id,
            "media_type": kind,
            "category": category,
            "total_bytes": total,
            "chunks": {},
        }
        return 202, {"media_id": int(media_id), "media_id_string": media_id,
                     "expires_after_secs": 86400}  # fmt: skip

    def _media_answer(self, media: dict[str, Any]) -> dict[str, Any]:
        return {
            "media_id": int(media["id"]),
            "media_id_string": media["id"],
            "media_key": f"3_{media['id']}",
            "size": len(media.get("data", b"")),
            "expires_after_secs": 86400,
        }

    def _create_dm(self, participant_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        if participant_id not in self.users:
            return 403, fixture("errors/403_dm_not_permitted.json")
        if self.users[participant_id].get("dm_closed"):
            return 403, fixture("errors/403_dm_not_permitted.json")
        attachments = body.get("attachments") or []
        if len(attachments) > 1:
            return 400, {"title": "Invalid Request", "detail": "Only one attachment allowed."}
        medium = self.media.get(str(attachments[0].get("media_id"))) if attachments else None
        if attachments and (medium is None or medium.get("state") != "succeeded"):
            return 400, {"title": "Invalid Request", "detail": "Invalid media id."}
        if not body.get("text") and medium is None:
            return 400, {"title": "Invalid Request", "detail": "text or attachments required"}
        event = self.add_dm(self.account_id, str(body.get("text", "")))
        pair = sorted([participant_id, self.account_id], key=int)
        event["dm_conversation_id"] = "-".join(pair)
        event["participant_ids"] = pair
        if medium is not None:
            event["attachments"] = {"media_keys": [f"3_{medium['id']}"]}
        self.posted_dms.append({**event, "to": participant_id, "medium": medium})
        return 201, {
            "data": {"dm_conversation_id": event["dm_conversation_id"], "dm_event_id": event["id"]}
        }


def _endpoint(method: str, path: str) -> str:
    if path.endswith("/mentions"):
        return "mentions"
    if path == UPLOAD_PATH:
        return "media_upload"
    if "dm_events" in path:
        return "dm_events"
    if method == "POST" and path == "/2/tweets":
        return "create_tweet"
    if method == "POST" and "/messages" in path:
        return "create_dm"
    if path.endswith("/tweets"):
        return "user_tweets"
    return "other"


def _list(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


def _fields(query: dict[str, str], name: str, default: tuple[str, ...]) -> set[str]:
    return set(default) | set(_list(query.get(name)))


def _select(item: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in item.items() if k in fields}


def backlog(fake: FakeX, count: int, *, start: datetime | None = None, authors: int = 400) -> None:
    """`count` realistic mentions from `authors` different people, one every few seconds."""
    start = start or datetime(2026, 11, 19, 6, 0, tzinfo=UTC)
    phrases = [
        "I can't log in since this morning, the app says my session expired",
        "my account was hacked, someone changed the email address",
        "the reset code never arrives by SMS",
        "I was charged twice for the same order #{n}",
        "how do I close my account? Nothing in the settings works",
        "your app crashes when I open my profile on Android 15",
        "locked out after changing phones, 2FA codes go to the old number",
        "any news on my ticket? Still waiting since Monday",
    ]
    for i in range(count):
        author = f"{1700000000000000000 + (i % authors) * 7919}"
        if author not in fake.users:
            fake.add_user(
                {
                    "id": author,
                    "username": f"user_{i % authors}",
                    "name": f"Customer {i % authors}",
                    "created_at": "2022-03-01T10:00:00.000Z",
                    "verified": (i % authors) % 50 == 0,
                    "verified_type": "none",
                    "public_metrics": {
                        "followers_count": (i * 37) % 20000,
                        "following_count": 100,
                        "tweet_count": 1000,
                        "listed_count": 0,
                        "like_count": 10,
                    },
                }
            )
        text = "@ParityDesk " + phrases[i % len(phrases)].replace("{n}", str(100000 + i))
        fake.add_mention(author, text, start + timedelta(seconds=7 * i))
