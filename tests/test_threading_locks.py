"""Threading without a global lock: per-person keys, taken in one order (issue 19).

The pure part (which keys a message locks) is tested by tables. The concurrent part runs on
PostgreSQL, the store where normalizers run at once (SQLite has one writer, and its tests of
the same worker are everywhere else): two transactions for two people proceed together, two
for one person queue, batches naming the same two people in opposite orders never deadlock,
and 1, 2 and 4 worker processes file 1,000 shuffled mails of 50 people into the same cases.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select, text

from connectors.registry import parser_table
from inbox.config import StoreSettings
from inbox.db import THREADING_KEYS_MAX, THREADING_LOCK, ThreadingLocks, lock_plan, make_engine
from inbox.models import Base, Case, Contact, Identity, Intake, Message
from normalizer.intake import RawInput, store
from normalizer.message import InboundMessage, Sender, ThreadSignals
from normalizer.pool import ParseResult
from normalizer.threadlocks import keys_at_most, lock_groups, message_keys
from normalizer.worker import Normalizer
from tests.support.dns_server import mail_auth_toml
from tests.support.helpers import smtp_envelope
from tests.test_workers import run_worker

T = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
L = THREADING_LOCK


def tweet(
    n: int,
    handle: str,
    *,
    replies_to: tuple[str, ...] = (),
    text_: str = "",
    kind: str = "twitter",
) -> InboundMessage:
    return InboundMessage(
        channel="twitter" if kind == "twitter" else "reddit",
        visibility="private",
        dedup_key=f"{kind}:{n}",
        sender=Sender(kind=kind, handle=handle, name=handle.title()),
        received_at=T + timedelta(seconds=n),
        external_id=str(n),
        text=text_ or f"message {n} from {handle}",
        own_refs=(f"{kind}:{n}",),
        thread=ThreadSignals(in_reply_to=replies_to),
    )


def replace_sender(message: InboundMessage, handle: str) -> InboundMessage:
    from dataclasses import replace

    return replace(message, sender=Sender(kind=message.sender.kind, handle=handle))


# --- which keys: pure --------------------------------------------------------------------------


def test_a_key_is_the_first_8_bytes_of_blake2b_of_its_parts_the_same_in_every_process():
    from inbox.db import lock_key

    digest = hashlib.blake2b(b"identity\x1ftwitter\x1f42", digest_size=8, person=b"parity-thread")
    assert lock_key("identity", "twitter", "42") == int.from_bytes(
        digest.digest(), "big", signed=True
    )
    assert -(2**63) <= lock_key("contact", "7") < 2**63


@pytest.mark.parametrize(
    ("first", "second", "share"),
    [
        # one person writing twice: the identity key
        (tweet(1, "ann"), tweet(2, "ann"), True),
        # two people, nothing in common
        (tweet(1, "ann"), tweet(2, "bob"), False),
        # the same handle on two platforms is two identities
        (tweet(1, "ann"), tweet(2, "ann", kind="reddit"), False),
        # a reply and the message it replies to, from different people: the reference
        (tweet(1, "ann"), tweet(2, "bob", replies_to=("twitter:1",)), True),
        # two copies of one message (two receipts): the dedup key
        (tweet(1, "ann"), replace_sender(tweet(1, "ann"), "ann2"), True),
        # two people citing one case reference
        (tweet(1, "ann", text_="about C-000042"), tweet(2, "bob", text_="re C-000042 too"), True),
        # citing different cases
        (tweet(1, "ann", text_="about C-000042"), tweet(2, "bob", text_="about C-000043"), False),
    ],
)
def test_two_messages_share_a_lock_exactly_when_they_could_race(first, second, share):
    assert bool(message_keys(first) & message_keys(second)) is share


def test_an_anonymous_sender_locks_no_identity():
    anonymous = InboundMessage(
        channel="sms",
        visibility="private",
        dedup_key="sms:1",
        sender=Sender(kind="phone", handle="", anonymous=True),
        received_at=T,
    )
    other = InboundMessage(
        channel="sms",
        visibility="private",
        dedup_key="sms:2",
        sender=Sender(kind="phone", handle="", anonymous=True),
        received_at=T,
    )
    assert len(message_keys(anonymous)) == 1  # its dedup key only
    assert not message_keys(anonymous) & message_keys(other)


@pytest.mark.parametrize(
    ("sizes", "senders", "limit", "expected"),
    [
        ([2, 2, 2], [None, None, None], 10, [[0, 1, 2]]),
        ([4, 4, 4], [None, None, None], 10, [[0, 1], [2]]),
        ([3, 20, 3], [None, None, None], 10, [[0], [1], [2]]),  # the oversized one alone
        ([20], [None], 10, [[0]]),
        ([], [], 10, []),
        # Each sender may add a contact key in the second phase: 3 + 1 per message.
        ([3, 3, 3], ["ann", "bob", "cy"], 10, [[0, 1], [2]]),
        # One person three times: one contact key for the group, not three.
        ([3, 3, 3], ["ann", "ann", "ann"], 10, [[0, 1, 2]]),
    ],
)
def test_lock_groups_keep_order_and_stay_within_the_limit(sizes, senders, limit, expected):
    keyed = []
    start = 0
    for index, (size, sender) in enumerate(zip(sizes, senders, strict=True)):
        identity = ("twitter", sender) if sender else None
        keyed.append((index, frozenset(range(start, start + size)), identity))
        start += size
    assert lock_groups(keyed, limit=limit) == expected


@pytest.mark.parametrize(
    ("keys", "alone", "first", "wait", "expected"),
    [
        # The first call: THREADING_LOCK before everything, then the keys ascending.
        (
            [3, 1, 2],
            False,
            True,
            True,
            [(L, "shared"), (1, "exclusive"), (2, "exclusive"), (3, "exclusive")],
        ),
        # A later phase: its keys only, never THREADING_LOCK again (so never in another mode).
        ([9, 5], False, False, True, [(5, "exclusive"), (9, "exclusive")]),
        ([9, 5], False, False, False, [(5, "try"), (9, "try")]),
        ([2, 2, 1], False, True, False, [(L, "shared"), (1, "try"), (2, "try")]),
        # Alone: THREADING_LOCK exclusive and nothing else, in whichever phase.
        ([3, 1, 2], True, True, True, [(L, "exclusive")]),
        ([3, 1, 2], True, True, False, [(L, "exclusive")]),
        ([7], True, False, True, []),
        # THREADING_LOCK among the keys is not taken a second time.
        ([L, 4], False, True, True, [(L, "shared"), (4, "exclusive")]),
        ([], False, True, True, [(L, "shared")]),
    ],
)
def test_a_lock_plan_takes_each_key_once_in_one_mode_and_in_order(
    keys, alone, first, wait, expected
):
    assert lock_plan(keys, alone=alone, first=first, wait=wait) == expected


def test_the_mode_is_chosen_from_both_phases_before_the_first_lock():
    """keys_at_most counts one contact per distinct sender on top of the first phase."""
    batch = [tweet(1, "ann"), tweet(2, "bob"), tweet(3, "ann")]
    first = frozenset().union(*map(message_keys, batch))
    # 3 dedup + 2 identity + 3 own refs = 8 first-phase keys; 2 people -> at most 2 contacts.
    assert len(first) == 8
    assert keys_at_most(first, batch) == 10


def test_an_input_with_too_many_references_is_one_group_under_the_exclusive_lock(
    pg_engine: Engine,
):
    """Bounded work per input: 1,000 references take one lock, not 1,000."""
    refs = tuple(f"<r{i}@example.org>" for i in range(1000))
    message = tweet(1, "ann", replies_to=refs)
    assert len(message_keys(message)) > 1000
    normalizer = Normalizer(pg_engine, StoreSettings(), parsers=parser_table())
    with pg_engine.connect() as conn, conn.begin():
        normalizer._lock_threading(conn, [message], [message_keys(message)])
        # pg_locks shows a bigint key as its high and low 32 bits (classid, objid).
        held = conn.execute(
            text(
                "SELECT count(*), bool_or(classid::bigint = :high AND objid::bigint = :low"
                " AND mode = 'ExclusiveLock')"
                " FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            ),
            {"high": THREADING_LOCK >> 32, "low": THREADING_LOCK & 0xFFFFFFFF},
        ).one()
    assert held[1] is True
    assert held[0] <= 3  # the exclusive lock (and a contact's, had the sender one)


# --- PostgreSQL: who waits for whom --------------------------------------------------------------


@pytest.fixture
def pg_engine(pg_database: str) -> Iterator[Engine]:
    admin = create_engine(pg_database)
    with admin.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    admin.dispose()
    engine = make_engine(pg_database, busy_timeout_ms=15000)
    yield engine
    engine.dispose()


def claimed(engine: Engine, count: int) -> tuple[Normalizer, list[Any]]:
    stored = store(engine, [RawInput("twitter", "twitter", f"t:{i}", b"{}") for i in range(count)])
    normalizer = Normalizer(engine, StoreSettings(), parsers=parser_table())
    assert sorted(normalizer.claim(count)) == sorted(s.intake_id for s in stored)
    with engine.connect() as conn:
        rows = conn.execute(select(Intake).order_by(Intake.id)).all()
    return normalizer, list(rows)


def waiting_for_advisory_lock(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                # This test's database only: other tests and other stores share the server.
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            ).scalar_one()
        )


class Filing(threading.Thread):
    """Files one message in a transaction of its own, in a thread, keeping the outcome."""

    def __init__(self, normalizer: Normalizer, intake: Any, message: InboundMessage) -> None:
        super().__init__(daemon=True)
        self.normalizer, self.intake, self.message = normalizer, intake, message
        self.outcome: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.outcome = self.normalizer._persist(self.intake, self.message)
        except BaseException as exc:
            self.error = exc


def hold_open(normalizer: Normalizer, conn: Any, intake: Any, message: InboundMessage) -> Any:
    """File `message` in the caller's open transaction `conn`, under its locks."""
    normalizer._lock_threading(conn, [message], [message_keys(message)])
    return normalizer._persist_in(conn, intake, message, None)


def test_two_people_are_threaded_at_the_same_time(pg_engine: Engine):
    normalizer, (first, second) = claimed(pg_engine, 2)
    with pg_engine.connect() as held:
        held.begin()
        ann = hold_open(normalizer, held, first, tweet(1, "ann"))
        # Ann's transaction is open and holds her locks; Bob's commits meanwhile.
        bob = Filing(normalizer, second, tweet(2, "bob"))
        bob.start()
        bob.join(timeout=120)
        assert not bob.is_alive() and bob.error is None, bob.error
        assert bob.outcome.state == "done"
        with pg_engine.connect() as other:
            committed = set(other.execute(select(Message.dedup_key)).scalars())
        assert committed == {"twitter:2"}  # Bob's, while Ann's is still uncommitted
        held.commit()
    assert ann.state == "done" and ann.case_id != bob.outcome.case_id


def test_two_messages_of_one_person_wait_for_each_other_and_share_a_case(pg_engine: Engine):
    normalizer, (first, second) = claimed(pg_engine, 2)
    with pg_engine.connect() as held:
        held.begin()
        ann = hold_open(normalizer, held, first, tweet(1, "ann"))
        again = Filing(normalizer, second, tweet(2, "ann"))
        again.start()
        # Blocked on a lock (seen in pg_locks, not guessed from a timeout) while Ann's
        # first message is uncommitted: it would otherwise open a second case.
        deadline = time.monotonic() + 120
        while waiting_for_advisory_lock(pg_engine) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting_for_advisory_lock(pg_engine) == 1
        assert again.is_alive()
        held.commit()
    again.join(timeout=120)
    assert again.error is None, again.error
    assert again.outcome.state == "done"
    assert again.outcome.case_id == ann.case_id
    assert again.outcome.decision.reason == "follow-up from the same person"


def test_two_handles_of_one_person_wait_for_each_other_through_the_contact(pg_engine: Engine):
    """Different identity keys, one contact: the second phase (contact keys) orders them."""
    normalizer, (first, second, third) = claimed(pg_engine, 3)
    # Ann writes from Twitter and Reddit; an agent linked both handles to one contact.
    opened = normalizer._persist(first, tweet(1, "ann"))
    with pg_engine.begin() as conn:
        contact = conn.execute(select(Case.contact_id).where(Case.id == opened.case_id)).scalar()
        conn.execute(
            insert(Identity).values(
                kind="reddit",
                handle="ann",
                display_name="Ann",
                contact_id=contact,
                verified=False,
                facts={},
                created_at=T,
            )
        )
        conn.execute(text("UPDATE cases SET status = 'resolved', resolved_at = :t"), {"t": T})
    with pg_engine.connect() as held:
        held.begin()
        twitter = hold_open(normalizer, held, second, tweet(100, "ann"))
        reddit = Filing(normalizer, third, tweet(101, "ann", kind="reddit"))
        reddit.start()
        deadline = time.monotonic() + 120
        while waiting_for_advisory_lock(pg_engine) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting_for_advisory_lock(pg_engine) == 1 and reddit.is_alive()
        held.commit()
    reddit.join(timeout=120)
    assert reddit.error is None, reddit.error
    assert twitter.decision.action == "new"
    assert reddit.outcome.case_id == twitter.case_id  # a follow-up, not a second new case


def test_batches_naming_two_people_in_opposite_orders_never_deadlock(pg_engine: Engine):
    """Each transaction files Ann's and Bob's messages; one batch Ann first, the other Bob.

    Taken message by message, the locks would cross (one holds Ann's and waits for Bob's,
    the other the reverse); taken together and sorted they queue instead.
    """
    rounds = 40
    normalizer, intakes = claimed(pg_engine, rounds * 4)
    failures: list[BaseException] = []
    outcomes: list[Any] = []

    def file(batches: list[list[tuple[Any, InboundMessage]]]) -> None:
        try:
            for batch in batches:
                items = [(i, ParseResult(i.id, m)) for i, m in batch]
                keys = {n: message_keys(m) for n, (_, m) in enumerate(batch)}
                outcomes.extend(normalizer._persist_many(items, keys))
        except BaseException as exc:
            failures.append(exc)

    forward, backward = [], []
    for r in range(rounds):
        a, b, c, d = intakes[4 * r : 4 * r + 4]
        forward.append([(a, tweet(4 * r, "ann")), (b, tweet(4 * r + 1, "bob"))])
        backward.append([(c, tweet(4 * r + 2, "bob")), (d, tweet(4 * r + 3, "ann"))])
    threads = [threading.Thread(target=file, args=(x,)) for x in (forward, backward)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    assert len(outcomes) == rounds * 4 and {o.state for o in outcomes} == {"done"}
    with pg_engine.connect() as conn:
        cases = conn.execute(select(Case.id)).all()
    assert len(cases) == 2  # one for Ann, one for Bob


def advisory_locks_of(conn: Any) -> list[tuple[int, str, bool]]:
    """The advisory locks this connection's backend holds or waits for: (key, mode, granted)."""
    rows = conn.execute(
        text(
            "SELECT (classid::bigint << 32) | objid::bigint, mode, granted FROM pg_locks"
            " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
    ).all()
    return [(int(k), str(m), bool(g)) for k, m, g in rows]


def signed(key: int) -> int:
    return key - 2**64 if key >= 2**63 else key


def test_a_later_phase_over_the_limit_never_upgrades_so_two_transactions_both_proceed(
    pg_engine: Engine,
):
    """The bug of issue 19: a first phase within the limit took threading shared, a second
    over it asked for it exclusively while still holding it shared. Two transactions doing
    that at once each waited for the other's shared hold (PostgreSQL: deadlock detected).
    Now the mode is the first call's: a later phase takes its keys one by one."""
    small, large = THREADING_KEYS_MAX // 2, THREADING_KEYS_MAX + 44
    both_first = threading.Barrier(2, timeout=60)
    both_second = threading.Barrier(2, timeout=60)
    held: dict[int, list[tuple[int, str, bool]]] = {}
    failures: list[BaseException] = []

    def transaction(side: int) -> None:
        try:
            with pg_engine.connect() as conn, conn.begin():
                locks = ThreadingLocks(conn, keys_at_most=small)  # what the caller planned
                locks.lock(range(side * 10_000, side * 10_000 + small))
                both_first.wait()  # both hold threading shared now
                locks.lock(range(side * 10_000 + 5_000, side * 10_000 + 5_000 + large))
                held[side] = advisory_locks_of(conn)
                both_second.wait()  # and both got their second phase, at the same time
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=transaction, args=(n,), daemon=True) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    for side in (1, 2):
        modes = {signed(k): m for k, m, granted in held[side] if granted}
        assert modes[THREADING_LOCK] == "ShareLock"  # never upgraded
        assert len(modes) == 1 + small + large


def test_a_batch_of_more_people_than_the_limit_holds_threading_alone_and_queues(
    pg_engine: Engine,
):
    """Two transactions, each filing a batch of 300 known people (more contacts than
    THREADING_KEYS_MAX) at once: each takes threading exclusively from its first lock, so
    the second queues behind the first and both finish, with no other lock held."""
    people = THREADING_KEYS_MAX + 44
    with pg_engine.begin() as conn:
        for n in range(people):
            contact = conn.execute(
                insert(Contact).values(name=f"P{n}", created_at=T).returning(Contact.id)
            ).scalar_one()
            conn.execute(
                insert(Identity).values(
                    kind="twitter",
                    handle=f"p{n}",
                    display_name=f"P{n}",
                    contact_id=contact,
                    verified=False,
                    facts={},
                    created_at=T,
                )
            )
    normalizer = Normalizer(pg_engine, StoreSettings(), parsers=parser_table())
    batches = [[tweet(side * 1000 + n, f"p{n}") for n in range(people)] for side in (1, 2)]
    locked = threading.Event()
    release = threading.Event()
    held: dict[int, list[tuple[int, str, bool]]] = {}
    failures: list[BaseException] = []

    def transaction(side: int) -> None:
        try:
            batch = batches[side - 1]
            with pg_engine.connect() as conn, conn.begin():
                reads = normalizer._lock_threading(
                    conn, batch, [message_keys(m) for m in batch], load=True
                )
                assert reads is not None and len(reads.open_cases) == people
                held[side] = advisory_locks_of(conn)
                locked.set()
                release.wait(timeout=60)
        except BaseException as exc:
            failures.append(exc)

    first = threading.Thread(target=transaction, args=(1,), daemon=True)
    first.start()
    assert locked.wait(timeout=60), failures
    second = threading.Thread(target=transaction, args=(2,), daemon=True)
    second.start()
    deadline = time.monotonic() + 60
    while waiting_for_advisory_lock(pg_engine) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert waiting_for_advisory_lock(pg_engine) == 1 and 2 not in held  # queued, not failed
    release.set()
    first.join(timeout=60)
    second.join(timeout=60)
    assert not failures, failures
    for side in (1, 2):
        # Threading alone, exclusively; not 600 dedup and identity keys nor 300 contacts.
        assert [(signed(k), m) for k, m, _ in held[side]] == [(THREADING_LOCK, "ExclusiveLock")]


def committed_keys(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(Message.dedup_key)).scalars())


def test_a_batch_defers_the_inputs_whose_locks_are_held_and_files_the_rest_at_once(
    pg_engine: Engine,
):
    """Ann's first message is held open; a batch of Ann, Bob, Ann, Carol files Bob and Carol
    at once (nothing waits for a whole batch), defers both of Ann's in their order, and
    files them into Ann's case once her first transaction commits."""
    normalizer, (first, *rest) = claimed(pg_engine, 5)
    batch = [tweet(2, "ann"), tweet(3, "bob"), tweet(4, "ann"), tweet(5, "carol")]
    items = [(i, ParseResult(i.id, m)) for i, m in zip(rest, batch, strict=True)]
    keys = {n: message_keys(m) for n, m in enumerate(batch)}
    outcomes: list[Any] = []
    failures: list[BaseException] = []

    def file() -> None:
        try:
            outcomes.extend(normalizer._persist_many(items, keys))
        except BaseException as exc:
            failures.append(exc)

    with pg_engine.connect() as held:
        held.begin()
        ann = hold_open(normalizer, held, first, tweet(1, "ann"))
        filing = threading.Thread(target=file, daemon=True)
        filing.start()
        deadline = time.monotonic() + 120
        while committed_keys(pg_engine) != {"twitter:3", "twitter:5"}:
            assert time.monotonic() < deadline, committed_keys(pg_engine)
            assert not failures, failures
            time.sleep(0.05)
        # Bob's and Carol's are in; Ann's two wait for her first one, seen in pg_locks.
        while waiting_for_advisory_lock(pg_engine) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting_for_advisory_lock(pg_engine) == 1 and filing.is_alive()
        held.commit()
    filing.join(timeout=120)
    assert not failures, failures
    assert [o.state for o in outcomes] == ["done"] * 4
    assert outcomes[0].case_id == outcomes[2].case_id == ann.case_id
    assert len({ann.case_id, outcomes[1].case_id, outcomes[3].case_id}) == 3
    with pg_engine.connect() as conn:
        order = conn.execute(
            select(Message.dedup_key).where(Message.case_id == ann.case_id).order_by(Message.id)
        ).scalars()
        assert list(order) == ["twitter:1", "twitter:2", "twitter:4"]  # Ann's order kept


# --- processes: the same cases from 1, 2 and 4 workers -------------------------------------------

PEOPLE = 50
MAILS = 1000


def shuffled_mails() -> list[bytes]:
    """1,000 mails of 50 people in a fixed random order; some reply to the person's mail."""
    rng = random.Random(19)
    mails = []
    for n in range(MAILS):
        person = n % PEOPLE
        previous = n - PEOPLE
        reply = f"In-Reply-To: <m{previous}@example.org>\r\n" if previous >= 0 and n % 3 else ""
        mails.append(
            (
                f"From: Person {person} <p{person}@example.org>\r\n"
                f"Subject: Question {n}\r\n"
                f"Message-ID: <m{n}@example.org>\r\n{reply}\r\n"
                f"Mail {n} from person {person}.\r\n"
            ).encode()
        )
    rng.shuffle(mails)
    return mails


def grouping(engine: Engine) -> set[frozenset[str]]:
    """The message -> case grouping, by subject (unique per mail): which mails share a case."""
    groups: dict[int, set[str]] = defaultdict(set)
    with engine.connect() as conn:
        for case_id, subject in conn.execute(select(Message.case_id, Message.subject)):
            groups[case_id].add(subject)
    return {frozenset(g) for g in groups.values()}


def run_workers(engine: Engine, db_url: str, tmp_path: Path, count: int) -> set[frozenset[str]]:
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    store(
        engine,
        [
            RawInput(
                connector="smtp",
                channel="email",
                source_key=f"load:{i}",
                payload=raw,
                envelope={**smtp_envelope(raw), "rcpt_tos": ["support@support.example.com"]},
                received_at=T,
            )
            for i, raw in enumerate(shuffled_mails())
        ],
    )
    settings = tmp_path / f"settings{count}.toml"
    settings.write_text(
        f'[database]\nurl = "{db_url}"\n\n[normalizer]\nbatch_size = 25\n\n'
        '[logging]\nlevel = "WARNING"\n' + mail_auth_toml()
    )
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(count)
    workers = [
        context.Process(
            target=run_worker, args=(str(settings), str(tmp_path / f"w{count}-{i}.json"), barrier)
        )
        for i in range(count)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    assert [w.exitcode for w in workers] == [0] * count
    with engine.connect() as conn:
        states = set(conn.execute(select(Intake.state)).scalars())
        claimers = conn.execute(text("SELECT count(DISTINCT claimed_by) FROM intake")).scalar()
    assert states == {"done"}
    assert claimers == count  # every worker really took part
    return grouping(engine)


def test_one_two_and_four_workers_file_the_same_cases(pg_engine: Engine, pg_database, tmp_path):
    alone = run_workers(pg_engine, pg_database, tmp_path, 1)
    # One case per person, holding exactly that person's mails (computed from the input).
    expected = {frozenset(f"Question {n}" for n in range(p, MAILS, PEOPLE)) for p in range(PEOPLE)}
    assert alone == expected
    assert run_workers(pg_engine, pg_database, tmp_path, 2) == alone
    assert run_workers(pg_engine, pg_database, tmp_path, 4) == alone


# --- batches: one transaction, each input's outcome its own (both stores) --------------------


def test_one_input_the_store_refuses_is_dead_lettered_alone_and_the_batch_commits(engine):
    normalizer, intakes = claimed(engine, 5)
    messages = [tweet(n, f"person{n}") for n in range(5)]
    # A value the messages table cannot hold (JSON has no sets): refused by either store.
    messages[2] = InboundMessage(**{**messages[2].__dict__, "meta": {"odd": {1, 2}}})
    items = [(i, ParseResult(i.id, m)) for i, m in zip(intakes, messages, strict=True)]
    outcomes = normalizer._persist_many(items, {n: message_keys(m) for n, m in enumerate(messages)})
    assert [o.state for o in outcomes] == ["done", "done", "dead", "done", "done"]
    assert "could not store" in (outcomes[2].error or "")
    with engine.connect() as conn:
        stored = set(conn.execute(select(Message.dedup_key)).scalars())
        states = dict(conn.execute(select(Intake.id, Intake.state)).all())
        dead = conn.execute(text("SELECT intake_id FROM dead_letters")).scalars().all()
    assert stored == {m.dedup_key for n, m in enumerate(messages) if n != 2}
    assert states[intakes[2].id] == "dead" and dead == [intakes[2].id]
    assert [states[i.id] for n, i in enumerate(intakes) if n != 2] == ["done"] * 4


def test_a_drained_batch_is_filed_in_intake_order(engine):
    """Draining keeps intake order across parses that finish out of order (an import's
    threading order): follow-ups of one person come after the mail that opened the case."""
    from tests.support.helpers import ingest, normalize

    for n in range(12):
        raw = f"From: a@example.org\r\nSubject: S{n}\r\nMessage-ID: <o{n}@x>\r\n\r\nHi {n}\r\n"
        ingest(engine, raw.encode())
    outcomes = [o for o in normalize(engine) if o.state == "done"]
    assert [o.intake_id for o in outcomes] == sorted(o.intake_id for o in outcomes)
    assert len(outcomes) == 12
    # Message ids are handed out as messages are filed: in intake order, one after the other.
    filed = [o.message_id or 0 for o in outcomes]
    assert filed == sorted(filed)
