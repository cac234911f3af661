"""MinHash signatures by one-permutation hashing (OPH), in plain Python.

Issue 24 measured this against datasketch (bench/minhash_light.py): on the same synthetic
complaints it was 2-3.6 times faster per signature with the same near-duplicate recall on
16 bands of 4 rows, so the suggestions need neither datasketch nor the scipy it pulled in.

How a signature is made: each shingle gets one 64-bit blake2b hash; its low 6 bits pick one
of NUM_PERM bins and the other 58 bits are its value; each bin keeps its smallest value.
Short texts leave bins empty, so an empty bin borrows the value of the first filled bin in
its own fixed order of the other bins, plus DISTANCE times how many it had to look at. That
offset is why the signatures of two texts can still be folded by an element-wise minimum: a
bin's own value (< DISTANCE) always beats a borrowed one, and of two borrowed ones the one
found earlier in the order wins, which is the bin the union would borrow from; so the
minimum of two signatures is the signature of the union of their shingles
(tests/test_minhash.py).

Stored rows say which scheme made them (`case_signatures.scheme`): LEGACY rows were made by
datasketch's universal hashing and are only ever compared with each other until
`parity suggestions reindex` has rebuilt them as OPH rows (docs/operations/suggestions.md).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

NUM_PERM = 64
BANDS = 16
ROWS = NUM_PERM // BANDS

# The schemes a stored signature can be in: LEGACY is datasketch's (before issue 24), OPH
# is this module's. Only signatures of the same scheme are ever compared.
LEGACY = 1
OPH = 2
SCHEMES = (LEGACY, OPH)

_BIN_BITS = 6  # log2(NUM_PERM)
DISTANCE = 1 << (64 - _BIN_BITS)  # one bin further away; every bin value is below it
_EMPTY = (1 << 64) - 1
_PACK = struct.Struct(f"<{NUM_PERM}Q")
SIZE = _PACK.size  # bytes of a stored signature

Signature = tuple[int, ...]


def signature(parts: Iterable[str]) -> Signature:
    """The OPH signature of a set of shingles (at least one; the caller skips empty texts)."""
    bins = [_EMPTY] * NUM_PERM
    for part in parts:
        h = int.from_bytes(hashlib.blake2b(part.encode(), digest_size=8).digest(), "little")
        slot, value = h & (NUM_PERM - 1), h >> _BIN_BITS
        if value < bins[slot]:
            bins[slot] = value
    return _densify(bins)


def _probe_order(i: int) -> tuple[int, ...]:
    """The order in which empty bin `i` looks at the other bins: fixed for ever (a hash of
    the pair, not a random generator whose algorithm could change with Python)."""
    others = [j for j in range(NUM_PERM) if j != i]
    return tuple(sorted(others, key=lambda j: hashlib.blake2b(f"oph {i} {j}".encode()).digest()))


# Each bin its own order: borrowing from the right-hand neighbour instead made runs of empty
# bins copy one value, so they agreed or disagreed together and the estimate of a short
# text's similarity varied more (bench/minhash_light.py).
_PROBES = tuple(_probe_order(i) for i in range(NUM_PERM))


def _densify(bins: list[int]) -> Signature:
    if all(b == _EMPTY for b in bins):
        raise ValueError("a signature needs at least one shingle")
    out = list(bins)
    for i, value in enumerate(bins):
        if value != _EMPTY:
            continue
        for k, j in enumerate(_PROBES[i], start=1):
            if bins[j] != _EMPTY:
                out[i] = bins[j] + k * DISTANCE
                break
    return tuple(out)


def fold(a: Sequence[int], b: Sequence[int]) -> Signature:
    """The signature of the union of two texts' shingles, from their signatures (same scheme)."""
    return tuple(map(min, a, b))


def similarity(a: Sequence[int], b: Sequence[int]) -> float:
    """Estimated Jaccard similarity: the share of bins (or permutations) that agree."""
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def buckets(values: Sequence[int], scheme: int) -> list[int]:
    """One bucket per band: a 63-bit hash of the band's rows (fits a signed BIGINT).

    The scheme is in the hash's personalisation (LEGACY keeps the one its rows were banded
    with), so a band of one scheme never lands in a bucket of the other."""
    data = encode(values)
    prefix = b"" if scheme == LEGACY else b"oph"
    width = ROWS * 8
    out = []
    for band in range(BANDS):
        digest = hashlib.blake2b(
            data[band * width : (band + 1) * width],
            digest_size=8,
            person=prefix + band.to_bytes(2, "big"),
        ).digest()
        out.append(int.from_bytes(digest, "big") >> 1)
    return out


def encode(values: Sequence[int]) -> bytes:
    """The stored form: NUM_PERM little-endian unsigned 64-bit integers (either scheme)."""
    return _PACK.pack(*values)


def decode(data: bytes) -> Signature:
    if len(data) != SIZE:
        raise ValueError(f"a stored signature is {SIZE} bytes, not {len(data)}")
    return _PACK.unpack(data)
