"""Merge suggestions: open cases from other people whose text is a near-duplicate.

Each case has a MinHash signature of its inbound text's word shingles (the union over its
messages: the element-wise minimum of their signatures), cut into LSH bands stored in
`case_bands`. A case's candidates are the cases sharing any (band, bucket); they are then
scored by the signatures' estimated Jaccard similarity and kept above THRESHOLD, within
WINDOW of each other, open, and of another contact. A suggestion is only ever shown: merging
is an agent's action.

Signatures are one-permutation hashing in plain Python (inbox/minhash.py, issue 24). Rows
from before it (`scheme` LEGACY, datasketch's) are compared only with each other, folded
with nothing new, and rebuilt from the stored messages by `reindex` (`parity suggestions
reindex`, and `parity run` in the background); a case with a LEGACY row that gets a message
or a merge is rebuilt on the spot.

Why these numbers (measured, see tests/test_suggestions.py and docs/agents/merges.md):
- 2-word shingles: a 5% word edit of a 55-word complaint keeps Jaccard about 0.86 with
  2-word shingles against 0.80 with 3-word ones (0.69 on the issue's sample); on our
  labelled pairs every same complaint scores 0.59..0.82 and every different one 0.02..0.46.
- 64 bins in 16 bands of 4 rows: the LSH S-curve's midpoint is (1/16)^(1/4) = 0.5,
  so a pair at 0.6 is a candidate with probability 0.88 and at 0.8 with 0.9998.
- MIN_SHINGLES: "thanks" or "help please" match everything short; texts under 8 shingles
  are never suggested (nor suggested for).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Connection,
    Engine,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    union_all,
    update,
)

from inbox import minhash
from inbox.db import read, write
from inbox.minhash import LEGACY, OPH, Signature
from inbox.models import Case, CaseBand, CaseSignature, Message, utcnow
from inbox.queries import OPEN_STATUSES, iso

SHINGLE = 2
NUM_PERM = minhash.NUM_PERM
BANDS = minhash.BANDS
ROWS = minhash.ROWS
THRESHOLD = 0.5
MIN_SHINGLES = 8
WINDOW = timedelta(days=7)
LIMIT = 5
_WORD = re.compile(r"\w+")


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    """Runs of `size` lower-cased words; a text shorter than that is one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) < size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def signature(parts: set[str]) -> Signature:
    """The signature of a set of shingles, in the current scheme (OPH)."""
    return minhash.signature(parts)


similarity = minhash.similarity


def buckets(values: Signature, scheme: int = OPH) -> list[int]:
    """One bucket per band (see minhash.buckets)."""
    return minhash.buckets(values, scheme)


def text_signature(text: str) -> tuple[bytes, int] | None:
    """The signature of one message's text and its shingle count, or None for no words.

    Pure: the normalizer's parse processes compute it, so the process that files the
    message only folds it into its case (`index_signatures`).
    """
    parts = shingles(text)
    if not parts:
        return None
    return minhash.encode(signature(parts)), len(parts)


def case_signature(conn: Connection, case_id: int) -> tuple[Signature, int] | None:
    """A case's signature and shingle count computed from its stored inbound messages (as
    the normalizer would have folded them one by one), or None when none has a word.

    Bounces are left out as at intake: their boilerplate would make every bounced case
    look alike."""
    values: Signature | None = None
    count = 0
    for m in conn.execute(
        select(Message.subject, Message.text, Message.meta)
        .where(Message.case_id == case_id, Message.direction == "inbound")
        .order_by(Message.id)
    ):
        if (m.meta or {}).get("delivery_report"):
            continue
        parts = shingles(f"{m.subject}\n{m.text}")
        if not parts:
            continue
        sig = signature(parts)
        values = sig if values is None else minhash.fold(values, sig)
        count += len(parts)
    return None if values is None else (values, count)


@dataclass
class PendingSignature:
    """Signatures of one case's messages filed in one transaction, folded together."""

    values: Signature
    shingles: int
    new_case: bool


def fold_signature(
    pending: dict[int, PendingSignature], case_id: int, sig: tuple[bytes, int], *, new_case: bool
) -> None:
    """Add one message's signature to what its case gets at the end of the transaction.

    The element-wise minimum is associative, so folding a batch's messages first and the
    stored signature last gives the signature `index_text` one message at a time would.
    """
    values, count = minhash.decode(sig[0]), sig[1]
    seen = pending.get(case_id)
    if seen is None:
        pending[case_id] = PendingSignature(values, count, new_case)
    else:
        seen.values = minhash.fold(seen.values, values)
        seen.shingles += count


def index_signatures(conn: Connection, pending: dict[int, PendingSignature]) -> None:
    """Write the folded signatures of a transaction's cases and their bands, set-based.

    The same rows as `index_text` per message: one read of the stored signatures of the
    cases that are not new, then one statement per kind of write. A case whose stored row
    is LEGACY is rebuilt from its messages instead (this transaction's are stored already).
    """
    if not pending:
        return
    existing = [case_id for case_id, p in pending.items() if not p.new_case]
    stored = (
        {
            r.case_id: r
            for r in conn.execute(
                select(
                    CaseSignature.case_id,
                    CaseSignature.hashvalues,
                    CaseSignature.shingles,
                    CaseSignature.scheme,
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
                    "hashvalues": minhash.encode(values),
                    "shingles": count,
                    "scheme": OPH,
                    "updated_at": now,
                }
            )
        else:
            if row.scheme != OPH:
                rebuilt = case_signature(conn, case_id)
                values, count = rebuilt if rebuilt is not None else (p.values, p.shingles)
                old: Signature | None = None
            else:
                old = minhash.decode(row.hashvalues)
                values = minhash.fold(old, p.values)
                count = row.shingles + p.shingles
            updates.append(
                {
                    "k_case_id": case_id,
                    "hashvalues": minhash.encode(values),
                    "shingles": count,
                    "scheme": OPH,
                    "updated_at": now,
                }
            )
            if old == values and row.shingles >= MIN_SHINGLES:
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
    insert_bands(conn, bands)


_UPDATE_SIGNATURE = (
    update(CaseSignature)
    .where(CaseSignature.case_id == bindparam("k_case_id"))
    .values(
        hashvalues=bindparam("hashvalues"),
        shingles=bindparam("shingles"),
        scheme=bindparam("scheme"),
        updated_at=bindparam("updated_at"),
    )
)


def index_text(conn: Connection, case_id: int, text: str, *, new_case: bool = False) -> None:
    """Fold one inbound message's text into its case's signature and bands (at ingest).

    `new_case`: the case was opened in this transaction, so it has no signature yet and
    there is none to read (one round trip fewer per new case).
    """
    sig = text_signature(text)
    if sig is None:
        return
    index_signatures(
        conn, {case_id: PendingSignature(minhash.decode(sig[0]), sig[1], new_case=new_case)}
    )


def _write_bands(
    conn: Connection, case_id: int, values: Signature, count: int, scheme: int, *, fresh: bool
) -> None:
    """A case's bands from its signature: none while it has fewer than MIN_SHINGLES."""
    if not fresh:
        conn.execute(delete(CaseBand).where(CaseBand.case_id == case_id))
    if count < MIN_SHINGLES:
        # Too short to be indexed yet; a later, longer message may change that.
        return
    insert_bands(
        conn,
        [
            {"case_id": case_id, "band": b, "bucket": h}
            for b, h in enumerate(buckets(values, scheme))
        ],
    )


# PostgreSQL: a batch's bands (BANDS rows per case) as one INSERT over three arrays. A
# multi-row VALUES or an executemany makes the server parse or execute once per row; the
# arrays are one statement whatever the count (bench/import_mbox.py; docs/benchmarks/intake.md).
_INSERT_BANDS_PG = text(
    "INSERT INTO case_bands (case_id, band, bucket)"
    " SELECT * FROM unnest(CAST(:case_ids AS bigint[]), CAST(:bands AS integer[]),"
    " CAST(:buckets AS bigint[]))"
)


def insert_bands(conn: Connection, bands: list[dict[str, Any]]) -> None:
    """Write band rows ({case_id, band, bucket}), one statement on either store."""
    if not bands:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(
            _INSERT_BANDS_PG,
            {
                "case_ids": [b["case_id"] for b in bands],
                "bands": [b["band"] for b in bands],
                "buckets": [b["bucket"] for b in bands],
            },
        )
        return
    conn.execute(insert(CaseBand), bands)


def saved_signature(conn: Connection, case_id: int) -> dict[str, Any] | None:
    """A case's signature as JSON-safe values, for a merge record to restore it from."""
    row = conn.execute(
        select(CaseSignature.hashvalues, CaseSignature.shingles, CaseSignature.scheme).where(
            CaseSignature.case_id == case_id
        )
    ).one_or_none()
    if row is None:
        return None
    return {
        "hashvalues": bytes(row.hashvalues).hex(),
        "shingles": row.shingles,
        "scheme": row.scheme,
    }


def restore_signature(conn: Connection, case_id: int, saved: dict[str, Any] | None) -> None:
    """Put back a signature taken by `saved_signature` (None: the case had none), and its
    bands, which are a function of the signature. A merge recorded before issue 24 saved
    no scheme: its signatures are LEGACY, and stay so until the re-index rebuilds them."""
    conn.execute(delete(CaseBand).where(CaseBand.case_id == case_id))
    conn.execute(delete(CaseSignature).where(CaseSignature.case_id == case_id))
    if saved is None:
        return
    data = bytes.fromhex(saved["hashvalues"])
    count = int(saved["shingles"])
    scheme = int(saved.get("scheme", LEGACY))
    conn.execute(
        insert(CaseSignature).values(
            case_id=case_id, hashvalues=data, shingles=count, scheme=scheme, updated_at=utcnow()
        )
    )
    _write_bands(conn, case_id, minhash.decode(data), count, scheme, fresh=True)


def fold_case(conn: Connection, source_id: int, into_id: int) -> None:
    """A merge: the survivor's signature becomes that of the union of both cases' texts (the
    element-wise minimum), its bands follow, and the absorbed case leaves the index (it is no
    longer open, and its text now lives in the survivor's signature). Signatures of two
    schemes cannot be folded: the survivor, which holds both cases' messages by now, is
    rebuilt from them."""
    rows = {
        r.case_id: r
        for r in conn.execute(
            select(
                CaseSignature.case_id,
                CaseSignature.hashvalues,
                CaseSignature.shingles,
                CaseSignature.scheme,
            ).where(CaseSignature.case_id.in_([source_id, into_id]))
        )
    }
    conn.execute(delete(CaseBand).where(CaseBand.case_id == source_id))
    conn.execute(delete(CaseSignature).where(CaseSignature.case_id == source_id))
    source, into = rows.get(source_id), rows.get(into_id)
    if source is None:
        return
    values = minhash.decode(source.hashvalues)
    count, scheme = source.shingles, source.scheme
    if into is not None and into.scheme != scheme:
        rebuilt = case_signature(conn, into_id)
        if rebuilt is None:
            conn.execute(delete(CaseBand).where(CaseBand.case_id == into_id))
            conn.execute(delete(CaseSignature).where(CaseSignature.case_id == into_id))
            return
        (values, count), scheme = rebuilt, OPH
    elif into is not None:
        values = minhash.fold(minhash.decode(into.hashvalues), values)
        count += into.shingles
    if into is not None:
        conn.execute(
            update(CaseSignature)
            .where(CaseSignature.case_id == into_id)
            .values(
                hashvalues=minhash.encode(values),
                shingles=count,
                scheme=scheme,
                updated_at=utcnow(),
            )
        )
    else:
        conn.execute(
            insert(CaseSignature).values(
                case_id=into_id,
                hashvalues=minhash.encode(values),
                shingles=count,
                scheme=scheme,
                updated_at=utcnow(),
            )
        )
    _write_bands(conn, into_id, values, count, scheme, fresh=into is None)


def legacy_signatures(conn: Connection) -> int:
    """How many stored signatures are still LEGACY (waiting for the re-index)."""
    return int(
        conn.execute(
            select(func.count()).select_from(CaseSignature).where(CaseSignature.scheme != OPH)
        ).scalar_one()
    )


def reindex_batch(engine: Engine, size: int = 200) -> int:
    """Rebuild up to `size` LEGACY signatures (lowest case ids first) from their cases'
    stored messages in one write transaction; the number of LEGACY rows it took (0: none
    left).

    Each row is replaced only if it is still LEGACY when written: a message filed to the
    case meanwhile rebuilt it already (from the same messages and its own), and on
    PostgreSQL the conditional UPDATE waits for that writer and then matches no row. So it
    is idempotent, and resumable: a stopped re-index leaves only whole batches behind."""
    with write(engine) as conn:
        ids = list(
            conn.execute(
                select(CaseSignature.case_id)
                .where(CaseSignature.scheme != OPH)
                .order_by(CaseSignature.case_id)
                .limit(size)
            ).scalars()
        )
        for case_id in ids:
            rebuilt = case_signature(conn, case_id)
            legacy = (CaseSignature.case_id == case_id) & (CaseSignature.scheme != OPH)
            if rebuilt is None:
                # No stored words left (erased, or only bounces): nothing to index.
                if conn.execute(delete(CaseSignature).where(legacy)).rowcount:
                    conn.execute(delete(CaseBand).where(CaseBand.case_id == case_id))
                continue
            values, count = rebuilt
            changed = conn.execute(
                update(CaseSignature)
                .where(legacy)
                .values(
                    hashvalues=minhash.encode(values),
                    shingles=count,
                    scheme=OPH,
                    updated_at=utcnow(),
                )
            ).rowcount
            if changed:
                _write_bands(conn, case_id, values, count, OPH, fresh=False)
        return len(ids)


def reindex(
    engine: Engine, *, size: int = 200, progress: Callable[[int], None] | None = None
) -> int:
    """Rebuild every LEGACY signature, batch after batch; the number of rows taken."""
    total = 0
    while done := reindex_batch(engine, size):
        total += done
        if progress is not None:
            progress(total)
    return total


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
    scheme: int = OPH


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
    values: dict[int, Signature] = {}
    probes: dict[tuple[int, int], list[int]] = {}
    for case_id, row in own.items():
        values[case_id] = minhash.decode(row.hashvalues)
        # A LEGACY case probes with the LEGACY buckets, so it only meets LEGACY cases.
        for band, bucket in enumerate(buckets(values[case_id], row.scheme)):
            probes.setdefault((band, bucket), []).append(case_id)
    return _pair(conn, own, values, probes, result, threshold, window, limit)


def _own(conn: Connection, case_ids: list[int]) -> dict[int, Own]:
    return {
        r.case_id: Own(r.hashvalues, r.contact_id, r.first_inbound_at, r.scheme)
        for r in conn.execute(
            select(
                CaseSignature.case_id,
                CaseSignature.hashvalues,
                CaseSignature.shingles,
                CaseSignature.scheme,
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
    values: dict[int, Signature],
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
            select(CaseSignature.case_id, CaseSignature.hashvalues, CaseSignature.scheme).where(
                CaseSignature.case_id.in_(ids)
            )
        ):
            theirs = minhash.decode(sig.hashvalues)
            for case_id in asked_by[sig.case_id]:
                if own[case_id].scheme != sig.scheme:
                    continue  # never compared across schemes, even on a bucket collision
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
