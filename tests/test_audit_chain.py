"""The audit log's chains: edits, deletions, reordering and a log cut short are caught and
named, on both stores, while writers on different cases append at the same time."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from sqlalchemy import delete, select, update

from inbox import audit
from inbox.db import write
from inbox.models import AuditChain, AuditLog, AuditSeal, AuditSealHead
from tests.support.inbox_helpers import bulk_cases


def _append(engine, n: int, case_id: int | None = None) -> list[int]:
    ids = []
    with write(engine) as conn:
        for i in range(n):
            ids.append(
                audit.append(
                    conn,
                    actor=f"agent{i % 3}",
                    action="case.status",
                    case_id=case_id,
                    before={"status": "new"},
                    after={"status": "open", "n": i},
                )
            )
    return ids


def _verify(engine, checkpoint=None) -> audit.Verification:
    with engine.connect() as conn:
        return audit.verify(conn, checkpoint)


def _seal(engine) -> dict[str, Any]:
    with write(engine) as conn:
        return audit.checkpoint(conn)


def test_intact_chain_verifies(engine):
    ids = _append(engine, 5)
    result = _verify(engine)
    assert result.ok and result.rows == 5 and result.newest_id == ids[-1]


def test_each_case_has_a_chain_of_its_own(engine):
    cases = bulk_cases(engine, 3)
    written: dict[int, list[int]] = {case: [] for case in cases}
    for round_ in range(3):
        for case in cases:
            written[case] += _append(engine, round_ + 1, case)
    with engine.connect() as conn:
        rows = list(conn.execute(select(AuditLog).order_by(AuditLog.id)))
    for case in cases:
        chain = [r for r in rows if r.case_id == case]
        assert [r.id for r in chain] == written[case]
        assert [r.seq for r in chain] == list(range(1, 7))
        assert {r.chain for r in chain} == {case}
        # The first row of every chain starts from GENESIS, each next one from its
        # predecessor in the same case, not from whichever row was written just before.
        assert [r.prev_hmac for r in chain] == [audit.GENESIS] + [r.hmac for r in chain[:-1]]
    assert _verify(engine).ok


def test_a_new_chain_guessed_wrong_reads_its_head_and_stays_whole(engine):
    """`head=NEW_CHAIN` says "no row on this case's chain yet" (the worker's guess for a
    case it opened in the same transaction). Right, the row starts the chain; wrong, because
    a row was appended before it in the transaction, the row still follows that one."""
    fresh, used = bulk_cases(engine, 2)
    with write(engine) as conn:
        first = audit.append(
            conn, actor="system", action="case.opened", case_id=fresh, head=audit.NEW_CHAIN
        )
        earlier = audit.append(conn, actor="rules", action="case.assigned", case_id=used)
        later = audit.append(
            conn,
            actor="system",
            action="acknowledgement.withheld",
            case_id=used,
            head=audit.NEW_CHAIN,
        )
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(AuditLog))}
    assert (rows[first].seq, rows[first].prev_hmac) == (1, audit.GENESIS)
    assert (rows[earlier].seq, rows[later].seq) == (1, 2)
    assert rows[later].prev_hmac == rows[earlier].hmac
    assert _verify(engine).ok


def test_changed_row_is_named(engine):
    ids = _append(engine, 6)
    with engine.begin() as conn:
        conn.execute(update(AuditLog).where(AuditLog.id == ids[2]).values(actor="mallory"))
    result = _verify(engine)
    assert not result.ok and result.first_bad_id == ids[2]
    assert "changed" in (result.problem or "")


def test_a_row_moved_to_another_case_is_named(engine):
    first, second = bulk_cases(engine, 2)
    ids = _append(engine, 3, first)
    _append(engine, 3, second)
    with engine.begin() as conn:  # rewrite the case in both columns, as a forger would
        conn.execute(
            update(AuditLog)
            .where(AuditLog.id == ids[2])
            .values(case_id=second, chain=second, seq=4)
        )
    result = _verify(engine)
    assert not result.ok and result.first_bad_id == ids[2]


def test_deleted_row_is_caught_at_its_successor(engine):
    ids = _append(engine, 6)
    with engine.begin() as conn:
        conn.execute(delete(AuditLog).where(AuditLog.id == ids[3]))
    result = _verify(engine)
    assert not result.ok and result.first_bad_id == ids[4]
    assert "does not follow" in (result.problem or "")


def test_deleted_first_row_of_a_case_is_caught(engine):
    (case,) = bulk_cases(engine, 1)
    ids = _append(engine, 3, case)
    with engine.begin() as conn:
        conn.execute(delete(AuditLog).where(AuditLog.id == ids[0]))
    result = _verify(engine)
    assert not result.ok and result.first_bad_id == ids[1]


def test_reordered_rows_are_named(engine):
    """Swapping two rows' places (their ids, everything else kept) changes the order the
    log is read in; ids rise along a chain, so the swap is found."""
    ids = _append(engine, 5)
    with engine.begin() as conn:
        conn.execute(update(AuditLog).where(AuditLog.id == ids[1]).values(id=-1))
        conn.execute(update(AuditLog).where(AuditLog.id == ids[2]).values(id=ids[1]))
        conn.execute(update(AuditLog).where(AuditLog.id == -1).values(id=ids[2]))
    result = _verify(engine)
    assert not result.ok and result.first_bad_id == ids[1]
    assert "out of order" in (result.problem or "")


def test_swapped_positions_are_named(engine):
    """Swapping two rows' positions in the chain (seq and links, as a forger would)."""
    ids = _append(engine, 5)
    with engine.begin() as conn:
        a, b = (conn.execute(select(AuditLog).where(AuditLog.id == i)).one() for i in ids[1:3])
        conn.execute(update(AuditLog).where(AuditLog.id == a.id).values(seq=-1))
        conn.execute(
            update(AuditLog)
            .where(AuditLog.id == b.id)
            .values(seq=a.seq, prev_hmac=a.prev_hmac, hmac=a.hmac)
        )
        conn.execute(
            update(AuditLog)
            .where(AuditLog.id == a.id)
            .values(seq=b.seq, prev_hmac=b.prev_hmac, hmac=b.hmac)
        )
    result = _verify(engine)
    assert not result.ok and result.first_bad_id in (ids[1], ids[2])


def test_log_cut_short_is_caught_with_a_checkpoint(engine, db_url, tmp_path):
    ids = _append(engine, 4)
    saved = _seal(engine)
    assert saved["kind"] == "seal" and saved["id"] >= 1
    _append(engine, 2)
    later = _seal(engine)
    assert later["id"] > saved["id"]
    with engine.begin() as conn:  # a forger cuts the rows and the seals that name them
        conn.execute(delete(AuditSealHead))
        conn.execute(delete(AuditSeal))
        conn.execute(delete(AuditLog).where(AuditLog.id >= ids[2]))
    assert _verify(engine).ok  # without a checkpoint a clean cut looks whole
    cut = _verify(engine, saved)
    assert not cut.ok and cut.first_bad_id == saved["id"]
    assert "cut short" in (cut.problem or "")

    # The same through the command line, as an operator would run it.
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[database]\nurl = "{db_url}"\n')
    checkpoint_file = tmp_path / "checkpoint.json"
    checkpoint_file.write_text(json.dumps(saved))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "parity",
            "--settings",
            str(settings),
            "audit",
            "verify",
            "--checkpoint",
            str(checkpoint_file),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert json.loads(run.stdout)["first_bad_id"] == saved["id"]


def test_a_cut_under_a_kept_seal_names_the_sealed_row(engine):
    (case,) = bulk_cases(engine, 1)
    ids = _append(engine, 4, case)
    _seal(engine)
    with engine.begin() as conn:
        conn.execute(delete(AuditLog).where(AuditLog.id >= ids[2]))
    result = _verify(engine)
    assert not result.ok and result.first_bad_id == ids[3]
    assert "cut short" in (result.problem or "") and "missing" in (result.problem or "")


def test_a_whole_chain_deleted_is_caught_by_its_seal(engine):
    first, second = bulk_cases(engine, 2)
    _append(engine, 2, first)
    gone = _append(engine, 2, second)
    _seal(engine)
    with engine.begin() as conn:
        conn.execute(delete(AuditLog).where(AuditLog.case_id == second))
    result = _verify(engine)
    assert not result.ok and result.first_bad_id == gone[-1]


def test_a_changed_seal_is_caught(engine):
    _append(engine, 3)
    _seal(engine)
    _append(engine, 1)
    second = _seal(engine)
    with engine.begin() as conn:  # drop a head from the seal: it would hide that chain
        conn.execute(delete(AuditSealHead).where(AuditSealHead.seal_id == second["id"]))
    result = _verify(engine)
    assert not result.ok and "seal" in (result.problem or "")


def test_seals_cover_only_chains_that_moved(engine):
    first, second = bulk_cases(engine, 2)
    _append(engine, 2, first)
    last = _append(engine, 3, second)
    one = _seal(engine)
    assert _seal(engine) == one  # nothing moved: no new seal
    _append(engine, 1, first)
    two = _seal(engine)
    with engine.connect() as conn:
        heads = {
            seal: [(h.chain, h.seq) for h in rows]
            for seal, rows in (
                (
                    s,
                    list(
                        conn.execute(
                            select(AuditSealHead)
                            .where(AuditSealHead.seal_id == s)
                            .order_by(AuditSealHead.chain)
                        )
                    ),
                )
                for s in (one["id"], two["id"])
            )
        }
        head = conn.execute(select(AuditChain).where(AuditChain.chain == second)).one()
    assert heads[one["id"]] == [(first, 2), (second, 3)]
    assert heads[two["id"]] == [(first, 3)]
    assert head.row_id == last[-1] and head.sealed_seq == 3
    assert _verify(engine, two).ok


def test_checkpoint_without_sealing_gives_the_newest_seal(engine):
    with engine.connect() as conn:
        assert audit.checkpoint(conn, seal_now=False) == {
            "kind": "seal",
            "id": 0,
            "hmac": audit.GENESIS,
            "at": None,
        }
    _append(engine, 2)
    sealed = _seal(engine)
    _append(engine, 1)
    with engine.connect() as conn:
        assert audit.checkpoint(conn, seal_now=False) == sealed  # read only: no new seal
        assert conn.execute(select(AuditSeal.id)).scalars().all() == [sealed["id"]]


def test_a_stale_head_still_chains_to_the_true_end(engine):
    """`append(head=...)` trusts nothing: given a head that is no longer the chain's end (as
    claim-next's statement sees when the case had no audit row yet and another writer
    made one meanwhile), the row goes after the true end."""
    (case,) = bulk_cases(engine, 1)
    first = _append(engine, 2, case)
    with write(engine) as conn:
        third = audit.append(
            conn, actor="agent", action="case.claimed", case_id=case, head=(None, None)
        )
    with engine.connect() as conn:
        rows = list(conn.execute(select(AuditLog).where(AuditLog.case_id == case)))
        assert audit.verify(conn).ok
    assert [r.id for r in rows] == [*first, third]
    assert [r.seq for r in rows] == [1, 2, 3] and rows[2].prev_hmac == rows[1].hmac


def test_parity_run_seals_at_its_interval(engine):
    """The daemon's sealer task, run on its own against the store for a little over one
    interval: the chains written before it are sealed, and it stops when asked."""
    import asyncio
    from types import SimpleNamespace

    from inbox.report import AuditSettings
    from parity.daemon import Daemon

    (case,) = bulk_cases(engine, 1)
    ids = _append(engine, 2, case)

    async def run() -> None:
        host = SimpleNamespace(
            engine=engine,
            stop=asyncio.Event(),
            settings=SimpleNamespace(audit=AuditSettings(seal_interval_s=1)),
        )
        task = asyncio.create_task(Daemon._seal_audit(host))  # type: ignore[arg-type]
        await asyncio.sleep(1.8)
        host.stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    with engine.connect() as conn:
        heads = conn.execute(select(AuditSealHead.chain, AuditSealHead.row_id)).all()
        assert audit.verify(conn).ok
    assert heads == [(case, ids[-1])]
