"""Merge suggestions: open cases from other people whose text is a near-duplicate.

Each case has a MinHash signature of its inbound text's word shingles (the union over its
messages: the element-wise minimum of their signatures), cut into LSH bands stored in
`case_bands`. A case's candidates are the cases sharing any (band, bucket); they are then
scored by the signatures' estimated Jaccard similarity and kept above THRESHOLD, within
WINDOW of each other, open, and of another contact. A suggestion is only ever shown: merging
is an agent's action.

Why these numbers (measured, see tests/test_suggestions.py and docs/agents/merges.md):
- 2-word shingles: a 5% word edit of a 55-word complaint keeps Jaccard about 0.86 with
  2-word shingles against 0.80 with 3-word ones (0.69 on the issue's sample); on our
  labelled pairs every same complaint scores 0.59..0.82 and every different one 0.02..0.46.
- 64 permutations in 16 bands of 4 rows: the LSH S-curve's midpoint is (1/16)^(1/4) = 0.5,
  so a pair at 0.6 is a candidate with probability 0.88 and at 0.8 with 0.9998.
- MIN_SHINGLES: "thanks" or "help please" match everything short; texts under 8 shingles
  are never suggested (nor suggested for).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
from datasketch import MinHash  # type: ignore[import-untyped]
from sqlalchemy import (
    CompoundSelect,
    Connection,
    Engine,
    bindparam,
    delete,
    insert,
    select,
    union_all,
    update,
)

from inbox.db import read
from inbox.models import Case, CaseBand, CaseSignature, utcnow
from inbox.queries import OPEN_STATUSES, iso

SHINGLE = 2
NUM_PERM = 64
BANDS = 16
ROWS = NUM_PERM // BANDS
THRESHOLD = 0.5
MIN_SHINGLES = 8
WINDOW = timedelta(days=7)
LIMIT = 5
_WORD = re.compile(r"\w+")
_SEED = 11


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    """Runs of `size` lower-cased words; a text shorter than that is one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) < size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


# Drawing the permutations costs most of a MinHash's set-up: draw them once per process.
_TEMPLATE = MinHash(num_perm=NUM_PERM, seed=_SEED)
_PERMUTATIONS, _SCHEME = _TEMPLATE.permutations, _TEMPLATE.scheme


def signature(parts: set[str]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    sketch = MinHash(num_perm=NUM_PERM, seed=_SEED, permutations=_PERMUTATIONS, scheme=_SCHEME)
    sketch.update_batch([p.encode() for p in sorted(parts)])
    return np.asarray(sketch.hashvalues, dtype=np.uint64)


def similarity(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    """Estimated Jaccard similarity: the share of permutations whose minimum agrees."""
    return float(np.count_nonzero(a == b)) / len(a)


def buckets(values: np.ndarray[Any, Any]) -> list[int]:
    """One bucket per band: a 63-bit hash of the band's rows (fits a signed BIGINT)."""
    out = []
    for band in range(BANDS):
        chunk = values[band * ROWS : (band + 1) * ROWS].astype("<u8").tobytes()
        digest = hashlib.blake2b(chunk, digest_size=8, person=band.to_bytes(2, "big")).digest()
        out.append(int.from_bytes(digest, "big") >> 1)
    return out


def _decode(data: bytes) -> np.ndarray[Any, Any]:
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def text_signature(text: str) -> tuple[bytes, int] | None:
    """The signature of one message's text and its shingle count, or None for no words.

    Pure: the normalizer's parse processes compute it, so the process that files the
    message only folds it into its case (`index_signatures`).
    """
    parts = shingles(text)
    if not parts:
        return None
    return signature(parts).astype("<u8").tobytes(), len(parts)


@dataclass
class PendingSignature:
    """Signatures of one case's messages filed in one transaction, folded together."""

    values: np.ndarray[Any, np.dtype[np.uint64]]
    shingles: int
    new_case: bool


def fold_signature(
    pending: dict[int, PendingSignature], case_id: int, sig: tuple[bytes, int], *, new_case: bool
) -> None:
    """Add one message's signature to what its case gets at the end of the transaction.

    The element-wise minimum is associative, so folding a batch's messages first and the
    stored signature last gives the signature `index_text` one message at a time would.
    """
    values, count = _decode(sig[0]), sig[1]
    seen = pending.get(case_id)
    if seen is None:
        pending[case_id] = PendingSignature(values, count, new_case)
    else:
        seen.values = np.minimum(seen.values, values)
        seen.shingles += count


def index_signatures(conn: Connection, pending: dict[int, PendingSignature]) -> None:
    """Write the folded signatures of a transaction's cases and their bands, set-based.

    The same rows as `index_text` per message: one read of the stored signatures of the
    cases that are not new, then one statement per kind of write.
    """
    if not pending:
        return
    existing = [case_id for case_id, p in pending.items() if not p.new_case]
    stored = (
        {
            r.case_id: r
            for r in conn.execute(
                select(
                    CaseSignature.case_id, CaseSignature.hashvalues, CaseSignature.shingles
                ).where(CaseSignature.case_id.in_(sorted(existing)))
            )
        }
        if existing
        else {}
    )
    now = utcnow()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    cleared: list[int] = []
    bands: list[dict[str, Any]] = []
    for case_id in sorted(pending):
        p = pending[case_id]
        row = stored.get(case_id)
        if row is None:
            values, count = p.values, p.shingles
            inserts.append(
                {
                    "case_id": case_id,
                    "hashvalues": values.astype("<u8").tobytes(),
                    "shingles": count,
                    "updated_at": now,
                }
            )
        else:
            old = _decode(row.hashvalues)
            values = np.minimum(old, p.values)
            count = row.shingles + p.shingles
            updates.append(
                {
                    "k_case_id": case_id,
                    "hashvalues": values.astype("<u8").tobytes(),
                    "shingles": count,
                    "updated_at": now,
                }
            )
            if np.array_equal(old, values) and row.shingles >= MIN_SHINGLES:
                continue  # the bands are those of the stored signature already
            cleared.append(case_id)
        if count >= MIN_SHINGLES:
            bands.extend(
                {"case_id": case_id, "band": b, "bucket": h} for b, h in enumerate(buckets(values))
            )
    if inserts:
        conn.execute(insert(CaseSignature), inserts)
    if updates:
        conn.execute(_UPDATE_SIGNATURE, updates)
    if cleared:
        conn.execute(delete(CaseBand).where(CaseBand.case_id.in_(cleared)))
    if bands:
        conn.execute(insert(CaseBand), bands)


_UPDATE_SIGNATURE = (
    update(CaseSignature)
    .where(CaseSignature.case_id == bindparam("k_case_id"))
    .values(
        hashvalues=bindparam("hashvalues"),
        shingles=bindparam("shingles"),
        updated_at=bindparam("updated_at"),
    )
)


def index_text(conn: Connection, case_id: int, text: str, *, new_case: bool = False) -> None:
    """Fold one inbound message's text into its case's signature and bands (at ingest).

    `new_case`: the case was opened in this transaction, so it has no signature yet and
    there is none to read (one round trip fewer per new case).
    """
    parts = shingles(text)
    if not parts:
        return
    values = signature(parts)
    row = (
        None
        if new_case
        else conn.execute(
            select(CaseSignature.hashvalues, CaseSignature.shingles).where(
                CaseSignature.case_id == case_id
            )
        ).one_or_none()
    )
    if row is None:
        count = len(parts)
        conn.execute(
            insert(CaseSignature).values(
                case_id=case_id,
                hashvalues=values.astype("<u8").tobytes(),
                shingles=count,
                updated_at=utcnow(),
            )
        )
    else:
        old = _decode(row.hashvalues)
        merged = np.minimum(old, values)
        # The shingle count is an upper bound of the union's size; it only gates short texts.
        count = row.shingles + len(parts)
        conn.execute(
            update(CaseSignature)
            .where(CaseSignature.case_id == case_id)
            .values(hashvalues=merged.astype("<u8").tobytes(), shingles=count, updated_at=utcnow())
        )
        if np.array_equal(old, merged) and row.shingles >= MIN_SHINGLES:
            return
        values = merged
    _write_bands(conn, case_id, values, count, fresh=row is None)


def _write_bands(
    conn: Connection, case_id: int, values: np.ndarray[Any, Any], count: int, *, fresh: bool
) -> None:
    """A case's bands from its signature: none while it has fewer than MIN_SHINGLES."""
    if not fresh:
        conn.execute(delete(CaseBand).where(CaseBand.case_id == case_id))
    if count < MIN_SHINGLES:
        # Too short to be indexed yet; a later, longer message may change that.
        return
    conn.execute(
        insert(CaseBand),
        [{"case_id": case_id, "band": b, "bucket": h} for b, h in enumerate(buckets(values))],
    )


def saved_signature(conn: Connection, case_id: int) -> dict[str, Any] | None:
    """A case's signature as JSON-safe values, for a merge record to restore it from."""
    row = conn.execute(
        select(CaseSignature.hashvalues, CaseSignature.shingles).where(
            CaseSignature.case_id == case_id
        )
    ).one_or_none()
    if row is None:
        return None
    return {"hashvalues": bytes(row.hashvalues).hex(), "shingles": row.shingles}


def restore_signature(conn: Connection, case_id: int, saved: dict[str, Any] | None) -> None:
    """Put back a signature taken by `saved_signature` (None: the case had none), and its
    bands, which are a function of the signature."""
    conn.execute(delete(CaseBand).where(CaseBand.case_id == case_id))
    conn.execute(delete(CaseSignature).where(CaseSignature.case_id == case_id))
    if saved is None:
        return
    data = bytes.fromhex(saved["hashvalues"])
    count = int(saved["shingles"])
    conn.execute(
        insert(CaseSignature).values(
            case_id=case_id, hashvalues=data, shingles=count, updated_at=utcnow()
        )
    )
    _write_bands(conn, case_id, _decode(data), count, fresh=True)


def fold_case(conn: Connection, source_id: int, into_id: int) -> None:
    """A merge: the survivor's signature becomes that of the union of both cases' texts (the
    element-wise minimum), its bands follow, and the absorbed case leaves the index (it is no
    longer open, and its text now lives in the survivor's signature)."""
    rows = {
        r.case_id: r
        for r in conn.execute(
            select(CaseSignature.case_id, CaseSignature.hashvalues, CaseSignature.shingles).where(
                CaseSignature.case_id.in_([source_id, into_id])
            )
        )
    }
    conn.execute(delete(CaseBand).where(CaseBand.case_id == source_id))
    conn.execute(delete(CaseSignature).where(CaseSignature.case_id == source_id))
    source, into = rows.get(source_id), rows.get(into_id)
    if source is None:
        return
    values = _decode(source.hashvalues)
    count = source.shingles
    if into is not None:
        values = np.minimum(_decode(into.hashvalues), values)
        count += into.shingles
        conn.execute(
            update(CaseSignature)
            .where(CaseSignature.case_id == into_id)
            .values(hashvalues=values.astype("<u8").tobytes(), shingles=count, updated_at=utcnow())
        )
    else:
        conn.execute(
            insert(CaseSignature).values(
                case_id=into_id,
                hashvalues=values.astype("<u8").tobytes(),
                shingles=count,
                updated_at=utcnow(),
            )
        )
    _write_bands(conn, into_id, values, count, fresh=into is None)


@dataclass(frozen=True)
class Suggestion:
    case_id: int
    reference: str
    score: float
    subject: str
    first_inbound_at: str | None

    def json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "score": round(self.score, 3),
            "subject": self.subject,
            "first_inbound_at": self.first_inbound_at,
        }


@dataclass(frozen=True)
class Own:
    """A case's own signature and what pairing needs of the case, read by the caller."""

    hashvalues: bytes
    contact_id: int
    first_inbound_at: datetime


def suggestions_for(
    conn: Connection,
    case_ids: list[int],
    *,
    threshold: float = THRESHOLD,
    window: timedelta = WINDOW,
    limit: int = LIMIT,
    own: dict[int, Own] | None = None,
) -> dict[int, list[Suggestion]]:
    """Near-duplicate open cases of other contacts for each of these cases, best first.

    `own`: the cases' signatures (those with at least MIN_SHINGLES), when the caller read
    them already (claim-next reads them in its one statement); else they are read here.
    """
    result: dict[int, list[Suggestion]] = {c: [] for c in case_ids}
    if not case_ids:
        return result
    own = own if own is not None else _own(conn, case_ids)
    values = {}
    probes: dict[tuple[int, int], list[int]] = {}
    for case_id, row in own.items():
        values[case_id] = _decode(row.hashvalues)
        for band, bucket in enumerate(buckets(values[case_id])):
            probes.setdefault((band, bucket), []).append(case_id)
    return _pair(conn, own, values, probes, result, threshold, window, limit)


def _own(conn: Connection, case_ids: list[int]) -> dict[int, Own]:
    return {
        r.case_id: Own(r.hashvalues, r.contact_id, r.first_inbound_at)
        for r in conn.execute(
            select(
                CaseSignature.case_id,
                CaseSignature.hashvalues,
                CaseSignature.shingles,
                Case.contact_id,
                Case.first_inbound_at,
            )
            .join(Case, Case.id == CaseSignature.case_id)
            .where(CaseSignature.case_id.in_(case_ids))
        )
        if r.shingles >= MIN_SHINGLES
    }


def _pair(
    conn: Connection,
    own: dict[int, Own],
    values: dict[int, Any],
    probes: dict[tuple[int, int], list[int]],
    result: dict[int, list[Suggestion]],
    threshold: float,
    window: timedelta,
    limit: int,
) -> dict[int, list[Suggestion]]:
    if not probes:
        return result
    pairs: dict[int, set[int]] = {}
    keys = list(probes)
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        params = {f"b{i}": b for i, (b, _h) in enumerate(chunk)}
        params.update({f"h{i}": h for i, (_b, h) in enumerate(chunk)})
        for r in conn.execute(_probe(len(chunk)), params):
            for case_id in probes[(r.band, r.bucket)]:
                if r.case_id != case_id:
                    pairs.setdefault(case_id, set()).add(r.case_id)
    asked_by: dict[int, list[int]] = {}  # candidate -> the cases it is a candidate for
    for case_id, others in pairs.items():
        for other_id in others:
            asked_by.setdefault(other_id, []).append(case_id)
    candidate_ids = sorted(asked_by)
    if not candidate_ids:
        return result
    # Score first, on the signatures alone (one primary-key lookup each): most candidates
    # of a large store share only a common phrase's band and fall below the threshold, so
    # only the few that pass cost a read of their case.
    scores: dict[tuple[int, int], float] = {}
    for start in range(0, len(candidate_ids), 900):
        ids = candidate_ids[start : start + 900]
        for sig in conn.execute(
            select(CaseSignature.case_id, CaseSignature.hashvalues).where(
                CaseSignature.case_id.in_(ids)
            )
        ):
            theirs = _decode(sig.hashvalues)
            for case_id in asked_by[sig.case_id]:
                score = similarity(values[case_id], theirs)
                if score >= threshold:
                    scores[(case_id, sig.case_id)] = score
    passed = sorted({other for _mine, other in scores})
    candidates = {}
    for start in range(0, len(passed), 900):
        ids = passed[start : start + 900]
        for c in conn.execute(
            select(
                Case.id, Case.reference, Case.subject, Case.contact_id, Case.first_inbound_at
            ).where(Case.id.in_(ids), Case.status.in_(OPEN_STATUSES))
        ):
            candidates[c.id] = c
    found: dict[int, list[Suggestion]] = {}
    for (case_id, other_id), score in scores.items():
        mine, other = own[case_id], candidates.get(other_id)
        if other is None or other.contact_id == mine.contact_id:
            continue
        if abs(other.first_inbound_at - mine.first_inbound_at) > window:
            continue
        found.setdefault(case_id, []).append(
            Suggestion(other.id, other.reference, score, other.subject, iso(other.first_inbound_at))
        )
    for case_id, rows in found.items():
        rows.sort(key=lambda s: (-s.score, s.case_id))
        result[case_id] = rows[:limit]
    return result


# Pairs per probe statement: a UNION ALL of this many terms stays under SQLite's limit of
# 500 compound terms; a queue page of 50 cases is then 13 statements.
_CHUNK = 64
# Rows read per (band, bucket), newest cases first. A bucket shared by thousands of cases
# holds a common phrase's minima ("i cannot log in to my account"), not a near-duplicate:
# at 1,000,000 synthetic complaints a few buckets held thousands of rows each, and the
# messages that hit one spent their time reading and scoring unrelated cases. A real
# near-duplicate shares several bands (about 4 of 16 at a Jaccard of 0.7), nearly all of
# them rare buckets, so capping the common ones costs little recall and keeps the cost per
# message flat. Newest first, because suggestions are for cases within WINDOW anyway.
BUCKET_CAP = 32


@lru_cache(maxsize=64)
def _probe(size: int) -> CompoundSelect[int, int, int]:
    """The lookup of `size` (band, bucket) pairs, built once per size: building the
    comparisons anew for every message cost more than running them.

    One index range per pair, each read from ix_case_bands_probe alone (it holds case_id,
    in order, so the newest BUCKET_CAP are its last entries)."""
    terms = []
    for i in range(size):
        term = (
            select(CaseBand.case_id, CaseBand.band, CaseBand.bucket)
            .where(CaseBand.band == bindparam(f"b{i}"), CaseBand.bucket == bindparam(f"h{i}"))
            .order_by(CaseBand.case_id.desc())
            .limit(BUCKET_CAP)
            .subquery()
        )
        terms.append(select(term.c.case_id, term.c.band, term.c.bucket))
    return union_all(*terms)


def for_reference(engine: Engine, reference: str) -> list[dict[str, Any]]:
    with read(engine) as conn:
        case_id = conn.execute(
            select(Case.id).where(Case.reference == reference.strip().upper())
        ).scalar_one_or_none()
        if case_id is None:
            return []
        return [s.json() for s in suggestions_for(conn, [case_id])[case_id]]
