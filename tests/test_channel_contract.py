"""The channel contract: what every channel of the registry must do, one parametrised suite.

Every test here is parametrised over `inbox.channels.CHANNEL_NAMES`, so a channel added to
the registry is in the suite at once, and fails it until it brings what the contract asks:

- `parse`: its fixture inputs, delivered the way its connector delivers them (the connector's
  own source key and envelope), parse through `normalizer.parse.parse` into messages of it;
- `idempotent`: the same input delivered twice is stored once and makes one message;
- `acknowledged`: a new case is acknowledged once, on its reply channel, with the promised
  time (`eta_at`) in the audit row `acknowledgement.queued`;
- `reply_route`: a reply goes to the contact's identity, on the registry's reply channel
  (a voice message is answered by sms);
- `retry`: a send that fails for now is retried on the shared curve (`inbox.outbox.backoff`)
  and the case shows it: once through the shared outbox step, and once through the
  channel's real sender in the shared drainer, against its provider's local fake failing
  (a relay answering 421, Twilio and X answering 503, Reddit answering 429, whose sender
  keeps Reddit's Retry-After instead of the curve and says why in `failing_send`);
- `takeover`: a killed instance is taken over. That test kills processes and takes a minute
  per connector, so it is not run again here: TAKEOVER_TESTS names it for every polling
  connector, and a test checks the mapping.

A channel that cannot keep a part says why in SKIPS; a skip without a reason, or for a part
or channel that does not exist, fails. The end-to-end sending half (a real acknowledgement
through each channel's real client) lives in tests/test_outbox_shared.py.
"""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import Engine, func, select

import connectors
from connectors.config import OutboxSettings
from connectors.meta.graph import Graph
from connectors.meta.outbox import MetaSender
from connectors.meta.parse import events as meta_events
from connectors.outbox import OutboxDrainer
from connectors.poller import Poller
from connectors.registry import parser_table
from connectors.smtp.server import source_key as smtp_source_key
from connectors.telegram.intake import TelegramPoller
from connectors.telegram.outbox import TelegramSender
from connectors.twilio.outbox import TwilioSmsSender
from connectors.twilio.outbox import make_client as make_twilio_client
from connectors.twilio.parse import source_key as twilio_source_key
from connectors.webform.parse import source_key as webform_source_key
from inbox.accounts import Principal
from inbox.casework import case_view
from inbox.channels import (
    CHANNEL_FACTS,
    CHANNEL_NAMES,
    CONNECTOR_CHANNELS,
    REPLY_CHANNELS_OF_KIND,
    channels_of,
    fold_handle,
)
from inbox.models import AuditLog, Blob, Case, Identity, Intake, Message, Outbox, User, utcnow
from inbox.outbox import Result, backoff, claim, record
from inbox.secrets import Secret
from normalizer.intake import RawInput, store
from normalizer.mail import Caps
from normalizer.message import InboundMessage
from normalizer.parse import parse
from tests.channels.meta.support import FIXTURES as META_FIXTURES
from tests.channels.meta.support import PAGE_TOKEN as META_PAGE_TOKEN
from tests.channels.meta.support import WA_TOKEN as META_WA_TOKEN
from tests.channels.meta.support import body_of as meta_body
from tests.channels.meta.support import error as graph_error
from tests.channels.meta.support import fake_graph
from tests.channels.meta.support import settings as meta_settings
from tests.channels.reddit.reddit_fake import FakeReddit, Fault
from tests.channels.reddit.reddit_support import connector as reddit_connector
from tests.channels.telegram.support import PRIVATE as TELEGRAM_PRIVATE
from tests.channels.telegram.support import TOKEN as TELEGRAM_TOKEN
from tests.channels.telegram.support import fake_bot_api
from tests.channels.telegram.support import refused as telegram_refused
from tests.channels.telegram.support import settings as telegram_settings
from tests.channels.twilio.twilio_support import ACCOUNT as TWILIO_ACCOUNT
from tests.channels.twilio.twilio_support import TOKEN as TWILIO_TOKEN
from tests.channels.twilio.twilio_support import fake_twilio
from tests.channels.twilio.twilio_support import fixture as twilio_fixture
from tests.channels.twilio.twilio_support import settings as twilio_settings
from tests.channels.twitter.fake_x import FakeX
from tests.channels.twitter.support import connector as twitter_connector
from tests.channels.twitter.support import settings_for
from tests.support.helpers import fixture_bytes, normalize, smtp_envelope
from tests.support.inbox_helpers import make_user
from tests.support.outbox_helpers import drainer_for

TESTS = Path(__file__).parent
PARTS = ("parse", "idempotent", "acknowledged", "reply_route", "retry", "takeover")

# (channel, part) -> why that channel does not keep that part. Checked below: every entry
# names a channel of the registry and a part of the contract, and gives a reason.
# No channel skips a part today; an entry reads
#   ("voice", "retry"): "why voice cannot keep it",
SKIPS: dict[tuple[str, str], str] = {
    # The contact form's acknowledgement and replies are delivered by being on its pages
    # (StatusPageSender): there is no provider to fail for now. The shared curve is the
    # same for its rows (tests/channels/webform/test_status_page.py drains them).
    ("web", "retry"): "delivered by the status page (StatusPageSender): no provider to fail",
}

# A killed instance is taken over: the test that proves it for each polling connector. They
# start the daemon twice, SIGKILL the active one and check the standby takes over with
# nothing lost or doubled; too slow to run again here (tests/test_takeover.py).
TAKEOVER_TESTS: dict[str, tuple[str, str]] = {
    # One IMAP folder is polled by one instance; the standby takes the folder over.
    "imap": (
        "tests/test_takeover.py",
        "test_imap_standby_takes_over_a_folder_after_a_sigkill_nothing_lost_or_doubled",
    ),
    # Mentions and DMs, each under its poller lock.
    "twitter": (
        "tests/channels/twitter/test_takeover.py",
        "test_the_standby_takes_over_after_a_sigkill_nothing_lost_or_doubled",
    ),
    "reddit": (
        "tests/test_takeover.py",
        "test_reddit_standby_takes_over_after_a_sigkill_nothing_lost_or_doubled",
    ),
    # Long polling under the poller lock (a webhook has no lock: every instance takes posts).
    "telegram": (
        "tests/channels/telegram/test_takeover.py",
        "test_the_standby_takes_over_after_a_sigkill_nothing_lost_or_doubled",
    ),
}
# Connectors that are not polled: no poller lock to take over. SMTP and the Twilio webhooks
# are servers; every instance takes deliveries, so a killed one loses nothing to take over
# (the sender or Twilio retries a delivery that was not answered).
NOT_POLLED: dict[str, str] = {
    "smtp": "a server: every instance accepts mail, the client retries an unanswered one",
    "twilio": "webhooks: every instance takes them, Twilio retries an unanswered one",
    "meta": "webhooks: every instance takes them, Meta retries an unanswered one",
    "webform": "pages: every instance serves the form; a post that got no answer is sent "
    "again by the browser, and its form token makes it the same submission",
}

# The per-channel tests of a real sender failing against its fake and being retried; this
# suite checks the shared part (the curve and what the case shows) for every channel.
SENDER_RETRY_TESTS: dict[str, tuple[str, str]] = {
    "email": ("tests/test_outbox_relay.py", "test_retries_back_off_and_stop_at_the_maximum"),
    "sms": (
        "tests/channels/twilio/test_twilio_outbound.py",
        "test_a_call_is_acknowledged_by_text_and_failures_are_recorded",
    ),
    # A call's outbox rows have their own queue ("voice"), sent as SMS by the same sender.
    "voice": (
        "tests/channels/twilio/test_twilio_outbound.py",
        "test_a_call_is_acknowledged_by_text_and_failures_are_recorded",
    ),
    "twitter": (
        "tests/channels/twitter/test_outbox.py",
        "test_a_429_on_send_is_retried_after_the_reset",
    ),
    "reddit": (
        "tests/channels/reddit/test_reddit_outbox.py",
        "test_a_429_on_sending_is_retried_later",
    ),
    # One sender for Meta's three channels: the same Graph errors, the same classification.
    **dict.fromkeys(
        channels_of("meta"),
        (
            "tests/channels/meta/test_outbox.py",
            "test_error_codes_retry_pause_or_fail_with_a_reason",
        ),
    ),
    "telegram": (
        "tests/channels/telegram/test_outbox.py",
        "test_a_429_is_retried_after_telegrams_retry_after",
    ),
    "web": (
        "tests/channels/webform/test_status_page.py",
        "test_a_reply_on_web_is_delivered_by_the_status_page",
    ),
}

RECEIVED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
OUR_ADDRESS = "support@example.com"


def unless_skipped(channel: str, part: str) -> None:
    reason = SKIPS.get((channel, part))
    if reason is not None:
        pytest.skip(f"{channel} skips {part}: {reason}")


# --- each channel's fixture inputs, delivered as its connector delivers them ---------------


def email_inputs() -> list[RawInput]:
    """Mail as the SMTP server stores it: keyed by connectors.smtp.source_key."""
    items = []
    for name in ("gmail_new_question.eml", "outlook_windows1252.eml", "iso2022jp.eml"):
        raw = fixture_bytes("email", name)
        items.append(
            RawInput(
                connector="smtp",
                channel="email",
                source_key=smtp_source_key(raw, [OUR_ADDRESS]),
                payload=raw,
                envelope={**smtp_envelope(raw), "rcpt_tos": [OUR_ADDRESS]},
            )
        )
    return items


def twilio_inputs(channel: str) -> list[RawInput]:
    """Webhook posts as the Twilio connector stores them, keyed by its parse.source_key."""
    kinds = {"sms": ("sms", "mms"), "voice": ("call", "recording", "transcription")}[channel]
    names = {"call": "voice"}
    items = []
    for kind in kinds:
        params = twilio_fixture(names.get(kind, kind))
        items.append(
            RawInput(
                connector="twilio",
                channel=channel,
                source_key=twilio_source_key("sms" if kind == "mms" else kind, params),
                payload=urlencode(params).encode(),
                envelope={
                    "kind": "sms" if kind == "mms" else kind,
                    "address": params.get("To", ""),
                },
            )
        )
    return items


def meta_inputs(channel: str) -> list[RawInput]:
    """Webhook bodies as connectors.meta stores them: the body once, a row per event."""
    items = []
    for path in sorted(META_FIXTURES.glob("*.json")):
        doc = json.loads(path.read_text())
        raw = meta_body(doc)
        for event in meta_events(doc):
            if event.channel == channel:
                items.append(
                    RawInput(
                        connector="meta",
                        channel=channel,
                        source_key=event.source_key,
                        payload=raw,
                        envelope={"at": list(event.at)},
                    )
                )
    return items


def webform_inputs() -> list[RawInput]:
    """Form posts as the web form stores them: keyed by the form token they carried."""
    items = []
    for path in sorted((TESTS / "channels" / "webform" / "fixtures").glob("form_*.json")):
        key = webform_source_key("form", f"token-of-{path.stem}")
        items.append(
            RawInput(
                connector="webform",
                channel="web",
                source_key=key,
                payload=path.read_bytes(),
                envelope={"key": key, "kind": "form", "address": "contact-form"},
            )
        )
    return items


def stored_inputs(engine: Engine, channel: str) -> list[RawInput]:
    """What a connector stored, as the RawInput a redelivery would carry again."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Intake.connector, Intake.channel, Intake.source_key, Intake.envelope, Blob.data)
            .join(Blob, Blob.sha256 == Intake.raw_sha256)
            .where(Intake.channel == channel)
            .order_by(Intake.id)
        ).all()
    return [
        RawInput(
            connector=r.connector,
            channel=r.channel,
            source_key=r.source_key,
            payload=r.data,
            envelope=dict(r.envelope or {}),
        )
        for r in rows
    ]


def poll_twitter(engine: Engine) -> None:
    """The real connector polls the fake X (its mentions and DMs fixtures) once."""

    async def run() -> None:
        fake = FakeX.from_fixtures()
        fake.start()
        try:
            twitter = twitter_connector(engine, settings_for(fake))
            await twitter.poll_mentions(asyncio.Event())
            await twitter.poll_dms(asyncio.Event())
        finally:
            fake.stop()

    asyncio.run(run())


def poll_reddit(engine: Engine) -> None:
    """The real connector polls the fake Reddit (its listing fixtures) once."""
    with FakeReddit() as fake:
        reddit_connector(engine, fake).poll_once()


def poll_telegram(engine: Engine) -> None:
    """The real poller asks the fake Bot API (its private-chat fixtures) once."""

    async def once(poller: TelegramPoller) -> None:
        try:
            await poller.poll_once()
        finally:
            await poller.api.close()

    with fake_bot_api() as fake:
        fake.add(*TELEGRAM_PRIVATE)
        section = telegram_settings(fake.base_url)
        asyncio.run(once(TelegramPoller(section, engine, Secret(TELEGRAM_TOKEN))))


@dataclass(frozen=True)
class Kit:
    """How the suite drives one channel: deliver its fixtures. Every channel's new case is
    acknowledged by the worker as it opens it (the registry's ack routes), so there is no
    planning step of a channel's own."""

    # Stores the channel's fixture inputs through its connector's own keys.
    deliver: Callable[[Engine], None]


def _store_all(items: Callable[[], list[RawInput]]) -> Callable[[Engine], None]:
    def deliver(engine: Engine) -> None:
        store(engine, items())

    return deliver


KITS: dict[str, Kit] = {
    "email": Kit(_store_all(email_inputs)),
    "sms": Kit(_store_all(lambda: twilio_inputs("sms"))),
    "voice": Kit(_store_all(lambda: twilio_inputs("voice"))),
    "twitter": Kit(poll_twitter),
    "reddit": Kit(poll_reddit),
    **{c: Kit(_store_all(partial(meta_inputs, c))) for c in channels_of("meta")},
    "telegram": Kit(poll_telegram),
    "web": Kit(_store_all(webform_inputs)),
}


def parsed(item: RawInput) -> InboundMessage:
    return parse(
        item.channel,
        item.payload,
        envelope=item.envelope,
        received_at=RECEIVED,
        caps=Caps(),
        parsers=parser_table(),
    )


def count(engine: Engine, table: Any, channel: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(table).where(table.channel == channel)
            ).scalar_one()
        )


@pytest.fixture(params=CHANNEL_NAMES)
def channel(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


# --- the tables themselves --------------------------------------------------------------------


def test_every_channel_of_the_registry_has_a_kit() -> None:
    # A new channel in inbox/channels.py fails here until it says how it is driven.
    assert set(KITS) == set(CHANNEL_NAMES)


def test_every_skip_names_a_channel_a_part_and_a_reason() -> None:
    for (name, part), reason in SKIPS.items():
        assert name in CHANNEL_NAMES, name
        assert part in PARTS, part
        assert part != "takeover", "takeover is per connector: say so in NOT_POLLED"
        assert reason.strip(), f"{name} skips {part} without saying why"


def polling_connectors() -> set[str]:
    """The connectors whose package defines a Poller: each one polls under a lock."""
    found: set[str] = set()
    for name in CONNECTOR_CHANNELS:
        package = Path(connectors.__file__).with_name(name)
        assert package.is_dir(), f"connector {name} has no package connectors/{name}/"
        for module in package.rglob("*.py"):
            tree = ast.parse(module.read_text())
            found.update(name for node in ast.walk(tree) if _is_poller(node))
    return found


def _is_poller(node: ast.AST) -> bool:
    return isinstance(node, ast.ClassDef) and any(
        isinstance(b, ast.Name) and b.id == Poller.__name__ for b in node.bases
    )


def test_the_takeover_mapping_covers_every_polling_connector() -> None:
    polling = polling_connectors()
    assert polling, "no Poller subclass found: the scan is broken"
    assert set(TAKEOVER_TESTS) == polling
    # Every connector is either taken over by a named test or says why it needs none.
    assert set(TAKEOVER_TESTS) | set(NOT_POLLED) == set(CONNECTOR_CHANNELS)
    assert not set(TAKEOVER_TESTS) & set(NOT_POLLED)
    assert all(reason.strip() for reason in NOT_POLLED.values())


@pytest.mark.parametrize(("path", "name"), [*TAKEOVER_TESTS.values(), *SENDER_RETRY_TESTS.values()])
def test_every_referenced_test_exists(path: str, name: str) -> None:
    tree = ast.parse((TESTS.parent / path).read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert name in defined, f"{path} has no {name}: the mapping went stale"


def test_every_sending_channel_names_its_sender_retry_test() -> None:
    # Every channel has its own outbox queue (a call's acknowledgement is queued on "voice").
    assert set(SENDER_RETRY_TESTS) == set(CHANNEL_NAMES)


def test_every_channel_is_taken_over_or_says_why() -> None:
    for name in CHANNEL_NAMES:
        bringers = [c for c in CONNECTOR_CHANNELS if name in channels_of(c)]
        assert bringers, f"no connector brings in {name}"
        for connector_name in bringers:
            assert connector_name in TAKEOVER_TESTS or connector_name in NOT_POLLED


# --- the parts, for every channel ----------------------------------------------------------


def test_its_fixtures_parse_into_messages_of_the_channel(engine: Engine, channel: str) -> None:
    unless_skipped(channel, "parse")
    KITS[channel].deliver(engine)
    items = stored_inputs(engine, channel)
    assert len(items) >= 2, f"{channel} needs at least two realistic fixture inputs"
    keys = {i.source_key for i in items}
    assert len(keys) == len(items)  # distinct inputs, distinct keys
    for item in items:
        message = parsed(item)
        assert message.channel == channel, item.source_key
        # A sender has a handle, unless they hid it (a withheld number).
        assert message.dedup_key and (message.sender.handle or message.sender.anonymous)


def test_the_same_input_twice_is_stored_once(engine: Engine, channel: str) -> None:
    unless_skipped(channel, "idempotent")
    kit = KITS[channel]
    kit.deliver(engine)
    normalize(engine)
    intake, messages = count(engine, Intake, channel), count(engine, Message, channel)
    assert intake >= 2 and messages >= 1
    first = stored_inputs(engine, channel)
    # Delivered again by the connector (a retried webhook, an overlapping poll) ...
    kit.deliver(engine)
    # ... and every input once more, later, as a redelivery carries it: its own source key.
    again = store(engine, [*first, *first])
    assert all(s.duplicate for s in again)
    assert [s.intake_id for s in again[: len(first)]] == [s.intake_id for s in again[len(first) :]]
    normalize(engine)
    assert (count(engine, Intake, channel), count(engine, Message, channel)) == (
        intake,
        messages,
    )


def ack_rows(engine: Engine, channel: str) -> tuple[list[Any], list[Any], list[int]]:
    """The channel's cases, their acknowledgement outbox rows and their queued audit rows."""
    with engine.connect() as conn:
        cases = [r.id for r in conn.execute(select(Case.id).where(Case.channel == channel))]
        outbox = conn.execute(
            select(Outbox).where(Outbox.case_id.in_(cases), Outbox.kind == "ack")
        ).all()
        queued = conn.execute(
            select(AuditLog.case_id, AuditLog.after).where(
                AuditLog.action == "acknowledgement.queued", AuditLog.case_id.in_(cases)
            )
        ).all()
    return list(outbox), list(queued), cases


def test_a_new_case_is_acknowledged_once_with_its_promised_time_audited(
    engine: Engine, channel: str
) -> None:
    unless_skipped(channel, "acknowledged")
    kit = KITS[channel]
    kit.deliver(engine)
    normalize(engine)
    outbox, queued, cases = ack_rows(engine, channel)
    assert cases and outbox, f"no {channel} case was acknowledged"
    by_id = {row.id: row for row in outbox}
    facts = CHANNEL_FACTS[channel]
    handles = {
        fold_handle(facts.identity_kind, parsed(i).sender.handle)
        for i in stored_inputs(engine, channel)
    }
    assert sorted(after["outbox_id"] for _, after in queued) == sorted(by_id)
    for case_id, after in queued:
        row = by_id[after["outbox_id"]]
        # Queued on the case's own channel (a call's is sent as SMS by the voice queue's
        # sender, the registry's reply_channel), to the sender's own handle.
        assert row.case_id == case_id and row.channel == after["channel"] == channel
        # (as typed: Reddit's sender writes "u/name", the registry's typed prefix)
        assert fold_handle(facts.identity_kind, row.recipient, typed=True) in handles
        promised = datetime.fromisoformat(after["eta_at"])
        assert promised.tzinfo is not None
    # Once: one per case, and planning again (or a redelivery) queues nothing more.
    assert len({row.case_id for row in outbox}) == len(outbox)
    kit.deliver(engine)
    normalize(engine)
    assert ack_rows(engine, channel)[:2] == (outbox, queued)


def case_page(engine: Engine, reference: str) -> dict[str, Any]:
    """The case as an agent's page has it (casework.case_view), with its reply targets."""
    with engine.connect() as conn:
        user = conn.execute(select(User.id).where(User.name == "contract")).scalar()
    user = user if user is not None else make_user(engine, "contract")
    agent = Principal(id=user, name="contract", role="agent", via="cli")
    return case_view(engine, agent, reference)


def test_a_reply_goes_to_the_contacts_identity_on_the_reply_channel(
    engine: Engine, channel: str
) -> None:
    unless_skipped(channel, "reply_route")
    KITS[channel].deliver(engine)
    normalize(engine)
    facts = CHANNEL_FACTS[channel]
    with engine.connect() as conn:
        # Each case's last inbound message of the channel and who wrote it.
        rows = conn.execute(
            select(Case.reference, Identity.kind, Identity.handle)
            .join(Message, Message.case_id == Case.id)
            .join(Identity, Identity.id == Message.identity_id)
            .where(Case.channel == channel, Message.channel == channel)
            .order_by(Message.received_at.desc(), Message.id.desc())
        ).all()
    assert rows
    # The handles the senders have, folded by the registry's rule from what parsing their
    # input said (computed apart from the store).
    handles = {
        fold_handle(facts.identity_kind, parsed(i).sender.handle)
        for i in stored_inputs(engine, channel)
    }
    last_writer: dict[str, str] = {}
    for reference, kind, handle in rows:
        assert reference is not None
        assert kind == facts.identity_kind and handle in handles
        last_writer.setdefault(reference, handle)
    for reference, handle in last_writer.items():
        page = case_page(engine, reference)
        assert page["default_reply"] == {"channel": facts.reply_channel, "handle": handle}
        assert page["reply_targets"]
        # Every way to reach the identity: a number by SMS and by WhatsApp.
        offered = {target["channel"] for target in page["reply_targets"]}
        assert facts.reply_channel in offered
        assert offered <= set(REPLY_CHANNELS_OF_KIND[facts.identity_kind])


def test_a_failed_send_is_retried_on_the_shared_curve_and_shows_on_the_case(
    engine: Engine, channel: str
) -> None:
    unless_skipped(channel, "retry")
    kit = KITS[channel]
    kit.deliver(engine)
    normalize(engine)
    # Each channel's outbox queue is its own name (a call's acknowledgement is on "voice").
    queue = channel
    lease = timedelta(seconds=60)
    claimed = claim(engine, queue, "w1", limit=1, lease=lease)
    assert claimed, f"nothing queued for a {channel} case"
    row = claimed[0]
    settings = OutboxSettings()
    # What every sender does with a failure that may pass (connectors.outbox, the Twitter
    # and Reddit senders): the next attempt at a wait from the one curve.
    now = datetime.now(UTC)
    wait = backoff(1, settings.backoff_base_s, settings.backoff_max_s)
    # The curve's first wait lies between half the base and the base (worked out by hand
    # in tests/test_outbox_shared.py).
    assert settings.backoff_base_s / 2 <= wait <= settings.backoff_base_s
    at = now + timedelta(seconds=wait)
    assert record(engine, row, "w1", Result("retry", "503 try later", next_attempt_at=at))
    with engine.connect() as conn:
        reference = conn.execute(select(Case.reference).where(Case.id == row.case_id)).scalar_one()
    assert reference is not None
    shown = [o for o in case_page(engine, reference)["outbox"] if o["id"] == row.id]
    assert len(shown) == 1
    assert (shown[0]["state"], shown[0]["attempts"], shown[0]["last_error"]) == (
        "queued",
        1,
        "503 try later",
    )
    # Not due again before its time, and due after it.
    early = claim(engine, queue, "w2", limit=5, lease=lease, now=at - timedelta(seconds=1))
    assert row.id not in {c.id for c in early}
    late = claim(engine, queue, "w2", limit=5, lease=lease, now=at + timedelta(seconds=1))
    assert row.id in {c.id for c in late}


# --- retry through each channel's real sender ----------------------------------------------

# The drainers below retry on the shared curve with this base: the first retry waits between
# half of it and all of it (inbox.outbox.backoff, worked out by hand in
# tests/test_outbox_shared.py).
RETRY_BASE_S = 60.0
# Reddit's own wait for a 429 (its Retry-After), which its sender keeps instead of the curve.
REDDIT_RETRY_AFTER_S = 30.0


@dataclass(frozen=True)
class FailingSend:
    """A channel's real sender, in the shared drainer, against its provider failing for now."""

    drainer: OutboxDrainer
    # The wait the provider asked for, which the sender keeps; None: the shared curve.
    provider_wait_s: float | None = None


@contextmanager
def failing_send(
    channel: str, engine: Engine, request: pytest.FixtureRequest
) -> Iterator[FailingSend]:
    settings = OutboxSettings(backoff_base_s=RETRY_BASE_S)
    if channel == "email":
        # The relay answers 421 to everything: the SMTP client's transient refusal.
        sink = request.getfixturevalue("sink")
        sink.replies[:] = ["421 4.3.2 Service shutting down"] * 10
        yield FailingSend(drainer_for(engine, sink, backoff_base_s=RETRY_BASE_S))
    elif channel in ("sms", "voice"):
        # Twilio answers 503 once; a call's acknowledgement leaves by SMS on queue "voice".
        with fake_twilio() as twilio_fake:
            twilio_fake.unavailable = 1
            section = twilio_settings(api_base_url=twilio_fake.base_url)
            client = make_twilio_client(section, TWILIO_ACCOUNT, Secret(TWILIO_TOKEN))
            sms = TwilioSmsSender(channel, section, client, engine, status_callback=False)
            yield FailingSend(OutboxDrainer(engine, sms, settings, worker="contract"))
    elif channel == "twitter":
        # X answers 503 to a post (a reply tweet or a DM): refused, so safe to send again.
        x_fake = FakeX.from_fixtures()
        x_fake.start()
        try:
            x_fake.inject("/2/", 503, "errors/503_service_unavailable.json", method="POST")
            twitter = twitter_connector(engine, settings_for(x_fake))
            sender = twitter.delivery.sender
            yield FailingSend(OutboxDrainer(engine, sender, settings, worker="contract"))
        finally:
            x_fake.stop()
    elif channel == "reddit":
        # Reddit answers 429 with Retry-After. Its sender keeps Reddit's wait rather than the
        # curve (sending sooner is refused again), and treats a 5xx as "unknown", looked up
        # before any resend, never retried blindly: a 429 is its one retriable failure.
        with FakeReddit() as reddit_fake:
            reddit_fake.faults.append(
                Fault(
                    "POST",
                    r"^api/(comment|compose)$",
                    429,
                    headers={"retry-after": f"{REDDIT_RETRY_AFTER_S:g}"},
                )
            )
            reddit = reddit_connector(engine, reddit_fake)
            sender = reddit.delivery.sender
            yield FailingSend(
                OutboxDrainer(engine, sender, settings, worker="contract"),
                provider_wait_s=REDDIT_RETRY_AFTER_S,
            )
    elif channel in channels_of("meta"):
        # The Graph API answers 500 with its "temporarily unavailable" error (code 2):
        # Meta's own trouble, retried on the curve.
        with fake_graph() as graph_fake:
            graph_fake.fail.append((500, graph_error(2, "Service temporarily unavailable")))
            graph_section = meta_settings(graph_fake.base_url)
            token = META_WA_TOKEN if channel == "whatsapp" else META_PAGE_TOKEN
            graph = Graph(graph_section, Secret(token))
            meta = MetaSender(channel, graph_section, graph, engine)
            yield FailingSend(OutboxDrainer(engine, meta, settings, worker="contract"))
    elif channel == "telegram":
        # The Bot API answers 502 (Telegram's front in trouble): retried on the curve. (A 429
        # keeps Telegram's retry_after: tests/channels/telegram/test_outbox.py.)
        with fake_bot_api() as tg_fake:
            tg_fake.fail.append((502, telegram_refused(502, "Bad Gateway")))
            sender = TelegramSender(telegram_settings(tg_fake.base_url), Secret(TELEGRAM_TOKEN))
            yield FailingSend(OutboxDrainer(engine, sender, settings, worker="contract"))
    else:  # pragma: no cover - a new channel must add its failing transport here
        raise AssertionError(f"no failing transport for channel {channel!r}")


def test_a_failed_send_through_the_real_sender_is_retried_and_shows_on_the_case(
    engine: Engine, channel: str, request: pytest.FixtureRequest
) -> None:
    unless_skipped(channel, "retry")
    kit = KITS[channel]
    kit.deliver(engine)
    normalize(engine)
    with failing_send(channel, engine, request) as failing:
        started = utcnow()
        report = failing.drainer.drain_once(max_rows=1)
        finished = utcnow()
    assert (report.retried, report.sent, report.failed) == (1, 0, 0), report
    [(row_id, outcome)] = report.outcomes.items()
    assert outcome == "retry"
    with engine.connect() as conn:
        row = conn.execute(select(Outbox).where(Outbox.id == row_id)).one()
        reference = conn.execute(select(Case.reference).where(Case.id == row.case_id)).scalar()
    assert row.channel == channel
    assert (row.state, row.attempts) == ("queued", 1)
    assert row.last_error
    # When it is due again: the provider's wait, or a wait from the shared curve.
    low, high = (
        (RETRY_BASE_S / 2, RETRY_BASE_S)
        if failing.provider_wait_s is None
        else (failing.provider_wait_s, failing.provider_wait_s)
    )
    due = row.next_attempt_at
    assert started + timedelta(seconds=low - 1) <= due <= finished + timedelta(seconds=high + 1)
    # The agent sees it on the case: queued, one attempt, and why.
    assert reference is not None
    shown = [o for o in case_page(engine, reference)["outbox"] if o["id"] == row_id]
    assert [(o["state"], o["attempts"], o["last_error"]) for o in shown] == [
        ("queued", 1, row.last_error)
    ]
