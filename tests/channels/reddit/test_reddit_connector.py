"""The Reddit connector with the real praw against the fake Reddit, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from connectors.reddit.intake import (
    Cursor,
    RedditConnector,
    advance,
    keyword_matcher,
    missed,
    passed,
    retry_wait,
)
from inbox import queries
from inbox.models import DeadLetter, Identity, Intake
from normalizer.intake import load_checkpoint
from tests.channels.reddit.reddit_fake import FakeReddit, Fault, insert_by_time
from tests.channels.reddit.reddit_support import (
    COMMENTS,
    EVERYTHING,
    INBOX,
    SUBMISSIONS,
    connector,
    messages,
    reddit_settings,
    stored_keys,
)
from tests.support.helpers import normalize


@pytest.fixture
def fake() -> Iterator[FakeReddit]:
    with FakeReddit() as server:
        yield server


class Crash(BaseException):
    """A process dying: nothing in the connector catches it."""


# --- pure rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created", "cursor", "overlap", "floor", "expected"),
    [
        (100.0, Cursor("t3_a", 100.0), 0, None, False),  # the checkpoint's own second
        (99.0, Cursor("t3_a", 100.0), 0, None, True),
        (50.0, Cursor("t3_a", 100.0), 60, None, False),  # inside the overlap: read again
        (39.0, Cursor("t3_a", 100.0), 60, None, True),
        (10.0, None, 60, None, False),  # first poll without a floor: everything
        (10.0, None, 60, 20.0, True),  # first poll: the lookback floor
        (None, Cursor("t3_a", 100.0), 0, None, False),  # no time: never a stop signal
    ],
)
def test_where_a_walk_stops(created, cursor, overlap, floor, expected):
    assert passed(created, cursor, overlap, floor) is expected


@pytest.mark.parametrize(
    ("cursor", "reached", "oldest", "expected"),
    [
        (Cursor("t3_a", 100.0), False, 150.0, True),  # the listing ended above the checkpoint
        (Cursor("t3_a", 100.0), False, 100.0, False),  # ... or got back to its time
        (Cursor("t3_a", 100.0), True, 150.0, False),
        (None, False, 150.0, False),  # a first poll has nothing to miss
        (Cursor("t3_a", 100.0), False, None, False),  # an empty listing
    ],
)
def test_a_listing_that_ends_too_soon_is_reported(cursor, reached, oldest, expected):
    assert missed(cursor, reached, oldest) is expected


def test_the_checkpoint_never_moves_back():
    old = Cursor("t3_new", 200.0)
    assert advance(old, Cursor("t3_older", 150.0)) == old  # the newest item was deleted
    assert advance(old, Cursor("t3_newer", 250.0)) == Cursor("t3_newer", 250.0)
    assert advance(None, Cursor("t3_x", 1.0)) == Cursor("t3_x", 1.0)
    assert advance(old, None) == old


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("My account was HACKED yesterday", True),
        ("the 2FA prompt never arrives", True),
        ("I'm locked out of everything", True),
        ("hackedness is not a word", False),  # whole words only
        ("hey u/AcmeCloudSupport, look at this", True),  # a mention always counts
        ("hey u/AcmeCloudSupporters fan club", False),
        ("nice dashboard", False),
    ],
)
def test_keyword_matching(text, expected):
    matches = keyword_matcher(["hacked", "2FA", "locked out"], "AcmeCloudSupport")
    assert matches(text) is expected


def test_no_keywords_means_everything():
    assert keyword_matcher([], "AcmeCloudSupport")("anything at all")


@pytest.mark.parametrize(
    ("headers", "attempt", "expected"),
    [
        ({"retry-after": "7"}, 1, 7.0),
        ({"retry-after": "0"}, 1, 1.0),  # never a busy loop
        ({"retry-after": "9000"}, 1, 600.0),  # capped
        ({"x-ratelimit-reset": "42"}, 1, 42.0),
        ({"retry-after": "soon", "x-ratelimit-reset": "3"}, 1, 3.0),
    ],
)
def test_how_long_a_429_is_waited_out(headers, attempt, expected):
    assert retry_wait(headers, attempt, 600) == expected


def test_a_429_without_hints_backs_off_exponentially():
    waits = [retry_wait({}, attempt, 600) for attempt in (1, 2, 3)]
    assert 2 <= waits[0] <= 3 and 4 <= waits[1] <= 6 and 8 <= waits[2] <= 12


# --- intake --------------------------------------------------------------------------------


def test_a_poll_stores_inbox_and_watched_subreddits_once(engine, fake):
    # A comment without keywords in a thread we follow (the "hacked" post) is kept too.
    followed = fake.add(
        "r/acmecloud/comments",
        fake.comment(
            author="quiet_quail",
            body="Following, same thing happened to me.",
            created=fake.newest_created("r/acmecloud/comments") + 5,
            parent="t3_1h98uwx",
            link="t3_1h98uwx",
        ),
    )["data"]["name"]
    reddit = connector(engine, fake)
    report = reddit.poll_once()

    keys = stored_keys(engine)
    assert set(keys) == EVERYTHING | {followed}
    assert len(keys) == len(set(keys))
    by_source = {s.key: s for s in report.sources}
    assert by_source["r/acmecloud/comments"].own == 1  # our own comment never comes in
    assert by_source["r/acmecloud/comments"].duplicates == 1  # the mention, seen in the inbox
    assert by_source["r/acmecloud/new"].filtered == 1  # the Grafana show-off
    # Each source's checkpoint is its newest item, whether stored or not.
    for key, listing in (
        ("inbox", "message/inbox"),
        ("r/acmecloud/new", "r/acmecloud/new"),
        ("r/acmecloud/comments", "r/acmecloud/comments"),
    ):
        top = fake.listings[listing][0]["data"]
        assert load_checkpoint(engine, "reddit", key) == {
            "newest": top["name"],
            "created_utc": top["created_utc"],
        }
    # Within a source, items are stored oldest first, as they were written.
    inbox_order = [k for k in keys if k in INBOX]
    expected_order = [
        c["data"]["name"]
        for c in sorted(fake.listings["message/inbox"], key=lambda c: c["data"]["created_utc"])
    ]
    assert inbox_order == expected_order

    outcomes = normalize(engine)
    assert Counter(o.state for o in outcomes) == {"done": len(keys)}
    rows = {m.external_id: m for m in messages(engine)}
    assert rows["t4_2kq8v1f"].visibility == "private"
    assert rows["t1_m5c0x4a"].visibility == "public"
    assert rows["t3_1h98uwx"].visibility == "public"
    # The karma of the authors is stored on their identities.
    with engine.connect() as conn:
        facts = dict(conn.execute(select(Identity.handle, Identity.facts)).all())
    assert facts["kestrel_dev"] == {"link_karma": 15230, "comment_karma": 48211}


def test_two_overlapping_polls_with_a_restart_between_them_store_every_item_once(engine, fake):
    first = connector(engine, fake)
    first.poll_once()
    before = set(stored_keys(engine))
    assert before == EVERYTHING

    # While we were down: the newest inbox item was deleted, new items arrived, and one
    # item dated inside the overlap window was indexed late, below the old top.
    inbox_top = fake.listings["message/inbox"][0]["data"]
    fake.remove("message/inbox", inbox_top["name"])
    late = fake.message(
        author="late_lark",
        subject="Password reset link expired",
        body="The reset link says expired even when I click it at once.",
        created=inbox_top["created_utc"] - 30,
    )
    insert_by_time(fake, "message/inbox", late)
    fresh = fake.add(
        "message/inbox",
        fake.message(
            author="new_newt",
            subject="Refund?",
            body="Where is my refund?",
            created=inbox_top["created_utc"] + 60,
        ),
    )
    post = fake.add(
        "r/acmecloud/new",
        fake.submission(
            author="nightowl_ops",
            title="Billing page is blank",
            selftext="The billing page shows nothing since this morning.",
            created=fake.newest_created("r/acmecloud/new") + 60,
        ),
    )
    added = {late["data"]["name"], fresh["data"]["name"], post["data"]["name"]}

    second = connector(engine, fake)  # a restart: nothing in memory
    report = second.poll_once()
    keys = stored_keys(engine)
    assert Counter(keys).most_common(1)[0][1] == 1
    assert set(keys) == before | added
    # The overlap really re-read items of the first poll, and they changed nothing.
    assert sum(s.duplicates for s in report.sources) > 0
    assert report.stored == len(added)
    # The inbox checkpoint moved to the new top, never back to an older item.
    assert (load_checkpoint(engine, "reddit", "inbox") or {})["newest"] == fresh["data"]["name"]
    outcomes = normalize(engine)
    assert len(outcomes) == len(keys)
    assert len(messages(engine)) == len(keys)


def _backlog(fake: FakeReddit, count: int) -> set[str]:
    """`count` keyword-matching submissions, newest on top."""
    start = fake.newest_created("r/acmecloud/new")
    names = set()
    for n in range(count):
        child = fake.submission(
            author=f"user_{n % 17}",
            title=f"Outage report {n}",
            selftext=f"Region {n % 5} returns 502 since the update.",
            created=start + 1 + n,
        )
        fake.add("r/acmecloud/new", child)
        names.add(child["data"]["name"])
    return names


def test_a_429_mid_poll_is_waited_out_and_nothing_is_lost(engine, fake):
    backlog = _backlog(fake, 230)  # three pages of /new
    fake.faults.append(
        Fault("GET", r"^r/AcmeCloud/new$", 429, headers={"retry-after": "1"}, skip=1)
    )
    reddit = connector(engine, fake, watch_comments=False, fetch_karma=False)
    report = reddit.poll_once()

    assert {s.key: s.error for s in report.sources} == {"inbox": None, "r/acmecloud/new": None}
    assert set(stored_keys(engine)) == INBOX | SUBMISSIONS | backlog
    pages = fake.requests_to("GET", r"^r/AcmeCloud/new$")
    assert [h.status for h in pages] == [200, 429, 200, 200]
    # The same page was asked for again, after the wait Reddit asked for.
    assert pages[1].params.get("after") == pages[2].params.get("after") is not None
    assert pages[2].at - pages[1].at >= 1.0
    details = reddit.health.details["rate_limit"]
    assert details["too_many_requests"] == 1
    assert details["waited_seconds"] >= 1.0


def test_praw_paces_itself_by_the_ratelimit_headers(engine):
    # Two requests per second: praw must sleep until the window resets, or the fake
    # answers 429 (it counts those as over_budget).
    with FakeReddit(budget=2, window_s=1.0) as fake:
        backlog = _backlog(fake, 330)  # four pages
        reddit = connector(
            engine,
            fake,
            subreddits=["AcmeCloud"],
            inbox=False,
            watch_comments=False,
            fetch_karma=False,
        )
        reddit.poll_once()
        assert set(stored_keys(engine)) == SUBMISSIONS | backlog
        api = [h for h in fake.hits if h.path != "api/v1/access_token"]
        assert len(api) > 2 * fake.budget  # more requests than one window allows
        assert fake.over_budget == 0
        assert reddit.health.details["rate_limit"]["too_many_requests"] == 0
        # No window ever saw more than its budget.
        per_window: Counter[int] = Counter()
        start = api[0].at
        for hit in api:
            per_window[int((hit.at - start) // fake.window_s)] += 1
        assert max(per_window.values()) <= fake.budget


def test_a_crash_between_fetch_and_commit_fetches_again_without_doubling(engine, fake):
    crashed: list[int] = []

    def crash_once(source, items):
        if source.key == "r/acmecloud/new" and not crashed:
            crashed.append(len(items))
            raise Crash

    reddit = RedditConnector(
        reddit_settings(fake), engine, fake.environ(), before_commit=crash_once
    )
    reddit.connect()
    with pytest.raises(Crash):
        reddit.poll_once()
    assert crashed == [len(SUBMISSIONS)]
    assert set(stored_keys(engine)) == INBOX  # committed before the crash; /new was not
    assert load_checkpoint(engine, "reddit", "r/acmecloud/new") is None

    connector(engine, fake).poll_once()  # the restart
    keys = stored_keys(engine)
    assert set(keys) == EVERYTHING
    assert len(keys) == len(set(keys))
    assert len(fake.requests_to("GET", r"^r/AcmeCloud/new$")) == 2  # fetched again


def test_an_item_without_a_name_is_kept_as_a_dead_letter(engine, fake):
    broken = {"kind": "t1", "data": {"body": "outage everywhere", "author": "odd_one"}}
    fake.add("r/acmecloud/comments", broken)
    connector(engine, fake).poll_once()
    connector(engine, fake).poll_once()  # seen again: the same intake
    normalize(engine)
    with engine.connect() as conn:
        letters = conn.execute(select(DeadLetter.error, DeadLetter.raw_sha256)).all()
        unnamed = conn.execute(
            select(Intake.source_key).where(Intake.source_key.like("unnamed:%"))
        ).all()
    assert len(unnamed) == 1
    assert len(letters) == 1 and "fullname" in letters[0].error
    assert json.loads(queries_blob(engine, letters[0].raw_sha256)) == broken


def queries_blob(engine: Any, sha: str) -> bytes:
    from inbox.models import Blob

    with engine.connect() as conn:
        return bytes(conn.execute(select(Blob.data).where(Blob.sha256 == sha)).scalar_one())


def test_karma_is_stored_and_never_changes_the_queue_order(engine, fake):
    connector(engine, fake).poll_once()
    normalize(engine)
    order = [c["reference"] for c in queries.list_cases(engine)]
    with engine.begin() as conn:
        handles = list(conn.execute(select(Identity.id, Identity.facts)).all())
        assert any(f for _, f in handles)  # karma was stored
        # Turn the karma upside down: the most karma to whoever had the least.
        for rank, (identity_id, _) in enumerate(handles):
            conn.execute(
                update(Identity)
                .where(Identity.id == identity_id)
                .values(facts={"link_karma": 10**6 * (rank + 1), "comment_karma": 0})
            )
    assert [c["reference"] for c in queries.list_cases(engine)] == order


# --- failures of the account ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"REDDIT_PASSWORD": "wrong password"}, "invalid_grant"),
        ({"REDDIT_CLIENT_SECRET": "wrong-secret"}, "client id or secret was refused"),
    ],
)
async def test_an_auth_failure_disables_the_connector_without_a_crash_loop(
    engine, fake, env, reason
):
    reddit = RedditConnector(reddit_settings(fake), engine, fake.environ(**env))
    stop = asyncio.Event()
    task = asyncio.create_task(reddit.run(stop))
    for _ in range(100):
        if reddit.disabled_reason:
            break
        await asyncio.sleep(0.05)
    assert reddit.disabled_reason and reason in reddit.disabled_reason
    await asyncio.sleep(0.5)
    assert not task.done()  # waiting quietly, not crashed, not retrying
    assert fake.token_requests == 1
    assert reddit.health.details["disabled_reason"] == reddit.disabled_reason
    assert reason in (reddit.health.last_error or "")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert stored_keys(engine) == []


def test_a_private_subreddit_fails_alone(engine, fake):
    fake.faults.append(
        Fault("GET", r"^r/AcmeCloud/comments$", 403, body={"reason": "private"}, times=5)
    )
    report = connector(engine, fake).poll_once()
    errors = {s.key: s.error for s in report.sources}
    assert errors["inbox"] is None and errors["r/acmecloud/new"] is None
    assert "Forbidden" in (errors["r/acmecloud/comments"] or "")
    assert set(stored_keys(engine)) == INBOX | SUBMISSIONS
    assert COMMENTS - INBOX  # dana's comment is the one that waits for the next poll
