"""Channel-blind order: permuting the channels of otherwise identical cases changes nothing.

docs/architecture/promises.md, promise 5. Cases are written through the store's own models
with equal times and different channels, visibilities and follower counts; every permutation
of the channels must list the same case positions in the same order. A content rule is the
one thing that may move a case forward.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, update

from inbox import queries
from inbox.config import ContentRule, SlaSettings, StoreSettings
from inbox.models import Case, Contact, Identity, Message
from normalizer.message import IDENTITY_KIND
from tests.support.emails import eml
from tests.support.helpers import case_of, ingest, normalize

CHANNELS = ("email", "sms", "voice", "twitter", "reddit")
PUBLIC = {"twitter", "reddit"}
T = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DUE = T + timedelta(hours=4)


def build(engine: Engine) -> list[tuple[int, int, int]]:
    """Five identical cases plus one due earlier and one due later: (case, message, identity)."""
    rows = []
    with engine.begin() as conn:
        for position in range(7):
            due = {5: DUE - timedelta(hours=1), 6: DUE + timedelta(hours=1)}.get(position, DUE)
            contact = conn.execute(
                insert(Contact)
                .values(name=f"Person {position}", created_at=T)
                .returning(Contact.id)
            ).scalar_one()
            identity = conn.execute(
                insert(Identity)
                .values(
                    kind="email",
                    handle=f"person{position}@example.org",
                    display_name="",
                    contact_id=contact,
                    verified=False,
                    facts={},
                    created_at=T,
                )
                .returning(Identity.id)
            ).scalar_one()
            case = conn.execute(
                insert(Case)
                .values(
                    token="abcdefghijkm",
                    contact_id=contact,
                    status="new",
                    channel="email",
                    subject="Can't log in",
                    due_at=due,
                    first_inbound_at=T,
                    last_activity_at=T,
                    created_at=T,
                    followups=0,
                )
                .returning(Case.id)
            ).scalar_one()
            conn.execute(update(Case).where(Case.id == case).values(reference=f"C-{case:06d}"))
            message = conn.execute(
                insert(Message)
                .values(
                    case_id=case,
                    identity_id=identity,
                    channel="email",
                    direction="inbound",
                    visibility="private",
                    dedup_key=f"test:{position}",
                    from_handle=f"person{position}@example.org",
                    subject="Can't log in",
                    text="I can't log in.",
                    received_at=T,
                    thread={},
                    meta={},
                )
                .returning(Message.id)
            ).scalar_one()
            rows.append((case, message, identity))
    return rows


def assign(engine: Engine, rows: list[tuple[int, int, int]], channels: tuple[str, ...]) -> None:
    """Give case i the channel channels[i], with what comes with it: a public post, a
    handle of that kind and, for public channels, a huge following."""
    with engine.begin() as conn:
        for (case, message, identity), channel in zip(rows, channels, strict=False):
            public = channel in PUBLIC
            conn.execute(update(Case).where(Case.id == case).values(channel=channel))
            conn.execute(
                update(Message)
                .where(Message.id == message)
                .values(channel=channel, visibility="public" if public else "private")
            )
            conn.execute(
                update(Identity)
                .where(Identity.id == identity)
                .values(
                    kind=IDENTITY_KIND[channel],
                    facts={"followers": 2_500_000, "karma": 90_000} if public else {},
                )
            )


def test_permuting_channels_never_changes_the_order(engine):
    rows = build(engine)
    case_ids = [case for case, _, _ in rows]
    baseline: list[int] | None = None
    seen_channels: set[tuple[str, ...]] = set()
    # Every rotation of the channels, forwards and backwards: each identical case gets each
    # channel, next to each other channel. The earlier and the later case get what is left.
    rotations = [CHANNELS[i:] + CHANNELS[:i] for i in range(len(CHANNELS))]
    permutations = rotations + [tuple(reversed(r)) for r in rotations]
    for perm in permutations:
        channels = (*perm, perm[0], perm[-1])
        assign(engine, rows, channels)
        listed = queries.list_cases(engine)
        order = [case_ids.index(int(c["reference"][2:])) for c in listed]
        assert [c["channels"] for c in listed] == [[channels[i]] for i in order]
        seen_channels.add(tuple(c["channel"] for c in listed))
        if baseline is None:
            baseline = order
        assert order == baseline, (channels, order)
    # The order is by due time, and among equals by age then id: the earlier case, the five
    # in the order they were created, the later case.
    assert baseline == [5, 0, 1, 2, 3, 4, 6]
    assert len(seen_channels) == len(permutations) == 10  # the channels really moved


def test_a_channel_filter_keeps_the_queue_order(engine):
    rows = build(engine)
    assign(engine, rows, ("reddit", "email", "twitter", "sms", "email", "voice", "reddit"))
    full = [c["reference"] for c in queries.list_cases(engine)]
    for channel in CHANNELS:
        shown = [c["reference"] for c in queries.list_cases(engine, channel=channel)]
        assert shown == [r for r in full if r in shown]
        assert shown


def test_a_content_rule_brings_a_case_forward(engine):
    settings = StoreSettings(
        sla=SlaSettings(
            first_response_minutes=240,
            rules=[
                ContentRule(
                    name="account takeover",
                    pattern=r"(?i)\b(hacked|locked out)\b",
                    due_within_minutes=60,
                )
            ],
        )
    )
    # Bob asks about a double charge first; Ann, locked out, writes 30 minutes later.
    bob = ingest(engine, eml("thunderbird_attachments.eml"), received_at=T)
    ann = ingest(engine, eml("gmail_first_contact.eml"), received_at=T + timedelta(minutes=30))
    outcomes = {o.intake_id: o for o in normalize(engine, settings)}
    bobs, anns = case_of(engine, outcomes[bob.intake_id]), case_of(engine, outcomes[ann.intake_id])
    assert anns["due_rule"] == "account takeover"
    assert anns["due_at"] == "2026-11-23T10:30:00Z"
    assert bobs["due_rule"] is None
    assert bobs["due_at"] == "2026-11-23T13:00:00Z"
    assert [c["reference"] for c in queries.list_cases(engine)] == [
        anns["reference"],
        bobs["reference"],
    ]


def test_without_the_rule_first_come_first_served(engine):
    # The shipped rule is a default: an operator turns it off by saying so.
    no_rules = StoreSettings(sla=SlaSettings(rules=[]))
    bob = ingest(engine, eml("thunderbird_attachments.eml"), received_at=T)
    ann = ingest(engine, eml("gmail_first_contact.eml"), received_at=T + timedelta(minutes=30))
    outcomes = {o.intake_id: o for o in normalize(engine, no_rules)}
    order = [c["reference"] for c in queries.list_cases(engine)]
    assert order == [
        case_of(engine, outcomes[bob.intake_id])["reference"],
        case_of(engine, outcomes[ann.intake_id])["reference"],
    ]
