"""Merging cases and undoing it, linking identities and unlinking them, on SQLite and
PostgreSQL. Cases come in through the real intake and normalizer; expected rows are the
snapshots taken before the action, never figures computed by the code under test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from inbox import audit, casework, identities, merges, turns
from inbox.accounts import Principal
from inbox.models import (
    AuditLog,
    Case,
    CaseNote,
    CaseTurn,
    Identity,
    Message,
    MessageRef,
    Receipt,
)
from tests.support.helpers import ingest_and_normalize
from tests.support.inbox_helpers import case_row, email_case, mail, make_user

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def agent(engine: Engine, name: str = "ada") -> Principal:
    return Principal(id=make_user(engine, name), name=name, role="agent", via="cli")


def case_state(engine: Engine, reference: str) -> dict[str, Any]:
    """Everything that hangs off a case: its row, message ids, refs, notes and receipts."""
    row = case_row(engine, reference)
    with engine.connect() as conn:
        messages = sorted(
            conn.execute(select(Message.id).where(Message.case_id == row.id)).scalars()
        )
        return {
            "row": dict(row._mapping),
            "messages": messages,
            "refs": sorted(
                conn.execute(select(MessageRef.ref).where(MessageRef.case_id == row.id)).scalars()
            ),
            "notes": sorted(
                conn.execute(select(CaseNote.id).where(CaseNote.case_id == row.id)).scalars()
            ),
            "receipts": conn.execute(
                select(func.count()).select_from(Receipt).where(Receipt.message_id.in_(messages))
            ).scalar_one(),
        }


def two_cases(engine: Engine, who: Principal) -> tuple[str, str]:
    a = email_case(
        engine, "alice@example.com", "Locked out", "I cannot log in.", msgid="a1@x", at=T0
    )
    b = email_case(
        engine,
        "alice.w@work.example",
        "Account locked",
        "Still cannot log in, from my work address.",
        msgid="b1@x",
        at=T0 + timedelta(hours=1),
    )
    casework.add_note(engine, who, b, "customer called too")
    return a, b


def audit_actions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(AuditLog.action).order_by(AuditLog.id)).scalars())


def test_merge_keeps_everything_and_undo_restores_both(engine: Engine) -> None:
    who = agent(engine)
    a, b = two_cases(engine, who)
    before_a, before_b = case_state(engine, a), case_state(engine, b)

    record = merges.merge(engine, who, b, a)
    merged_a, merged_b = case_state(engine, a), case_state(engine, b)
    assert merged_b["row"]["status"] == "merged"
    assert merged_b["messages"] == [] and merged_b["notes"] == []
    assert merged_a["messages"] == sorted(before_a["messages"] + before_b["messages"])
    assert merged_a["notes"] == sorted(before_a["notes"] + before_b["notes"])
    assert merged_a["refs"] == sorted(before_a["refs"] + before_b["refs"])
    assert merged_a["receipts"] == before_a["receipts"] + before_b["receipts"]
    # The earlier first message of the two now opens the surviving case.
    assert merged_a["row"]["first_inbound_at"] == before_a["row"]["first_inbound_at"]
    assert record["moved"]["messages"] == len(before_b["messages"])

    undone = merges.undo(engine, who, record["id"])
    assert undone["undone_by"] == "user:ada"
    assert case_state(engine, a) == before_a
    assert case_state(engine, b) == before_b
    assert audit_actions(engine)[-4:] == [
        "case.merged",
        "case.absorbed",
        "case.unmerged",
        "case.unabsorbed",
    ]
    with engine.connect() as conn:
        assert audit.verify(conn).ok
    with pytest.raises(casework.Conflict):
        merges.undo(engine, who, record["id"])


def turns_of(engine: Engine, reference: str) -> list[tuple[int, int, datetime, bool, bool]]:
    """A case's turns as (id, seq, due_at, answered, closed), in seq order."""
    case_id = case_row(engine, reference).id
    with engine.connect() as conn:
        return [
            (t.id, t.seq, t.due_at, t.responded_at is not None, t.closed_at is not None)
            for t in conn.execute(
                select(CaseTurn).where(CaseTurn.case_id == case_id).order_by(CaseTurn.seq)
            )
        ]


def test_a_merge_folds_the_turns_and_the_earlier_open_one_waits(engine: Engine) -> None:
    who = agent(engine)
    a, b = two_cases(engine, who)  # a's question came an hour before b's
    (a_turn,), (b_turn,) = turns_of(engine, a), turns_of(engine, b)
    a_id, _, a_due, _, _ = a_turn
    b_id, _, b_due, _, _ = b_turn
    assert a_due < b_due

    record = merges.merge(engine, who, a, b)  # the earlier case into the later one

    # a's turn moves after b's own; the earlier due time is the one still waiting, b's own
    # wait is folded into it (closed), and the case's due time is the open turn's.
    assert turns_of(engine, a) == []
    assert turns_of(engine, b) == [
        (b_id, 0, b_due, False, True),
        (a_id, 1, a_due, False, False),
    ]
    assert case_row(engine, b).due_at == a_due
    with engine.connect() as conn:
        absorbed = conn.execute(
            select(AuditLog.after).where(AuditLog.action == "case.absorbed")
        ).scalar_one()
    assert absorbed["turns"] == {"moved": 1, "closed": [b_id], "open": a_id}

    # An answer on the survivor answers the one wait, and the report sees both turns.
    casework.reply(
        engine, who, b, casework.ReplyRequest(text="Unlocked."), message_id_domain="x.example"
    )
    assert [(t[3], t[4]) for t in turns_of(engine, b)] == [(False, True), (True, False)]

    merges.undo(engine, who, record["id"])
    assert turns_of(engine, a) == [(a_id, 0, a_due, True, False)]
    assert turns_of(engine, b) == [(b_id, 0, b_due, False, False)]


def test_a_resolved_case_merged_in_brings_its_turns_but_no_wait(engine: Engine) -> None:
    who = agent(engine)
    a, b = two_cases(engine, who)
    casework.set_status(engine, who, a, "resolved")
    (a_turn,), (b_turn,) = turns_of(engine, a), turns_of(engine, b)

    record = merges.merge(engine, who, a, b)

    # Resolved without a reply: a's wait ended, as a reopen would end it; b's still waits.
    assert turns_of(engine, b) == [b_turn, (a_turn[0], 1, a_turn[2], False, True)]
    assert case_row(engine, b).due_at == b_turn[2]
    merges.undo(engine, who, record["id"])
    assert turns_of(engine, a) == [a_turn]
    assert turns_of(engine, b) == [b_turn]


def test_undo_after_new_messages_sends_back_only_the_absorbed_thread(engine: Engine) -> None:
    who = agent(engine)
    a, b = two_cases(engine, who)
    before_a, before_b = case_state(engine, a), case_state(engine, b)
    record = merges.merge(engine, who, b, a)

    # After the merge: a reply in b's own thread, and a reply in a's thread.
    to_b = ingest_and_normalize(
        engine,
        mail(
            "alice.w@work.example",
            "Re: Account locked",
            "Any news?",
            msgid="b2@x",
            extra="In-Reply-To: <b1@x>\r\n",
        ),
    )
    to_a = ingest_and_normalize(
        engine,
        mail(
            "alice@example.com",
            "Re: Locked out",
            "Hello again",
            msgid="a2@x",
            extra="In-Reply-To: <a1@x>\r\n",
        ),
    )
    a_row = case_row(engine, a)
    # While merged, both threads land in the surviving case.
    assert to_b.case_id == a_row.id and to_a.case_id == a_row.id

    result = merges.undo(engine, who, record["id"])
    assert [r["message_id"] for r in result["undo_details"]["returned"]] == [to_b.message_id]
    assert result["undo_details"]["kept_in_surviving_case"] == [to_a.message_id]
    after_a, after_b = case_state(engine, a), case_state(engine, b)
    assert after_b["messages"] == sorted([*before_b["messages"], to_b.message_id])
    assert after_a["messages"] == sorted([*before_a["messages"], to_a.message_id])
    assert after_b["notes"] == before_b["notes"] and after_a["notes"] == before_a["notes"]
    # Each case's row is as before, except the activity that really happened since.
    for before, after, message_id in (
        (before_a, after_a, to_a.message_id),
        (before_b, after_b, to_b.message_id),
    ):
        with engine.connect() as conn:
            received = conn.execute(
                select(Message.received_at).where(Message.id == message_id)
            ).scalar_one()
        expected = {**before["row"], "last_activity_at": received}
        changed = {"followups", "status"}  # a follow-up counts, and answers reopen
        assert {k: v for k, v in after["row"].items() if k not in changed} == {
            k: v for k, v in expected.items() if k not in changed
        }


def test_merge_refuses_self_and_chains(engine: Engine) -> None:
    who = agent(engine)
    a, b = two_cases(engine, who)
    with pytest.raises(casework.Invalid):
        merges.merge(engine, who, a, a)
    merges.merge(engine, who, b, a)
    with pytest.raises(casework.Invalid):
        merges.merge(engine, who, a, b)


def test_chained_merges_undo_in_reverse_order(engine: Engine) -> None:
    who = agent(engine)
    a, b = two_cases(engine, who)
    c = email_case(engine, "carol@example.net", "App crash", "It crashes.", msgid="c1@x", at=T0)
    before = {ref: case_state(engine, ref) for ref in (a, b, c)}
    first = merges.merge(engine, who, b, a)
    second = merges.merge(engine, who, a, c)
    assert set(case_state(engine, c)["messages"]) == {
        m for ref in (a, b, c) for m in before[ref]["messages"]
    }
    # Out of order: the first merge's survivor went on into c.
    with pytest.raises(casework.Conflict, match=f"undo merge {second['id']} first"):
        merges.undo(engine, who, first["id"])
    # In reverse order both undo (the first merge must not block undoing the second).
    merges.undo(engine, who, second["id"])
    assert case_state(engine, c)["messages"] == before[c]["messages"]
    assert set(case_state(engine, a)["messages"]) == set(
        before[a]["messages"] + before[b]["messages"]
    )
    merges.undo(engine, who, first["id"])
    for ref in (a, b, c):
        assert case_state(engine, ref)["messages"] == before[ref]["messages"], ref
        assert case_state(engine, ref)["row"]["status"] == before[ref]["row"]["status"], ref


def test_link_and_unlink_identity(engine: Engine) -> None:
    who = agent(engine)
    a = email_case(engine, "alice@example.com", "Locked out", "I cannot log in.", at=T0)
    b = email_case(engine, "alice.w@work.example", "Locked", "Me again, other address.", at=T0)
    contact_a, contact_b = case_row(engine, a).contact_id, case_row(engine, b).contact_id
    assert contact_a != contact_b

    result = identities.link(engine, who, "email", "Alice.W@work.example", case_reference=a)
    assert result["identity"]["contact_id"] == contact_a
    # b's contact had no other identity: its case came along.
    assert result["moved_cases"] == [b]
    assert case_row(engine, b).contact_id == contact_a
    assert result["identity"]["verified"] is False

    # A new mail from the linked address now joins the contact's open case.
    later = ingest_and_normalize(
        engine, mail("alice.w@work.example", "One more thing", "and the app crashes", msgid="c@x")
    )
    assert later.case_id in (case_row(engine, a).id, case_row(engine, b).id)

    back = identities.unlink(engine, who, "email", "alice.w@work.example")
    new_contact = back["identity"]["contact_id"]
    assert new_contact not in (contact_a, contact_b)
    assert case_row(engine, b).contact_id == new_contact
    assert case_row(engine, a).contact_id == contact_a
    with pytest.raises(casework.Invalid):
        identities.unlink(engine, who, "email", "alice.w@work.example")
    assert audit_actions(engine)[-2:] == ["identity.linked", "identity.unlinked"]
    with engine.connect() as conn:
        assert audit.verify(conn).ok


def test_token_reply_from_the_contact_verifies_the_identity(engine: Engine) -> None:
    a = email_case(engine, "alice@example.com", "Locked out", "I cannot log in.", at=T0)
    case = case_row(engine, a)
    ingest_and_normalize(
        engine,
        mail(
            "alice@example.com",
            f"Re: [{a} #{case.token}] Locked out",
            "Thanks",
            msgid="tok@x",
        ),
    )
    # A stranger quoting the token is not verified: it is not the case's contact.
    ingest_and_normalize(
        engine,
        mail("mallory@example.net", f"Re: [{a} #{case.token}] Locked out", "hi", msgid="m@x"),
    )
    with engine.connect() as conn:
        verified = dict(conn.execute(select(Identity.handle, Identity.verified)).all())
    assert verified == {"alice@example.com": True, "mallory@example.net": False}


def test_token_of_a_merged_case_threads_to_the_survivor(engine: Engine) -> None:
    who = agent(engine)
    a, b = two_cases(engine, who)
    token_b = case_row(engine, b).token
    merges.merge(engine, who, b, a)
    outcome = ingest_and_normalize(
        engine,
        mail("alice.w@work.example", f"Re: [{b} #{token_b}] Account locked", "ok", msgid="t@x"),
    )
    assert outcome.case_id == case_row(engine, a).id
    with engine.connect() as conn:
        assert conn.execute(select(Case.status).where(Case.reference == b)).scalar_one() == (
            "merged"
        )


def _wait(turn_id: int, hour: int) -> turns.OpenTurn:
    return turns.OpenTurn(turn_id, 0, datetime(2026, 1, 5, hour, tzinfo=UTC))


@pytest.mark.parametrize(
    ("into_wait", "source_wait", "kept", "folded"),
    [
        (None, None, None, None),
        (_wait(1, 9), None, 1, None),
        (None, _wait(2, 9), 2, None),
        (_wait(1, 9), _wait(2, 10), 1, 2),
        (_wait(1, 11), _wait(2, 10), 2, 1),
        (_wait(1, 10), _wait(2, 10), 1, 2),  # a tie: the survivor's own
    ],
)
def test_the_earlier_wait_is_kept(
    into_wait: turns.OpenTurn | None,
    source_wait: turns.OpenTurn | None,
    kept: int | None,
    folded: int | None,
) -> None:
    keep, fold = turns.fold_waits(into_wait, source_wait)
    assert (keep.id if keep else None, fold.id if fold else None) == (kept, folded)
