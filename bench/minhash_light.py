"""Could a lighter MinHash replace datasketch (and the numpy and scipy it pulls in)?

Issue 24 asked whether the merge suggestions need the 160 MB of numpy and scipy that
datasketch brought. This bench measured, on the same synthetic complaints as
bench/suggestions.py (deterministic, a third of them near-duplicates with small edits),
ways of making a 64-value signature of a text's word-bigram set:

- `datasketch`: what inbox/suggestions.py used before issue 24 (numpy-vectorised universal
  hashing). It is no longer a dependency: the bench measures it when it is installed
  (`.venv/bin/pip install datasketch`) and is the baseline then;
- `pure-minhash`: the same construction in plain Python (one 32-bit hash per shingle, then
  64 universal hash functions (a*h + b) mod p, keeping each minimum), no numpy; the
  baseline when datasketch is not installed;
- `pure-blake`: 64 independent hash functions in plain Python: four keyed 64-byte blake2b
  digests per shingle give 64 32-bit values, and `map(min, ...)` keeps each minimum;
- `oph`: one-permutation hashing in plain Python, as shipped (inbox/minhash.py, the winner:
  one 64-bit blake2b per shingle; its low bits pick one of 64 bins, the rest is the value;
  each bin keeps its minimum, and an empty bin borrows its right neighbour's, so the
  signature still bands for LSH); each empty bin looks at the other bins in an order of its
  own (the first version borrowed from the right-hand neighbour: `oph-neighbour`, kept
  here to show the difference in accuracy on short texts).

Both wall and CPU time (this process's) are given: on a loaded machine the wall time of a
few microseconds' work is mostly waiting, and CPU time is the steadier figure.

For each: the time per signature (wall, median of rounds) as a ratio to the baseline's in
the same run, and the accuracy of the Jaccard estimate against the exact Jaccard of the
same pairs (mean absolute error), and the share of near-duplicate pairs (exact Jaccard >=
0.5) and unrelated pairs each would put on the same LSH band (16 bands of 4 rows, as
inbox/suggestions.py does): the recall and false-candidate rate that decide the
suggestions' precision (a false candidate costs a scoring, not a wrong suggestion: it is
scored and dropped below the threshold).

    .venv/bin/python bench/minhash_light.py [--texts 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suggestions import complaint, edited
from inbox import minhash, suggestions

NUM_PERM = suggestions.NUM_PERM
BANDS = suggestions.BANDS
ROWS = NUM_PERM // BANDS
_PRIME = (1 << 61) - 1
_MAX32 = (1 << 32) - 1
_rnd = random.Random(11)
_A = [_rnd.randrange(1, _PRIME) for _ in range(NUM_PERM)]
_B = [_rnd.randrange(0, _PRIME) for _ in range(NUM_PERM)]
_PAIRS = list(zip(_A, _B, strict=True))

Signature = Sequence[int]


def _datasketch() -> Callable[[set[str]], Signature] | None:
    """datasketch's MinHash as inbox/suggestions.py built it before issue 24, if installed."""
    try:
        from datasketch import MinHash  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    template = MinHash(num_perm=NUM_PERM, seed=11)

    def datasketch_signature(parts: set[str]) -> Signature:
        sketch = MinHash(
            num_perm=NUM_PERM, seed=11, permutations=template.permutations, scheme=template.scheme
        )
        sketch.update_batch([p.encode() for p in sorted(parts)])
        return [int(v) for v in sketch.hashvalues]

    return datasketch_signature


def pure_minhash(parts: set[str]) -> Signature:
    hashes = [
        struct.unpack("<I", hashlib.sha1(p.encode(), usedforsecurity=False).digest()[:4])[0]
        for p in parts
    ]
    return [min(((a * h + b) % _PRIME) & _MAX32 for h in hashes) for a, b in _PAIRS]


def oph_neighbour(parts: set[str]) -> Signature:
    """The first OPH measured for issue 24: an empty bin borrows its right-hand neighbour's
    value (cyclically). Runs of empty bins then copy one value and agree or disagree
    together, which made short texts' estimates rougher than inbox/minhash.py's own probe
    order per bin."""
    empty = (1 << 64) - 1
    bins = [empty] * NUM_PERM
    for p in parts:
        h = int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8).digest(), "little")
        slot, value = h % NUM_PERM, h // NUM_PERM
        if value < bins[slot]:
            bins[slot] = value
    out = list(bins)
    for i in range(NUM_PERM):
        j = i
        while bins[j % NUM_PERM] == empty:
            j += 1
        out[i] = bins[j % NUM_PERM] + (j - i) * (1 << 58)
    return out


_PERSONS = [f"parity-mh{i}".encode() for i in range(NUM_PERM // 16)]
_SIXTEEN = struct.Struct("<16I")


def pure_blake(parts: set[str]) -> Signature:
    """64 independent 32-bit hash functions from four keyed blake2b digests per shingle;
    the minimum of each position is taken in C by map(min, ...)."""
    mins = [_MAX32] * NUM_PERM
    for p in parts:
        raw = p.encode()
        values: list[int] = []
        for person in _PERSONS:
            values += _SIXTEEN.unpack(hashlib.blake2b(raw, digest_size=64, person=person).digest())
        mins = list(map(min, mins, values))
    return mins


def ways() -> dict[str, Callable[[set[str]], Signature]]:
    """The ways measured, the baseline first."""
    found: dict[str, Callable[[set[str]], Signature]] = {}
    datasketch = _datasketch()
    if datasketch is not None:
        found["datasketch"] = datasketch
    found["pure-minhash"] = pure_minhash
    found["oph"] = minhash.signature
    found["oph-neighbour"] = oph_neighbour
    found["pure-blake"] = pure_blake
    return found


def estimate(a: Signature, b: Signature) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def shares_band(a: Signature, b: Signature) -> bool:
    return any(
        a[band * ROWS : (band + 1) * ROWS] == b[band * ROWS : (band + 1) * ROWS]
        for band in range(BANDS)
    )


def jaccard(x: set[str], y: set[str]) -> float:
    return len(x & y) / len(x | y) if x | y else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    texts = [suggestions.shingles(complaint(i)) for i in range(args.texts)]
    near = [
        (texts[i], suggestions.shingles(edited(complaint(i), i))) for i in range(0, args.texts, 3)
    ]
    far = [(texts[i], texts[i + 1]) for i in range(0, args.texts - 1, 2)]
    measured = ways()
    baseline = next(iter(measured))
    times: dict[str, list[float]] = {name: [] for name in measured}
    cpu: dict[str, list[float]] = {name: [] for name in measured}
    for _ in range(args.rounds):
        for name, way in measured.items():  # baseline first in every round
            start, start_cpu = time.perf_counter(), time.process_time()
            for parts in texts:
                way(parts)
            times[name].append((time.perf_counter() - start) / len(texts))
            cpu[name].append((time.process_time() - start_cpu) / len(texts))
    base = statistics.median(times[baseline])
    base_cpu = statistics.median(cpu[baseline])
    print(
        f"{args.texts} texts, {args.rounds} rounds; per signature, median of rounds; "
        f"ratio to {baseline}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"{'way':14} {'us/sig':>8} {'ratio':>6} {'cpu us':>7} {'ratio':>6} {'MAE':>6} "
        f"{'near-dup recall':>16} {'false cand.':>12}"
    )
    for name, way in measured.items():
        errors = []
        for x, y in near + far:
            errors.append(abs(estimate(way(x), way(y)) - jaccard(x, y)))
        dup_pairs = [(x, y) for x, y in near if jaccard(x, y) >= suggestions.THRESHOLD]
        recall = sum(shares_band(way(x), way(y)) for x, y in dup_pairs) / max(1, len(dup_pairs))
        false = sum(shares_band(way(x), way(y)) for x, y in far) / max(1, len(far))
        median, median_cpu = statistics.median(times[name]), statistics.median(cpu[name])
        print(
            f"{name:14} {median * 1e6:8.1f} {median / base:6.2f} {median_cpu * 1e6:7.1f} "
            f"{median_cpu / base_cpu:6.2f} {statistics.fmean(errors):6.3f} "
            f"{recall:16.3f} {false:12.4f}"
        )
    print(
        f"near-duplicate pairs (J >= {suggestions.THRESHOLD}): {len(dup_pairs)}; "
        f"unrelated: {len(far)}"
    )


if __name__ == "__main__":
    main()
