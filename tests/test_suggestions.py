"""Merge suggestions on the labelled pairs of tests/fixtures/suggestions/pairs.py, on SQLite
and PostgreSQL, through the real intake and normalizer (which index each case's text).

Precision and recall are counted from the labels: every suggestion shown anywhere in the
store is a predicted pair; it is right only if the two texts are the two sides of one `same`
pair. The bars are justified in docs/agents/merges.md ("Merge suggestions"): on these pairs
the 2-word shingle Jaccard of every `same` pair is at least 0.59 and of every `different`
pair at most 0.46, so a 0.5 threshold separates them; MinHash estimation noise (64
permutations, standard deviation about 0.06 near 0.5) may cost one pair either way, hence
0.85 rather than 1.0.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from inbox import casework, merges, migrate, suggestions
from inbox.accounts import Principal
from inbox.db import make_engine
from inbox.models import Case, CaseBand, CaseSignature
from tests.fixtures.suggestions.pairs import PAIRS, SAME
from tests.support.inbox_helpers import email_case, make_user

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
MIN_PRECISION = 0.85
MIN_RECALL = 0.85


def agent(engine: Engine) -> Principal:
    return Principal(id=make_user(engine, "ada"), name="ada", role="agent", via="cli")


def test_precision_and_recall_on_labelled_pairs(engine: Engine) -> None:
    side: dict[str, tuple[int, int]] = {}  # reference -> (pair index, side)
    for index, (_label, _kind, first, second) in enumerate(PAIRS):
        for which, text in enumerate((first, second)):
            reference = email_case(
                engine,
                f"p{index}s{which}@example.com",
                "",
                text,
                msgid=f"p{index}s{which}@mail.example",
                at=T0 + timedelta(minutes=index),
            )
            side[reference] = (index, which)
    with engine.connect() as conn:
        ids = dict(conn.execute(select(Case.id, Case.reference)).all())
        found = suggestions.suggestions_for(conn, list(ids))
    predicted = {
        frozenset((ids[case_id], s.reference)) for case_id, rows in found.items() for s in rows
    }
    positives = {
        frozenset(r for r, (i, _w) in side.items() if i == index)
        for index, pair in enumerate(PAIRS)
        if pair[0] == SAME
    }
    right = predicted & positives
    precision = len(right) / len(predicted) if predicted else 0.0
    recall = len(right) / len(positives)
    print(f"suggestions: precision {precision:.2f} recall {recall:.2f} ({len(predicted)} shown)")
    assert precision >= MIN_PRECISION, [sorted(str(r) for r in p) for p in predicted - positives]
    assert recall >= MIN_RECALL, [sorted(str(r) for r in p) for p in positives - predicted]
    # Short texts are never indexed, so they are never suggested.
    short = {r for r, (i, _w) in side.items() if PAIRS[i][1] == "short"}
    assert not any(pair & short for pair in predicted)


def test_shingle_choice_on_a_five_percent_edit() -> None:
    """The measurement behind SHINGLE: Jaccard of 2- vs 3-word shingles on a 5% word edit."""
    words = PAIRS[0][2].split()
    edited = [w + "x" if i % 20 == 7 else w for i, w in enumerate(words)]
    assert len(edited) >= 20
    original, changed = " ".join(words), " ".join(edited)

    def jaccard(size: int) -> float:
        a, b = suggestions.shingles(original, size), suggestions.shingles(changed, size)
        return len(a & b) / len(a | b)

    assert jaccard(2) > jaccard(3)
    assert jaccard(2) >= suggestions.THRESHOLD + 0.2


def test_suggestions_respect_the_window_and_same_contact(engine: Engine) -> None:
    text = PAIRS[0][2]
    a = email_case(engine, "one@example.com", "", text, msgid="w1@x", at=T0)
    far = email_case(
        engine, "two@example.com", "", PAIRS[0][3], msgid="w2@x", at=T0 - timedelta(days=30)
    )
    # The same person writing twice is one contact: a follow-up, not a suggestion.
    email_case(engine, "one@example.com", "", PAIRS[0][3], msgid="w3@x", at=T0)
    assert suggestions.for_reference(engine, a) == []
    assert suggestions.for_reference(engine, far) == []


def index_rows(engine: Engine) -> dict[int, tuple[bytes, int, list[tuple[int, int]]]]:
    """Every case's signature, shingle count and sorted (band, bucket) rows."""
    with engine.connect() as conn:
        bands: dict[int, list[tuple[int, int]]] = {}
        for r in conn.execute(select(CaseBand.case_id, CaseBand.band, CaseBand.bucket)):
            bands.setdefault(r.case_id, []).append((r.band, r.bucket))
        return {
            r.case_id: (bytes(r.hashvalues), r.shingles, sorted(bands.get(r.case_id, [])))
            for r in conn.execute(
                select(CaseSignature.case_id, CaseSignature.hashvalues, CaseSignature.shingles)
            )
        }


def case_id(engine: Engine, reference: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(Case.id).where(Case.reference == reference)).scalar_one())


def suggested(engine: Engine, reference: str) -> set[str]:
    return {s["reference"] for s in suggestions.for_reference(engine, reference)}


def test_merge_folds_the_index_and_undo_restores_it(engine: Engine) -> None:
    # One person's complaint by email (survivor) and by tweet from another identity (absorbed).
    _label, _kind, email_text, tweet_text = PAIRS[6]
    who = agent(engine)
    survivor = email_case(engine, "alice@example.com", "", email_text, msgid="s@x", at=T0)
    absorbed = email_case(engine, "alice.w@example.org", "", tweet_text, msgid="b@x", at=T0)
    # The union computed another way: one contact writing both texts (the normalizer folds
    # each message into her case), independent of the merge code.
    union = email_case(engine, "carol@example.com", "", email_text, msgid="c1@x", at=T0)
    assert email_case(engine, "carol@example.com", "", tweet_text, msgid="c2@x", at=T0) == union
    before = index_rows(engine)
    ids = {r: case_id(engine, r) for r in (survivor, absorbed, union)}
    assert ids[absorbed] in before and ids[survivor] in before

    record = merges.merge(engine, who, absorbed, survivor)
    merged = index_rows(engine)
    # The survivor's signature is the union's; the absorbed case left the index.
    assert merged[ids[survivor]] == before[ids[union]]
    assert ids[absorbed] not in merged
    with engine.connect() as conn:
        assert not conn.execute(
            select(CaseBand.id).where(CaseBand.case_id == ids[absorbed])
        ).first()

    # A third person pastes the tweet with every tenth word changed.
    words = tweet_text.split()
    pasted = " ".join(w + "x" if i % 10 == 4 else w for i, w in enumerate(words))
    dave = email_case(engine, "dave@example.net", "", pasted, msgid="d@x", at=T0)
    after_merge = suggested(engine, dave)
    assert survivor in after_merge and absorbed not in after_merge

    merges.undo(engine, who, record["id"])
    restored = index_rows(engine)
    for reference in (survivor, absorbed, union):
        assert restored[ids[reference]] == before[ids[reference]], reference
    after_undo = suggested(engine, dave)
    # The survivor's own (email) text alone is further from the paste than the threshold.
    assert absorbed in after_undo and survivor not in after_undo


def test_undo_folds_later_messages_into_the_case_they_stay_in(engine: Engine) -> None:
    """Messages that arrive while merged end up in the signature of the case that keeps
    them: the absorbed case gets back its own text plus its thread's later message."""
    _l, _k, email_text, tweet_text = PAIRS[2]
    _l, _k, later_text, _other = PAIRS[3]
    who = agent(engine)
    survivor = email_case(engine, "alice@example.com", "", email_text, msgid="s2@x", at=T0)
    absorbed = email_case(engine, "alice.w@example.org", "", tweet_text, msgid="b2@x", at=T0)
    # Expected: a contact who wrote the absorbed case's text and then the later text.
    expected = email_case(engine, "erin@example.com", "", tweet_text, msgid="e1@x", at=T0)
    email_case(engine, "erin@example.com", "", later_text, msgid="e2@x", at=T0)
    before = index_rows(engine)
    record = merges.merge(engine, who, absorbed, survivor)
    email_case(
        engine,
        "alice.w@example.org",
        "",
        later_text,
        msgid="b3@x",
        at=T0 + timedelta(hours=1),
        extra="In-Reply-To: <b2@x>\r\n",
    )
    result = merges.undo(engine, who, record["id"])
    assert len(result["undo_details"]["returned"]) == 1
    after = index_rows(engine)
    assert after[case_id(engine, absorbed)] == before[case_id(engine, expected)]
    assert after[case_id(engine, survivor)] == before[case_id(engine, survivor)]


def test_resolved_cases_are_not_suggested_until_they_reopen(engine: Engine) -> None:
    _l, _k, first, second = PAIRS[1]
    who = agent(engine)
    resolved = email_case(engine, "fay@example.com", "", first, msgid="f1@x", at=T0)
    other = email_case(engine, "gus@example.com", "", second, msgid="g1@x", at=T0)
    assert resolved in suggested(engine, other)

    casework.set_status(engine, who, resolved, "resolved")
    assert resolved not in suggested(engine, other)
    # A case resolved is still suggestible *for*: its page may show open near-duplicates.
    assert other in suggested(engine, resolved)

    # Fay answers in her thread (the same words): the case reopens and is suggested again.
    email_case(
        engine,
        "fay@example.com",
        "",
        first,
        msgid="f2@x",
        at=T0 + timedelta(hours=2),
        extra="In-Reply-To: <f1@x>\r\n",
    )
    with engine.connect() as conn:
        status = conn.execute(select(Case.status).where(Case.reference == resolved)).scalar_one()
    assert status == "open"
    assert resolved in suggested(engine, other)


def test_sqlite_probe_reads_the_index_alone_with_the_configured_cache(tmp_path: Path) -> None:
    """After migration 0007 a probe is answered from ix_case_bands_probe alone (no lookup of
    each row in the table, no sort for the cap on common buckets), and the [database] cache
    size reaches every SQLite connection."""
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}", sqlite_cache_mb=17)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -17 * 1024
        statement = suggestions._probe(16)
        compiled = statement.compile(dialect=engine.dialect)
        params = {f"b{i}": i for i in range(16)} | {f"h{i}": 7 for i in range(16)}
        values = compiled.construct_params(params)
        args = tuple(values[name] for name in compiled.positiontup or [])
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", args).all()
    details = [row[-1] for row in plan]
    searches = [d for d in details if "case_bands" in d]
    assert len(searches) == 16, details
    assert all("COVERING INDEX ix_case_bands_probe" in d for d in searches), details
    # The newest rows of a bucket come in index order: no sort of a common bucket's rows.
    assert not any("TEMP B-TREE" in d for d in details), details
    engine.dispose()
