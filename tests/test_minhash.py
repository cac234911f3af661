"""One-permutation MinHash (inbox/minhash.py): tables of realistic texts.

Expected figures are computed here from the shingle sets themselves (exact Jaccard, set
unions), never from the module's own output.
"""

from __future__ import annotations

import hashlib

import pytest

from inbox import minhash
from inbox.suggestions import shingles
from tests.fixtures.suggestions.pairs import DIFFERENT, PAIRS, SAME

LOCKED_OUT = (
    "Hi, I have been locked out of my account since yesterday evening. Every time I try to "
    "log in it says my password is wrong, and the reset email never arrives. Please help"
)
CHARGED_TWICE = (
    "You charged my card twice for the March invoice, 49.90 each on the 3rd. Please refund "
    "the second charge to the same card, thanks"
)
SHORT = "help please"


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (LOCKED_OUT, CHARGED_TWICE),  # two long texts
        (LOCKED_OUT, SHORT),  # a long and a short one: most of the short one's bins borrow
        (SHORT, "thanks"),  # both so short almost every bin borrows
        ("order 55812 never arrived", "order 55812 never arrived, sent twice"),  # overlapping
        (CHARGED_TWICE, CHARGED_TWICE),  # folding a text into itself changes nothing
    ],
)
def test_the_minimum_of_two_signatures_is_the_signature_of_the_union(
    first: str, second: str
) -> None:
    # Why folding works at intake and at a merge: the case's signature is the element-wise
    # minimum of its messages', which must be what the union of their shingles gives.
    a, b = shingles(first), shingles(second)
    folded = minhash.fold(minhash.signature(a), minhash.signature(b))
    assert folded == minhash.signature(a | b)


def test_a_signature_has_one_value_per_bin_and_survives_the_stored_form() -> None:
    sig = minhash.signature(shingles(LOCKED_OUT))
    assert len(sig) == minhash.NUM_PERM == 64
    assert all(0 <= v < 1 << 64 for v in sig)
    data = minhash.encode(sig)
    assert len(data) == minhash.SIZE == 512
    assert minhash.decode(data) == sig


def test_the_first_bin_is_the_smallest_58_bit_hash_of_the_shingles_in_it() -> None:
    # Recomputed from blake2b by hand: the bins are the low 6 bits of each shingle's hash.
    parts = shingles(LOCKED_OUT)
    hashes = [
        int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8).digest(), "little") for p in parts
    ]
    sig = minhash.signature(parts)
    for slot in range(minhash.NUM_PERM):
        mine = [h >> 6 for h in hashes if h % 64 == slot]
        if mine:
            assert sig[slot] == min(mine)
        else:  # borrowed: a value of another bin, one DISTANCE or more above it
            assert sig[slot] >= minhash.DISTANCE
            assert sig[slot] % minhash.DISTANCE in {h >> 6 for h in hashes}


@pytest.mark.parametrize(
    ("data", "error"),
    [(b"", "not 0"), (b"\x00" * 511, "not 511"), (b"\x00" * 513, "not 513")],
)
def test_a_stored_signature_of_the_wrong_size_is_refused(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        minhash.decode(data)


def test_no_shingle_is_no_signature() -> None:
    with pytest.raises(ValueError):
        minhash.signature(set())


def test_the_two_schemes_never_share_a_bucket() -> None:
    sig = minhash.signature(shingles(LOCKED_OUT))
    legacy = minhash.buckets(sig, minhash.LEGACY)
    current = minhash.buckets(sig, minhash.OPH)
    assert len(legacy) == len(current) == minhash.BANDS
    assert not set(legacy) & set(current)
    assert all(0 <= b < 1 << 63 for b in legacy + current)  # fits a signed BIGINT


def test_legacy_buckets_are_those_the_rows_before_issue_24_were_banded_with() -> None:
    # The hash of each band's 32 stored bytes with the band number as personalisation, as
    # inbox/suggestions.py wrote them with datasketch: written out again here by hand.
    values = tuple(range(1000, 1064))
    data = minhash.encode(values)
    expected = [
        int.from_bytes(
            hashlib.blake2b(
                data[band * 32 : band * 32 + 32], digest_size=8, person=band.to_bytes(2, "big")
            ).digest(),
            "big",
        )
        >> 1
        for band in range(16)
    ]
    assert minhash.buckets(values, minhash.LEGACY) == expected


# The pairs long enough to be suggested at all (MIN_SHINGLES on both sides).
INDEXED = [p for p in PAIRS if min(len(shingles(p[2])), len(shingles(p[3]))) >= 8]


@pytest.mark.parametrize(("label", "kind", "first", "second"), INDEXED)
def test_labelled_pairs_are_told_apart(label: str, kind: str, first: str, second: str) -> None:
    # The labelled pairs of the suggestions: a `same` pair scores at or above the threshold,
    # a `different` one below it, and the estimate stays near the exact Jaccard.
    a, b = shingles(first), shingles(second)
    estimate = minhash.similarity(minhash.signature(a), minhash.signature(b))
    assert abs(estimate - jaccard(a, b)) <= 0.2
    if label == SAME:
        assert estimate >= 0.5
    else:
        assert label == DIFFERENT
        assert estimate < 0.5


def test_similarity_is_the_share_of_agreeing_bins() -> None:
    a = tuple(range(64))
    b = tuple(range(16)) + tuple(range(100, 148))
    assert minhash.similarity(a, a) == 1.0
    assert minhash.similarity(a, b) == 16 / 64
