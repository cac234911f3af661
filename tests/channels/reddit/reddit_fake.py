"""A local fake of the parts of Reddit's API that praw calls for Parity, on an ephemeral port.

It serves the listings in tests/channels/reddit/fixtures (written by us after Reddit's documented
shapes) plus whatever a test adds, pages them as Reddit does (`limit` up to 100, `after`,
`before`), hands out password-grant tokens, sends `X-Ratelimit-*` headers from a real
budget window (a request over the budget gets a 429), and records every request and every
comment or private message it was sent, so tests assert on what "Reddit" received.

aiohttp runs on a thread of its own, because praw is synchronous and tests drive it from
the test's thread (or from the daemon's worker threads).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import math
import re
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures"
ACCOUNT = "AcmeCloudSupport"
CLIENT_ID = "pArItYtEsTcLiEnT"
CLIENT_SECRET = "fake-client-secret-9f2c1e"
PASSWORD = "correct horse battery staple"
BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(number: int) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, 36)
        digits = BASE36[rest] + digits
        if number == 0:
            return digits


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def children(name: str) -> list[dict[str, Any]]:
    return list(fixture(name)["data"]["children"])


@dataclass
class Hit:
    method: str
    path: str
    params: dict[str, str]
    form: dict[str, str]
    status: int
    at: float  # time.monotonic() when the request arrived


@dataclass
class Fault:
    """Answer `status` to matching requests: after `skip` matches, `times` times."""

    method: str
    pattern: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    times: int = 1
    skip: int = 0


class FakeReddit:
    def __init__(
        self,
        *,
        account: str = ACCOUNT,
        budget: int = 10_000_000,  # ample: praw paces itself by it (see the pacing test)
        window_s: float = 600.0,
        load_fixtures: bool = True,
    ) -> None:
        self.account = account
        self.budget = budget
        self.window_s = window_s
        self.window_start: float | None = None
        self.used = 0
        self.over_budget = 0
        self.listings: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.users: dict[str, dict[str, Any]] = {}
        self.me: dict[str, Any] = {**fixture("me.json"), "name": account}
        self.hits: list[Hit] = []
        self.faults: list[Fault] = []
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.posted: list[dict[str, str]] = []  # the forms of POST /api/comment
        self.composed: list[dict[str, str]] = []  # the forms of POST /api/compose
        self.locked: set[str] = set()  # fullnames whose threads are locked
        self.lock = threading.Lock()
        self._next_id = 36**6  # seven base-36 digits, like today's ids
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        if load_fixtures:
            self.load_fixtures()

    # --- content -------------------------------------------------------------------------

    def load_fixtures(self) -> None:
        self.listings["message/inbox"] = children("inbox.json")
        self.listings["r/acmecloud/new"] = children("r_AcmeCloud_new.json")
        self.listings["r/acmecloud/comments"] = children("r_AcmeCloud_comments.json")
        self.users = {k.lower(): v for k, v in fixture("users.json").items()}
        own = [
            c for c in self.listings["r/acmecloud/comments"] if c["data"]["author"] == self.account
        ]
        self.listings[f"user/{self.account.lower()}/comments"] = copy.deepcopy(own)

    def new_id(self) -> str:
        with self.lock:
            self._next_id += 1
            return base36(self._next_id)

    def add(self, key: str, child: dict[str, Any]) -> dict[str, Any]:
        """Put `child` at the top of a listing, as a new item is."""
        with self.lock:
            self.listings[key].insert(0, child)
        return child

    def remove(self, key: str, fullname: str) -> None:
        with self.lock:
            self.listings[key] = [c for c in self.listings[key] if c["data"]["name"] != fullname]

    def newest_created(self, key: str) -> float:
        items = self.listings[key]
        return float(items[0]["data"]["created_utc"]) if items else time.time()

    def find(self, fullname: str) -> dict[str, Any] | None:
        for key, items in self.listings.items():
            if key.startswith("user/"):
                continue
            for child in items:
                if child["data"].get("name") == fullname:
                    return child
        return None

    # --- builders of realistic items (after the fixture shapes) ----------------------------

    def submission(
        self, *, author: str, title: str, selftext: str, created: float, sub: str = "AcmeCloud"
    ) -> dict[str, Any]:
        child = copy.deepcopy(children("r_AcmeCloud_new.json")[0])
        id36 = self.new_id()
        slug = re.sub(r"\W+", "_", title.lower()).strip("_")[:40]
        data = child["data"]
        data.update(
            id=id36,
            name=f"t3_{id36}",
            author=author,
            author_fullname=f"t2_{abs(hash(author)) % 36**6:x}",
            title=title,
            selftext=selftext,
            created=float(created),
            created_utc=float(created),
            num_comments=0,
            subreddit=sub,
            subreddit_name_prefixed=f"r/{sub}",
            permalink=f"/r/{sub}/comments/{id36}/{slug}/",
            url=f"https://www.reddit.com/r/{sub}/comments/{id36}/{slug}/",
        )
        return child

    def comment(
        self,
        *,
        author: str,
        body: str,
        created: float,
        parent: str,
        link: str,
        link_title: str = "",
        sub: str = "AcmeCloud",
    ) -> dict[str, Any]:
        child = copy.deepcopy(children("r_AcmeCloud_comments.json")[1])
        id36 = self.new_id()
        data = child["data"]
        data.update(
            id=id36,
            name=f"t1_{id36}",
            author=author,
            author_fullname=f"t2_{abs(hash(author)) % 36**6:x}",
            body=body,
            created=float(created),
            created_utc=float(created),
            parent_id=parent,
            link_id=link,
            link_title=link_title,
            subreddit=sub,
            subreddit_name_prefixed=f"r/{sub}",
            permalink=f"/r/{sub}/comments/{link[3:]}/_/{id36}/",
        )
        return child

    def inbox_reply(
        self, *, author: str, body: str, created: float, parent: str, link: str, kind: str
    ) -> dict[str, Any]:
        """A comment as the inbox shows it: `comment_reply`, `post_reply` or a mention."""
        child = copy.deepcopy(children("inbox.json")[2])
        id36 = self.new_id()
        data = child["data"]
        data.update(
            id=id36,
            name=f"t1_{id36}",
            author=author,
            body=body,
            created=float(created),
            created_utc=float(created),
            parent_id=parent,
            type=kind,
            subject={"comment_reply": "comment reply", "post_reply": "post reply"}.get(
                kind, "username mention"
            ),
            context=f"/r/AcmeCloud/comments/{link[3:]}/_/{id36}/?context=3",
        )
        return child

    def message(
        self,
        *,
        author: str,
        subject: str,
        body: str,
        created: float,
        first: str | None = None,
        parent: str | None = None,
        dest: str | None = None,
    ) -> dict[str, Any]:
        child = copy.deepcopy(children("inbox.json")[0])
        id36 = self.new_id()
        data = child["data"]
        data.update(
            id=id36,
            name=f"t4_{id36}",
            author=author,
            author_fullname=f"t2_{abs(hash(author)) % 36**6:x}",
            subject=subject,
            body=body,
            created=float(created),
            created_utc=float(created),
            first_message_name=first,
            first_message=int(first[3:], 36) if first else None,
            parent_id=parent,
            dest=dest or self.account,
        )
        return child

    # --- the server ------------------------------------------------------------------------

    def start(self) -> str:
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                app = web.Application()
                app.router.add_route("*", "/{tail:.*}", self._handle)
                runner = web.AppRunner(app, access_log=None)
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                self._runner = runner
                host, port = runner.addresses[0][:2]
                self.url = f"http://{host}:{port}"
            except BaseException as exc:  # surfaced to start()'s caller
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-reddit", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FakeReddit:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def environ(self, **override: str) -> dict[str, str]:
        env = {
            "REDDIT_CLIENT_ID": CLIENT_ID,
            "REDDIT_CLIENT_SECRET": CLIENT_SECRET,
            "REDDIT_USERNAME": self.account,
            "REDDIT_PASSWORD": PASSWORD,
        }
        env.update(override)
        return env

    def praw_kwargs(self) -> dict[str, Any]:
        """What bare praw needs to talk to this fake (the bench's baseline uses it)."""
        return {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "username": self.account,
            "password": PASSWORD,
            "user_agent": "parity-tests/0.1 (fake Reddit)",
            "oauth_url": self.url,
            "reddit_url": self.url,
            "check_for_updates": False,
            "check_for_async": False,
        }

    def requests_to(self, method: str, pattern: str) -> list[Hit]:
        rx = re.compile(pattern)
        return [h for h in self.hits if h.method == method and rx.search(h.path)]

    # --- handlers --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        path = request.path.strip("/").removesuffix(".json")
        form = {k: str(v) for k, v in (await request.post()).items()}
        params = dict(request.query)
        response = self._dispatch(request, path, params, form, now)
        with self.lock:
            self.hits.append(Hit(request.method, path, params, form, response.status, now))
        return response

    def _dispatch(
        self,
        request: web.Request,
        path: str,
        params: dict[str, str],
        form: dict[str, str],
        now: float,
    ) -> web.Response:
        if path == "api/v1/access_token":
            return self._token(request, form)
        token = request.headers.get("Authorization", "")
        if not token.lower().startswith("bearer ") or token[7:] not in self.tokens:
            return web.json_response(
                {"message": "Unauthorized", "error": 401},
                status=401,
                headers={"www-authenticate": 'Bearer realm="reddit", error="invalid_token"'},
            )
        limits, allowed = self._count(now)
        fault = self._fault(request.method, path)
        if fault is not None:
            headers = {**limits, **fault.headers}
            return web.json_response(fault.body or {}, status=fault.status, headers=headers)
        if not allowed:
            self.over_budget += 1
            return web.json_response(
                {"message": "Too Many Requests", "error": 429}, status=429, headers=limits
            )
        answer = self._route(request.method, path, params, form)
        if isinstance(answer, web.Response):
            answer.headers.update(limits)
            return answer
        return web.json_response(answer, headers=limits)

    def _token(self, request: web.Request, form: dict[str, str]) -> web.Response:
        self.token_requests += 1
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization", "") != f"Basic {expected}":
            return web.json_response({"message": "Unauthorized", "error": 401}, status=401)
        if (
            form.get("grant_type") != "password"
            or form.get("username", "").lower() != self.account.lower()
            or form.get("password") != PASSWORD
        ):
            # Reddit answers a wrong password with 200 and an error in the body.
            return web.json_response({"error": "invalid_grant"})
        token = "fake-" + secrets.token_hex(12)
        self.tokens.add(token)
        return web.json_response(
            {"access_token": token, "token_type": "bearer", "expires_in": 86400, "scope": "*"}
        )

    def _count(self, now: float) -> tuple[dict[str, str], bool]:
        with self.lock:
            if self.window_start is None or now >= self.window_start + self.window_s:
                self.window_start = now
                self.used = 0
            allowed = self.used < self.budget
            if allowed:
                self.used += 1
            reset = max(0, math.ceil(self.window_start + self.window_s - now))
            return (
                {
                    "x-ratelimit-used": str(self.used),
                    "x-ratelimit-remaining": f"{float(self.budget - self.used):.1f}",
                    "x-ratelimit-reset": str(reset),
                },
                allowed,
            )

    def _fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method != method or not re.search(fault.pattern, path):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _route(
        self, method: str, path: str, params: dict[str, str], form: dict[str, str]
    ) -> dict[str, Any] | web.Response:
        lowered = path.lower()
        if method == "GET" and lowered == "api/v1/me":
            return self.me
        if method == "GET" and lowered in ("message/inbox", "message/sent"):
            return self._listing(lowered, params)
        match = re.fullmatch(r"r/([a-z0-9_]+)/(new|comments)", lowered)
        if method == "GET" and match:
            return self._listing(lowered, params)
        match = re.fullmatch(r"user/([a-z0-9_-]+)/about", lowered)
        if method == "GET" and match:
            about = self.users.get(match.group(1))
            if about is None:
                return web.json_response({"message": "Not Found", "error": 404}, status=404)
            return about
        match = re.fullmatch(r"user/([a-z0-9_-]+)/comments", lowered)
        if method == "GET" and match:
            return self._listing(lowered, params)
        if method == "POST" and lowered == "api/comment":
            return self._comment(form)
        if method == "POST" and lowered == "api/compose":
            return self._compose(form)
        return web.json_response({"message": "Not Found", "error": 404}, status=404)

    def _listing(self, key: str, params: dict[str, str]) -> dict[str, Any]:
        limit = max(1, min(100, int(params.get("limit", "25"))))
        with self.lock:
            items = list(self.listings.get(key, []))
        names = [c["data"].get("name") for c in items]
        if params.get("after"):
            if params["after"] not in names:
                page: list[dict[str, Any]] = []
                start = len(items)
            else:
                start = names.index(params["after"]) + 1
                page = items[start : start + limit]
        elif params.get("before"):
            end = names.index(params["before"]) if params["before"] in names else 0
            start = max(0, end - limit)
            page = items[start:end]
        else:
            start = 0
            page = items[:limit]
        more = start + len(page) < len(items)
        return {
            "kind": "Listing",
            "data": {
                "after": page[-1]["data"].get("name") if page and more else None,
                "dist": len(page),
                "modhash": None,
                "geo_filter": "",
                "children": copy.deepcopy(page),
                "before": None,
            },
        }

    def _comment(self, form: dict[str, str]) -> dict[str, Any]:
        thing_id = form.get("thing_id", "")
        self.posted.append(dict(form))
        target = self.find(thing_id)
        if target is None:
            return {"json": {"errors": [["DELETED_COMMENT", "that comment is deleted", "parent"]]}}
        if thing_id in self.locked:
            return {"json": {"errors": [["THREAD_LOCKED", "Comments are locked.", "parent"]]}}
        data = target["data"]
        link = data.get("link_id") or (thing_id if thing_id.startswith("t3_") else None)
        if link is None:
            found = re.search(r"/comments/([0-9a-z]+)/", data.get("context", ""))
            link = f"t3_{found.group(1)}" if found else thing_id
        sub = data.get("subreddit") or "AcmeCloud"
        child = self.comment(
            author=self.account,
            body=form.get("text", ""),
            created=time.time(),
            parent=thing_id,
            link=link,
            link_title=data.get("link_title") or data.get("title") or "",
            sub=sub,
        )
        self.add(f"r/{sub.lower()}/comments", child)
        self.add(f"user/{self.account.lower()}/comments", copy.deepcopy(child))
        return {"json": {"errors": [], "data": {"things": [copy.deepcopy(child)]}}}

    def _compose(self, form: dict[str, str]) -> dict[str, Any]:
        self.composed.append(dict(form))
        to = form.get("to", "")
        if to.lower() not in self.users:
            return {"json": {"errors": [["USER_DOESNT_EXIST", "that user doesn't exist", "to"]]}}
        child = self.message(
            author=self.account,
            subject=form.get("subject", ""),
            body=form.get("text", ""),
            created=time.time(),
            dest=self.users[to.lower()]["data"]["name"],
        )
        self.add("message/sent", child)
        return {"json": {"errors": []}}


def insert_by_time(fake: FakeReddit, key: str, child: dict[str, Any]) -> None:
    """Put `child` where its created time puts it: an item Reddit indexed late."""
    created = child["data"]["created_utc"]
    with fake.lock:
        items = fake.listings[key]
        index = next(
            (i for i, c in enumerate(items) if c["data"]["created_utc"] < created), len(items)
        )
        items.insert(index, child)
