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
