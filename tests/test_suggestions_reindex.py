"""Upgrading the merge-suggestion index to one-permutation hashing (issue 24), on SQLite and
PostgreSQL: a store whose signatures are of the old scheme (datasketch's, `scheme` 1) keeps
suggesting during the upgrade, never compares the two schemes, and `parity suggestions
reindex` (or the daemon) rebuilds it, idempotently and resumably.

The old-scheme rows are written here as datasketch wrote them: universal hashing
(a*h + b) mod (2^61 - 1) of a 32-bit SHA-1 per shingle, banded with the old bucket hash
(written out by hand in tests/test_minhash.py), because datasketch is no longer installed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, create_engine, delete, insert, select, text, update

from inbox import merges, migrate, minhash, suggestions
from inbox.db import make_engine, write
from inbox.models import Case, CaseBand, CaseSignature
from parity import cli
from parity.daemon import reindex_signatures
from tests.conftest import PG_ADMIN_URL
from tests.fixtures.suggestions.pairs import PAIRS
from tests.support.inbox_helpers import email_case
from tests.test_suggestions import agent, case_id, index_rows, suggested

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
_PRIME = (1 << 61) - 1
_rnd = random.Random(1)
_PERMS = [(_rnd.randrange(1, _PRIME), _rnd.randrange(0, _PRIME)) for _ in range(64)]


def legacy_values(text: str) -> tuple[int, ...]:
    hashes = [
        struct.unpack("<I", hashlib.sha1(p.encode(), usedforsecurity=False).digest()[:4])[0]
        for p in suggestions.shingles(text)
    ]
    return tuple(min(((a * h + b) % _PRIME) & 0xFFFFFFFF for h in hashes) for a, b in _PERMS)


def make_legacy(engine: Engine, texts: dict[int, str]) -> None:
    """Rewrite these cases' rows as a store from before migration 0021 holds them."""
    with write(engine) as conn:
        for cid, text in texts.items():
            values = legacy_values(text)
            conn.execute(
                update(CaseSignature)
                .where(CaseSignature.case_id == cid)
                .values(hashvalues=minhash.encode(values), scheme=minhash.LEGACY)
            )
            conn.execute(delete(CaseBand).where(CaseBand.case_id == cid))
            conn.execute(
                insert(CaseBand),
                [
                    {"case_id": cid, "band": b, "bucket": h}
                    for b, h in enumerate(minhash.buckets(values, minhash.LEGACY))
                ],
            )


def schemes(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(CaseSignature.case_id, CaseSignature.scheme)).all())


def pair_cases(engine: Engine, index: int, tag: str) -> tuple[str, str, str, str]:
    _label, _kind, first, second = PAIRS[index]
    a = email_case(engine, f"{tag}a@example.com", "", first, msgid=f"{tag}a@x", at=T0)
    b = email_case(engine, f"{tag}b@example.com", "", second, msgid=f"{tag}b@x", at=T0)
    return a, b, first, second


def test_an_old_store_keeps_suggesting_and_is_reindexed_resumably(
    engine: Engine, tmp_path: Path
) -> None:
    cases = [pair_cases(engine, i, f"p{i}") for i in (0, 1, 2)]
    fresh = index_rows(engine)  # the rows intake wrote in the new scheme
    texts = {
        case_id(engine, ref): text for a, b, ta, tb in cases for ref, text in ((a, ta), (b, tb))
    }
    make_legacy(engine, texts)
    assert set(schemes(engine).values()) == {minhash.LEGACY}
    with engine.connect() as conn:
        assert suggestions.legacy_signatures(conn) == 6

    # During the upgrade: old-scheme near-duplicates still find each other ...
    a0, b0, first0, _second0 = cases[0]
    assert suggested(engine, a0) == {b0}
    # ... and a new case (new scheme) of the same text is not compared with them.
    new = email_case(engine, "new@example.com", "", first0, msgid="new@x", at=T0)
    assert schemes(engine)[case_id(engine, new)] == minhash.OPH
    assert suggested(engine, new) == set()
    assert new not in suggested(engine, b0)

    # Resumable: one batch of one case, then a run that is stopped ... then the rest.
    assert suggestions.reindex_batch(engine, size=1) == 1
    with engine.connect() as conn:
        assert suggestions.legacy_signatures(conn) == 5
    settings = tmp_path / "settings.toml"
    settings.write_text(
        f'[database]\nurl = "{engine.url.render_as_string(hide_password=False)}"\n'
        'url_env = "PARITY_TEST_NO_SUCH_VAR"\n'
    )
    assert cli.main(["--settings", str(settings), "suggestions", "reindex", "--batch", "2"]) == 0
    assert set(schemes(engine).values()) == {minhash.OPH}
    rebuilt = index_rows(engine)
    for cid in texts:
        assert rebuilt[cid] == fresh[cid], cid  # as if intake had written them today
    for a, b, _ta, _tb in cases:
        assert b in suggested(engine, a)
    # The new case and the reindexed ones now meet.
    assert {a0, b0} <= suggested(engine, new)

    # Idempotent: nothing left, nothing changes.
    assert cli.main(["--settings", str(settings), "suggestions", "reindex"]) == 0
    assert suggestions.reindex(engine) == 0
    assert index_rows(engine) == rebuilt


def test_rows_of_two_schemes_are_never_compared_even_on_a_bucket_collision(
    engine: Engine,
) -> None:
    # A forged old-scheme row with the very bytes and buckets of a new one: compared, it
    # would score 1.0. It must not be suggested either way.
    a, b, _first, _second = pair_cases(engine, 0, "c")
    ids = case_id(engine, a), case_id(engine, b)
    assert suggested(engine, a) == {b}
    with write(engine) as conn:
        conn.execute(
            update(CaseSignature)
            .where(CaseSignature.case_id == ids[1])
            .values(scheme=minhash.LEGACY)
        )
    assert suggested(engine, a) == set()
    assert suggested(engine, b) == set()
    with engine.connect() as conn:
        found = suggestions.suggestions_for(conn, list(ids))
    assert found == {ids[0]: [], ids[1]: []}


def test_a_message_to_an_old_scheme_case_rebuilds_its_signature(engine: Engine) -> None:
    _l, _k, first, later = PAIRS[3]
    old = email_case(engine, "olga@example.com", "", first, msgid="o1@x", at=T0)
    make_legacy(engine, {case_id(engine, old): first})
    # Expected: a contact who wrote both texts in one thread, indexed in the new scheme.
    control = email_case(engine, "ctl@example.com", "", first, msgid="k1@x", at=T0)
    email_case(
        engine,
        "ctl@example.com",
        "",
        later,
        msgid="k2@x",
        at=T0 + timedelta(hours=1),
        extra="In-Reply-To: <k1@x>\r\n",
    )
    email_case(
        engine,
        "olga@example.com",
        "",
        later,
        msgid="o2@x",
        at=T0 + timedelta(hours=1),
        extra="In-Reply-To: <o1@x>\r\n",
    )
    rows = index_rows(engine)
    assert schemes(engine)[case_id(engine, old)] == minhash.OPH
    assert rows[case_id(engine, old)] == rows[case_id(engine, control)]


def test_merging_an_old_scheme_case_into_a_new_one_rebuilds_the_survivor(
    engine: Engine,
) -> None:
    _l, _k, email_text, tweet_text = PAIRS[6]
    who = agent(engine)
    survivor = email_case(engine, "alice@example.com", "", email_text, msgid="s@x", at=T0)
    absorbed = email_case(engine, "alice.w@example.org", "", tweet_text, msgid="b@x", at=T0)
    union = email_case(engine, "carol@example.com", "", email_text, msgid="c1@x", at=T0)
    email_case(engine, "carol@example.com", "", tweet_text, msgid="c2@x", at=T0)
    make_legacy(engine, {case_id(engine, absorbed): tweet_text})
    before = index_rows(engine)

    record = merges.merge(engine, who, absorbed, survivor)
    merged = index_rows(engine)
    assert merged[case_id(engine, survivor)] == before[case_id(engine, union)]
    assert schemes(engine)[case_id(engine, survivor)] == minhash.OPH

    # The undo puts back each case's row as it was, the old scheme included.
    merges.undo(engine, who, record["id"])
    restored = index_rows(engine)
    for reference in (survivor, absorbed):
        assert restored[case_id(engine, reference)] == before[case_id(engine, reference)]
    assert schemes(engine)[case_id(engine, absorbed)] == minhash.LEGACY


def test_an_old_row_whose_case_has_no_words_left_leaves_the_index(engine: Engine) -> None:
    ref = email_case(engine, "gone@example.com", "", PAIRS[0][2], msgid="g@x", at=T0)
    cid = case_id(engine, ref)
    make_legacy(engine, {cid: PAIRS[0][2]})
    with write(engine) as conn:  # the message's text erased meanwhile
        from inbox.models import Message

        conn.execute(update(Message).where(Message.case_id == cid).values(text="", subject=""))
    assert suggestions.reindex(engine) == 1
    assert cid not in index_rows(engine)
    with engine.connect() as conn:
        assert not conn.execute(select(CaseBand.id).where(CaseBand.case_id == cid)).first()


def test_the_daemon_reindexes_in_the_background(engine: Engine) -> None:
    a, b, first, second = pair_cases(engine, 1, "d")
    fresh = index_rows(engine)
    make_legacy(engine, {case_id(engine, a): first, case_id(engine, b): second})

    async def run() -> int:
        return await reindex_signatures(engine, asyncio.Event(), size=1)

    assert asyncio.run(run()) == 2
    assert index_rows(engine) == fresh
    assert set(schemes(engine).values()) == {minhash.OPH}
    # Nothing left: one count, no batch.
    assert asyncio.run(run()) == 0


def test_a_case_without_a_signature_is_left_alone(engine: Engine) -> None:
    # Cases older than the index have no row: the re-index rebuilds rows, it adds none.
    ref = email_case(engine, "old@example.com", "", PAIRS[0][2], msgid="n@x", at=T0)
    cid = case_id(engine, ref)
    with write(engine) as conn:
        conn.execute(delete(CaseBand).where(CaseBand.case_id == cid))
        conn.execute(delete(CaseSignature).where(CaseSignature.case_id == cid))
    assert suggestions.reindex(engine) == 0
    with engine.connect() as conn:
        assert conn.execute(select(Case.id).where(Case.id == cid)).scalar_one() == cid
    assert cid not in index_rows(engine)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at_0020(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database migrated only to 0020, as the version before issue 24 left it."""
    admin = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        name = None
    else:
        name = f"parity_0020_{os.getpid()}_{secrets.token_hex(3)}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    migrate.upgrade(engine, "0020")
    yield engine
    engine.dispose()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _raw_case(conn: Connection, cid: int, values: tuple[int, ...], scheme: int | None) -> None:
    at = T0.replace(tzinfo=None)
    conn.execute(
        text(
            "INSERT INTO cases (id, reference, token, contact_id, status, channel, subject,"
            " due_at, first_inbound_at, last_activity_at, created_at, followups)"
            " VALUES (:id, :ref, 'abcdefghijkl', 1, 'open', 'email', '', :at, :at, :at, :at, 0)"
        ),
        {"id": cid, "ref": f"C-{cid:06d}", "at": at},
    )
    columns, params = "case_id, hashvalues, shingles, updated_at", ":id, :h, 20, :at"
    if scheme is not None:
        columns, params = columns + ", scheme", params + ", :s"
    conn.execute(
        text(f"INSERT INTO case_signatures ({columns}) VALUES ({params})"),  # noqa: S608
        {"id": cid, "h": minhash.encode(values), "at": at, "s": scheme},
    )
    for band, bucket in enumerate(minhash.buckets(values, scheme or minhash.LEGACY)):
        conn.execute(
            text("INSERT INTO case_bands (case_id, band, bucket) VALUES (:id, :b, :h)"),
            {"id": cid, "b": band, "h": bucket},
        )


def test_migration_0021_marks_old_rows_and_its_downgrade_drops_new_ones(
    store_at_0020: Engine,
) -> None:
    engine = store_at_0020
    old = legacy_values(PAIRS[0][2])
    with write(engine) as conn:
        conn.execute(
            text("INSERT INTO contacts (id, name, created_at) VALUES (1, 'x', :at)"),
            {"at": T0.replace(tzinfo=None)},
        )
        _raw_case(conn, 1, old, None)  # written by the code before 0021: no scheme
    migrate.upgrade(engine)
    assert schemes(engine) == {1: minhash.LEGACY}
    new = minhash.signature(suggestions.shingles(PAIRS[0][2]))
    with write(engine) as conn:
        _raw_case(conn, 2, new, minhash.OPH)
    assert schemes(engine) == {1: minhash.LEGACY, 2: minhash.OPH}

    config = migrate._config()
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0020")
        conn.commit()
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT case_id, hashvalues FROM case_signatures")).all()
        banded = set(conn.execute(text("SELECT DISTINCT case_id FROM case_bands")).scalars())
    # The older code only ever sees datasketch's values, untouched.
    assert [(r[0], bytes(r[1])) for r in rows] == [(1, minhash.encode(old))]
    assert banded == {1}
