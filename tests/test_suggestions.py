"""Merge suggestions on the labelled pairs of tests/fixtures/suggestions/pairs.py, on SQLite
and PostgreSQL, through the real intake and normalizer (which index each case's text).

Precision and recall are counted from the labels: every suggestion shown anywhere in the
store is a predicted pair; it is right only if the two texts are the two sides of one `same`
pair. The bars are justified in README ("Merge suggestions"): on these pairs the 2-word
shingle Jaccard of every `same` pair is at least 0.59 and of every `different` pair at most
0.46, so a 0.5 threshold separates them; MinHash estimation noise (64 permutations, standard
deviation about 0.06 near 0.5) may cost one pair either way, hence 0.85 rather than 1.0.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from inbox import suggestions
from inbox.models import Case
from tests.fixtures.suggestions.pairs import PAIRS, SAME
from tests.inbox_helpers import email_case

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
MIN_PRECISION = 0.85
MIN_RECALL = 0.85


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
