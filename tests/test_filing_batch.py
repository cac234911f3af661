"""A batch filed in one transaction reads once and writes at its end (normalizer/batch.py).

What one batch reads up front must still see what earlier inputs of the same batch wrote: a
second copy of a message is a duplicate, a reply finds the case its parent just opened, a
second mail of a new person joins that person's new case. The merge-suggestion signatures a
batch folds per case must be the ones filing message by message leaves. Both stores.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from inbox.models import CaseBand, CaseSignature, Receipt
from inbox.suggestions import index_signatures, index_text, text_signature
from normalizer.batch import Writes
from normalizer.pool import ParseResult
from normalizer.threadlocks import message_keys
from normalizer.threads import format_reference
from tests.test_threading_locks import claimed, tweet


def file_batch(normalizer: Any, intakes: list[Any], messages: list[Any]) -> list[Any]:
    items = [(i, ParseResult(i.id, m)) for i, m in zip(intakes, messages, strict=True)]
    keys = {n: message_keys(m) for n, m in enumerate(messages)}
    return list(normalizer._persist_many(items, keys))


def test_one_batch_sees_its_own_writes(engine: Engine):
    normalizer, intakes = claimed(engine, 6)
    first = tweet(1, "ann")
    messages = [
        first,
        first,  # the same message again (a second delivery): a duplicate of the first
        tweet(2, "ann", replies_to=("twitter:1",)),  # Ann answering her own, by its id
        tweet(3, "bob", replies_to=("twitter:1",)),  # someone else answering it
        tweet(4, "carol"),
        tweet(5, "carol"),  # Carol's second: her case was opened one input before
    ]
    outcomes = file_batch(normalizer, intakes, messages)
    assert [o.state for o in outcomes] == ["done", "duplicate", "done", "done", "done", "done"]
    ann = outcomes[0].case_id
    assert outcomes[1].message_id == outcomes[0].message_id
    assert outcomes[2].case_id == ann and outcomes[2].decision.reason == "in-reply-to"
    # Bob's reply found Ann's case through the id filed in this batch: his own case, which
    # says it claims to be about hers.
    assert outcomes[3].case_id != ann and outcomes[3].decision.claims == format_reference(ann)
    assert outcomes[5].case_id == outcomes[4].case_id not in (ann, outcomes[3].case_id)
    assert outcomes[5].decision.reason == "follow-up from the same person"
    with engine.connect() as conn:
        receipts = conn.execute(select(Receipt.intake_id, Receipt.message_id)).all()
    # Every input got its receipt, the duplicate's naming the first copy's message.
    assert sorted(receipts) == sorted(
        (i.id, o.message_id) for i, o in zip(intakes, outcomes, strict=True)
    )


TEXTS = [
    "short one",  # fewer shingles than MIN_SHINGLES: no bands yet
    "still short",
    "the reset link in the mail I got has expired and I cannot sign in since the update",
    "the reset link in the mail I got has expired",  # adds nothing new to the minimum
    "a different complaint about an invoice that was charged twice this month, please help",
]


def test_signatures_folded_per_batch_are_those_filed_one_by_one(engine: Engine):
    """Two cases start alike; one learns TEXTS one message at a time (`index_text`), the
    other as one batch folds them (`index_signatures`): same signature, count and bands."""
    normalizer, (a, b) = claimed(engine, 2)
    one = normalizer._persist(a, tweet(1, "ann", text_="hello there"))
    other = normalizer._persist(b, tweet(2, "bob", text_="hello there"))
    assert one.case_id is not None and other.case_id is not None
    with engine.begin() as conn:
        for text in TEXTS:
            index_text(conn, one.case_id, text)
        writes = Writes()
        for text in TEXTS:
            sig = text_signature(text)
            assert sig is not None
            writes.signature(other.case_id, sig, new_case=False)
        index_signatures(conn, writes.signatures)
    with engine.connect() as conn:
        rows = {
            r.case_id: (bytes(r.hashvalues), r.shingles)
            for r in conn.execute(
                select(CaseSignature.case_id, CaseSignature.hashvalues, CaseSignature.shingles)
            )
        }
        bands = {
            case_id: set(
                conn.execute(
                    select(CaseBand.band, CaseBand.bucket).where(CaseBand.case_id == case_id)
                ).all()
            )
            for case_id in (one.case_id, other.case_id)
        }
    assert rows[one.case_id] == rows[other.case_id]
    assert len(bands[one.case_id]) == 16  # long enough by now to be indexed
    assert bands[one.case_id] == bands[other.case_id]


def test_new_contacts_cases_and_messages_are_one_insert_each_per_batch(engine: Engine):
    """Forty new people in one batch of imported history (never acknowledged, as an import
    files it): their contacts, identities, cases and messages are written as one multi-row
    INSERT per table (ids handed out first), not one statement per message, and every row
    is the one filing message by message would leave. (Live mail that is acknowledged
    writes its case before the acknowledgement that names it, so there the rows go out
    earlier: each statement on the connection first writes what is waiting.)"""
    from sqlalchemy import event

    from connectors.registry import parser_table
    from inbox.config import StoreSettings
    from inbox.models import Case, Contact, Identity, Intake, Message
    from normalizer.intake import RawInput, store
    from normalizer.worker import Normalizer

    people = 40
    raws = [
        RawInput("twitter", "twitter", f"h:{i}", b"{}", acknowledge=False) for i in range(people)
    ]
    store(engine, raws)
    normalizer = Normalizer(engine, StoreSettings(), parsers=parser_table())
    assert len(normalizer.claim(people)) == people
    with engine.connect() as conn:
        intakes = list(conn.execute(select(Intake).order_by(Intake.id)).all())
    messages = [tweet(n, f"person{n}") for n in range(people)]
    inserts: dict[str, int] = {}

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        words = statement.split()
        if words[:2] == ["INSERT", "INTO"]:
            table = words[2].strip('"')
            inserts[table] = inserts.get(table, 0) + 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        outcomes = file_batch(normalizer, intakes, messages)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [o.state for o in outcomes] == ["done"] * people
    # A driver may split a long multi-row INSERT; never one per row.
    assert inserts.get("contacts", 0) <= 2 and inserts.get("cases", 0) <= 2
    assert inserts.get("identities", 0) <= 2 and inserts.get("messages", 0) <= 2
    with engine.connect() as conn:
        rows = conn.execute(
            select(Message.id, Message.dedup_key, Message.case_id, Case.contact_id, Case.reference)
            .join(Case, Case.id == Message.case_id)
            .order_by(Message.id)
        ).all()
        identities = dict(conn.execute(select(Identity.handle, Identity.contact_id)).all())
        contacts = conn.execute(select(Contact.id)).scalars().all()
    # Expected from the input alone: one case, one contact per person, in intake order.
    assert [r.dedup_key for r in rows] == [f"twitter:{n}" for n in range(people)]
    assert [r.id for r in rows] == [o.message_id for o in outcomes]
    assert [r.case_id for r in rows] == [o.case_id for o in outcomes]
    assert len({r.case_id for r in rows}) == people == len(set(contacts))
    assert all(r.reference == format_reference(r.case_id) for r in rows)
    assert [identities[f"person{n}"] for n in range(people)] == [r.contact_id for r in rows]
