"""Twilio webhooks over HTTP, on SQLite and PostgreSQL: signatures, store-then-200, retries,
voicemail end to end, callback requests, withheld numbers, and a store that refuses writes.

Requests are signed as Twilio signs them (RequestValidator.compute_signature) over the public
URL; the app is the inbox app with the Twilio routes, as the daemon mounts it."""

from __future__ import annotations

import hashlib
import html
import re
import sqlite3
from typing import Any

from sqlalchemy import Engine, create_engine, func, make_url, select, text
from twilio.request_validator import RequestValidator

from inbox.accounts import Principal
from inbox.db import make_engine
from inbox.models import Case, Checkpoint, Contact, Intake, Message
from inbox.search import search
from tests.channels.twilio.twilio_support import PUBLIC, TOKEN, Hooks, fixture, sign
from tests.support.helpers import normalize
from tests.support.inbox_helpers import make_user

ROUTES = {
    "/twilio/sms": "sms",
    "/twilio/voice": "voice",
    "/twilio/voice/menu": "menu",
    "/twilio/recording": "recording",
    "/twilio/transcription": "transcription",
}


def count(engine: Engine, model: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def messages(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Message).order_by(Message.id)))


async def test_every_webhook_three_times_gives_one_message_each(engine: Engine) -> None:
    async with Hooks(engine) as hooks:
        for path, name in ROUTES.items():
            params = fixture(name, api="https://api.twilio.com")
            for _ in range(3):
                status, body = await hooks.post(path, params)
                assert status == 200, body
                assert body.startswith("<?xml")
        # The MMS too (its own sender).
        for _ in range(3):
            status, _ = await hooks.post("/twilio/sms", fixture("mms", api="https://x.invalid"))
            assert status == 200
    assert count(engine, Intake) == 6
    normalize(engine)
    rows = messages(engine)
    # sms, mms, call, callback request, one voicemail (recording + transcription merged)
    assert sorted(m.dedup_key.split(":")[1] for m in rows) == sorted(
        ["sms", "sms", "call", "menu", "voicemail"]
    )


async def test_bad_or_missing_signature_is_403_and_nothing_is_stored(engine: Engine) -> None:
    params = fixture("sms")
    async with Hooks(engine) as hooks:
        for path in [*ROUTES, "/twilio/status"]:
            assert (await hooks.post(path, params, signature=""))[0] == 403
            assert (await hooks.post(path, params, signature="bm90IGEgc2lnbmF0dXJl"))[0] == 403
            # Signed with another account's token.
            assert (await hooks.post(path, params, signature=sign(path, params, "x" * 32)))[
                0
            ] == 403
        # Signed over the request's own URL (what a validator behind a proxy gets wrong).
        own = str(hooks.client.make_url("/twilio/sms"))
        forged = RequestValidator(TOKEN).compute_signature(own, params)
        assert (await hooks.post("/twilio/sms", params, signature=forged))[0] == 403
        # A changed body under a good signature.
        good = sign("/twilio/sms", params)
        tampered = {**params, "Body": "send me the admin password"}
        assert (await hooks.post("/twilio/sms", tampered, signature=good))[0] == 403
        # A query string is part of what is signed.
        path = "/twilio/sms?tenant=a"
        assert (await hooks.post(path, params, signature=sign("/twilio/sms", params)))[0] == 403
        assert (await hooks.post(path, params))[0] == 200
    assert count(engine, Intake) == 1
    assert PUBLIC.startswith("https://")


async def test_voicemail_end_to_end_is_one_case_one_voicemail_found_by_search(
    engine: Engine,
) -> None:
    async with Hooks(engine) as hooks:
        status, twiml = await hooks.post("/twilio/voice", fixture("voice"))
        assert status == 200
        assert "<Gather" in twiml and "/twilio/voice/menu" in twiml
        assert 'transcribe="true"' in twiml
        assert f'transcribeCallback="{PUBLIC}/twilio/transcription"' in twiml
        found = re.search(r'recordingStatusCallback="([^"]+)"', twiml)
        assert found is not None
        callback = html.unescape(found.group(1))
        assert callback.startswith(f"{PUBLIC}/twilio/recording?")
        recording_path = callback[len(PUBLIC) :]
        assert "by text message" in twiml and "Press 1 for a callback" in twiml
        # The expected response time, from the SLA target: minutes, hours or a day and time.
        assert re.search(
            r"a person will answer (within about \d+ (minutes|hours)"
            r"|within about an hour|by \w+day \d+ \w+, \d\d:\d\d)",
            twiml,
        ), twiml
        normalize(engine)  # the call opens the case before the recording is done
        # The transcript can come before the recording status; both are retried.
        paths = {"transcription": "/twilio/transcription", "recording": recording_path}
        for name in ("recording", "transcription", "recording", "transcription"):
            status, _ = await hooks.post(paths[name], fixture(name))
            assert status == 200
            normalize(engine)
    assert count(engine, Case) == 1
    voicemails = [m for m in messages(engine) if m.dedup_key.startswith("twilio:voicemail:")]
    assert len(voicemails) == 1
    vm = voicemails[0]
    transcript = fixture("transcription")["TranscriptionText"]
    assert transcript in vm.text
    assert vm.meta["voicemail"]["duration_s"] == int(fixture("recording")["RecordingDuration"])
    assert vm.meta["voicemail"]["recording_url"] == fixture("recording")["RecordingUrl"]
    # The caller, though the recording-status post does not name them: one contact.
    assert vm.from_handle == fixture("voice")["From"]
    assert count(engine, Contact) == 1
    user = make_user(engine, "ann")
    hits = search(engine, Principal(user, "ann", "agent", "cli"), "boiler engineer Thursday")
    with engine.connect() as conn:
        reference = conn.execute(select(Case.reference)).scalar_one()
    assert [c["reference"] for c in hits["results"]] == [reference]


async def test_a_call_without_a_message_still_makes_a_case_and_callback_is_flagged(
    engine: Engine,
) -> None:
    async with Hooks(engine) as hooks:
        await hooks.post("/twilio/voice", fixture("voice"))
        normalize(engine)
        with engine.connect() as conn:
            case = conn.execute(select(Case)).one()
        assert case.channel == "voice" and case.callback_requested_at is None
        for _ in range(2):
            status, twiml = await hooks.post("/twilio/voice/menu", fixture("menu"))
            assert status == 200 and "call you back" in twiml
        normalize(engine)
    with engine.connect() as conn:
        cases = list(conn.execute(select(Case)))
    assert len(cases) == 1 and cases[0].callback_requested_at is not None


async def test_withheld_numbers_never_merge_and_a_known_number_joins_its_open_case(
    engine: Engine,
) -> None:
    async with Hooks(engine) as hooks:
        for i, withheld in enumerate(["Anonymous", "+266696687", "Anonymous"]):
            params = {**fixture("voice"), "From": withheld, "Caller": withheld}
            params["CallSid"] = f"CA{i:032d}"
            assert (await hooks.post("/twilio/voice", params))[0] == 200
        # The same known number texting twice, and calling: one case.
        sms = fixture("sms")
        await hooks.post("/twilio/sms", sms)
        await hooks.post("/twilio/sms", {**sms, "MessageSid": "SM" + "1" * 32, "Body": "and?"})
        call = {**fixture("voice"), "From": sms["From"], "Caller": sms["From"]}
        await hooks.post("/twilio/voice", call)
        normalize(engine)
    with engine.connect() as conn:
        rows = list(conn.execute(select(Case.id, Case.contact_id, Case.channel)))
    anonymous = [r for r in rows if r.channel == "voice" and r.id != max(r.id for r in rows)]
    assert count(engine, Case) == 4, rows
    assert len({r.contact_id for r in rows}) == 4
    assert count(engine, Contact) == 4
    assert len(anonymous) >= 2


async def test_stop_start_and_help(engine: Engine) -> None:
    sms = fixture("sms")
    async with Hooks(engine) as hooks:
        status, twiml = await hooks.post("/twilio/sms", {**sms, "Body": "HELP"})
        assert status == 200 and "Reply STOP" in twiml
        await hooks.post("/twilio/sms", {**sms, "MessageSid": "SM" + "2" * 32, "Body": "STOP"})
        with engine.connect() as conn:
            value = conn.execute(
                select(Checkpoint.value).where(Checkpoint.key == f"optout:{sms['From']}")
            ).scalar_one()
        assert value["opted_out"] is True
        await hooks.post("/twilio/sms", {**sms, "MessageSid": "SM" + "3" * 32, "Body": "start"})
        with engine.connect() as conn:
            value = conn.execute(
                select(Checkpoint.value).where(Checkpoint.key == f"optout:{sms['From']}")
            ).scalar_one()
        assert value["opted_out"] is False
    assert count(engine, Intake) == 3  # keywords are stored like any other text


async def test_store_refusing_writes_gives_503_then_a_retry_gives_200(
    db_url: str, tmp_path
) -> None:
    from inbox import migrate

    params = fixture("sms")
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        engine = make_engine(db_url, busy_timeout_ms=200)
        migrate.upgrade(engine)
        blocker = sqlite3.connect(str(url.database), isolation_level=None)
        try:
            async with Hooks(engine) as hooks:
                blocker.execute("BEGIN EXCLUSIVE")
                for _ in range(3):
                    status, _ = await hooks.post("/twilio/sms", params)
                    assert status == 503
                blocker.execute("ROLLBACK")
                assert (await hooks.post("/twilio/sms", params))[0] == 200
        finally:
            blocker.close()
        assert count(engine, Intake) == 1
        engine.dispose()
        return
    # PostgreSQL: superusers ignore privileges, so the app runs as a role that loses INSERT.
    import secrets

    role = f"parity_twilio_{secrets.token_hex(4)}"
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    migrate.upgrade(admin)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        conn.execute(
            text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
        )
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    engine = make_engine(url.set(username=role).render_as_string(hide_password=False))
    try:
        async with Hooks(engine) as hooks:
            with admin.connect() as conn:
                conn.execute(text(f'REVOKE INSERT ON ALL TABLES IN SCHEMA public FROM "{role}"'))
            for _ in range(3):
                assert (await hooks.post("/twilio/sms", params))[0] == 503
            with admin.connect() as conn:
                conn.execute(text(f'GRANT INSERT ON ALL TABLES IN SCHEMA public TO "{role}"'))
            assert (await hooks.post("/twilio/sms", params))[0] == 200
        assert count(admin, Intake, Intake.source_key == "sms:" + params["MessageSid"]) == 1
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"'))
            conn.execute(text(f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM "{role}"'))
            conn.execute(text(f'REVOKE ALL ON SCHEMA public FROM "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


async def test_a_signed_post_without_its_id_is_kept_as_a_dead_letter(engine: Engine) -> None:
    """Twilio always sends its id; a signed post without one is not dropped: it is stored,
    keyed by its bytes, and filed as a dead letter that says which id is missing."""
    from urllib.parse import urlencode

    from inbox.models import DeadLetter
    from normalizer.deadletters import replay
    from tests.support.helpers import normalizer

    # path -> (fixture, the kind of webhook, the id it lacks, the parameters dropped)
    cases = {
        "/twilio/sms": ("sms", "sms", "MessageSid", ("MessageSid", "SmsSid", "SmsMessageSid")),
        "/twilio/voice": ("voice", "call", "CallSid", ("CallSid",)),
    }
    async with Hooks(engine) as hooks:
        for path, (name, _, _, drop) in cases.items():
            params = {k: v for k, v in fixture(name).items() if k not in drop}
            for _ in range(2):  # the same post again adds nothing
                status, _text = await hooks.post(path, params)
                assert status == 200, (path, _text)
    with engine.connect() as conn:
        keys = conn.execute(select(Intake.source_key).order_by(Intake.id)).scalars().all()
    # What the keys must be, from the bytes the hooks posted (urlencode of the same dict).
    expected = []
    for name, kind, _, drop in cases.values():
        params = {k: v for k, v in fixture(name).items() if k not in drop}
        expected.append(f"unkeyed:{kind}:" + hashlib.sha256(urlencode(params).encode()).hexdigest())
    assert keys == expected
    assert sorted(o.state for o in normalize(engine)) == ["dead", "dead"]
    with engine.connect() as conn:
        letters = conn.execute(select(DeadLetter).order_by(DeadLetter.id)).all()
    assert [letter.error for letter in letters] == [
        f"twilio post has no valid {needed}" for _, _, needed, _ in cases.values()
    ]
    assert replay(engine, normalizer(engine), letters[0].id).outcome == "still failing"
    assert count(engine, Message) == 0
