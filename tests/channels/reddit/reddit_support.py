"""Shared pieces of the Reddit tests: the fake server fixture and a connector pointed at it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from connectors.reddit.intake import RedditConnector
from connectors.reddit.settings import RedditSettings
from connectors.registry import ConnectorsSettings
from inbox.models import Identity, Intake, Message
from tests.channels.reddit.reddit_fake import FakeReddit

KEYWORDS = ["outage", "hacked", "locked out", "billing", "refund", "2FA"]

# What the fixtures hold, worked out by hand from the files (not by the code under test):
# every inbox item (none is ours) ...
INBOX = {"t4_2kq8v1f", "t1_m5bz2qp", "t1_m5bwq3n", "t4_2kq7h3c", "t4_2kq6z9y", "t4_2kq6m1e"}
# ... the submissions that name a keyword (not "Show-off: my Grafana board") ...
SUBMISSIONS = {"t3_1h9b7kq", "t3_1h98uwx", "t3_1h97m2c"}
# ... and the comments that match or mention us: dana's ("locked out") and Kestrel's
# mention (also in the inbox). Not ours (m5c1k9e), not the Grafana thread's two.
COMMENTS = {"t1_m5c0x4a", "t1_m5bz2qp"}
EVERYTHING = INBOX | SUBMISSIONS | COMMENTS


def reddit_settings(fake: FakeReddit, **overrides: Any) -> RedditSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "oauth_url": fake.url,
        "reddit_url": fake.url,
        "subreddits": ["AcmeCloud"],
        "keywords": KEYWORDS,
        "initial_lookback_hours": 0,
        "outbox_poll_seconds": 0.2,
    }
    values.update(overrides)
    return RedditSettings(**values)


def connector(engine: Engine, fake: FakeReddit, **overrides: Any) -> RedditConnector:
    """A freshly started connector: what a restart of the process gives."""
    reddit = RedditConnector(
        reddit_settings(fake, **overrides), engine, fake.environ(), instance="test"
    )
    reddit.connect()
    return reddit


def routes(reddit: RedditConnector) -> ConnectorsSettings:
    """[connectors] with this connector's Reddit section: the worker's ack route's source."""
    return ConnectorsSettings(reddit=reddit.settings)


def stored_keys(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(Intake.source_key).where(Intake.channel == "reddit").order_by(Intake.id)
            ).scalars()
        )


def messages(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Message).order_by(Message.id)))


def case_of_handle(engine: Engine, handle: str) -> set[int]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(Message.case_id)
                .join(Identity, Identity.id == Message.identity_id)
                .where(Identity.kind == "reddit", Identity.handle == handle)
            ).scalars()
        )
