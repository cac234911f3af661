"""Confirming the address or number a form gave, on SQLite and PostgreSQL: a link by email
and a code by SMS, queued through the outbox once the case exists; only a confirmed handle
joins the person's other cases."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, select

from inbox.models import AuditLog, Case, Identity, Outbox, utcnow
from tests.channels.webform.support import PUBLIC, Site
from tests.support.helpers import normalize
from tests.support.inbox_helpers import email_case

pytest_plugins = ["tests.support.inbox_fixtures"]


def outbox(engine: Engine) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Outbox.channel, Outbox.recipient, Outbox.body).where(Outbox.kind == "confirm")
        ).all()
    return {r.channel: (r.recipient, r.body) for r in rows}


def link_in(body: str) -> str:
    found = re.search(re.escape(PUBLIC) + r"(/contact/confirm\?\S+)", body)
    assert found is not None, body
    return found.group(1)


def form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None
    return found.group(1).replace("&amp;", "&")


async def test_an_email_link_confirms_and_joins_the_persons_other_cases(engine: Engine) -> None:
    earlier = email_case(engine, "ana@example.org", "Earlier question", "Hello")
    with engine.connect() as conn:
        person = conn.execute(select(Case.contact_id).where(Case.reference == earlier)).scalar_one()
    async with Site(engine) as site:
        status, _, _ = await site.send(email="Ana@Example.org", phone="+44 7700 900456")
        assert status == 303
        # Nothing is sent before the case exists; then once, whatever runs it again.
        assert site.form.confirmations.send_due(utcnow()) == 0
        normalize(engine)
        assert site.form.confirmations.send_due(utcnow()) == 2
        assert site.form.confirmations.send_due(utcnow()) == 0
        sent = outbox(engine)
        assert set(sent) == {"email", "sms"}
        assert sent["email"][0] == "ana@example.org" and sent["sms"][0] == "+447700900456"
        with engine.connect() as conn:
            case = conn.execute(select(Case).where(Case.channel == "web")).one()
        # Unverified: kept apart from the person's contact, and says what it claims.
        assert case.contact_id != person
        assert case.unverified_from == "ana@example.org, +447700900456"
        path = link_in(sent["email"][1])
        # Opening the link (a mail scanner does) confirms nothing: it shows a button.
        status, html, _ = await site.get(path)
        assert status == 200 and 'id="confirm"' in html
        with engine.connect() as conn:
            assert (
                conn.execute(select(Case.contact_id).where(Case.id == case.id)).scalar() != person
            )
        values = {
            "form_token": form_token(html),
            "sid": hidden(html, "sid"),
            "handle": hidden(html, "handle"),
            "code": hidden(html, "code"),
        }
        status, html, _ = await site.post(values, path="/contact/confirm")
        assert status == 200 and "is confirmed" in html
    with engine.connect() as conn:
        after = conn.execute(select(Case).where(Case.id == case.id)).one()
        email = conn.execute(
            select(Identity.verified, Identity.contact_id).where(
                Identity.kind == "email", Identity.handle == "ana@example.org"
            )
        ).one()
        audited = conn.execute(
            select(AuditLog.after).where(
                AuditLog.action == "identity.confirmed", AuditLog.case_id == case.id
            )
        ).scalar_one()
    assert after.contact_id == person == email.contact_id and email.verified
    assert after.unverified_from is None
    assert audited["kind"] == "email" and audited["via"] == "webform"


async def test_an_sms_code_confirms_a_number_and_a_wrong_code_does_not(engine: Engine) -> None:
    async with Site(engine) as site:
        await site.send(email="", phone="+1 (415) 555-0199")
        normalize(engine)
        site.form.confirmations.send_due(utcnow())
        number, body = outbox(engine)["sms"]
        assert number == "+14155550199"
        code = re.search(r"code for case C-\d+ is (\d{6})", body)
        assert code is not None
        path = link_in(body)
        assert "c=" not in urlsplit(path).query  # the code travels apart from the link
        status, html, _ = await site.get(path)
        assert status == 200 and 'name="code"' in html and 'autocomplete="one-time-code"' in html
        values = {
            "form_token": form_token(html),
            "sid": hidden(html, "sid"),
            "handle": hidden(html, "handle"),
        }
        wrong = str((int(code.group(1)) + 1) % 1_000_000).zfill(6)
        status, _, _ = await site.post({**values, "code": wrong}, path="/contact/confirm")
        assert status == 400
        with engine.connect() as conn:
            assert conn.execute(select(Identity.id).where(Identity.kind == "phone")).first() is None
        status, html, _ = await site.post(
            {**values, "code": code.group(1)}, path="/contact/confirm"
        )
        assert status == 200
    with engine.connect() as conn:
        phone = conn.execute(
            select(Identity.verified, Identity.contact_id).where(Identity.kind == "phone")
        ).one()
        case = conn.execute(select(Case.contact_id, Case.unverified_from)).one()
    assert phone.verified and phone.contact_id == case.contact_id
    assert case.unverified_from is None


async def test_a_forged_or_expired_confirmation_is_refused(engine: Engine) -> None:
    async with Site(engine) as site:
        await site.send(email="ana@example.org")
        normalize(engine)
        site.form.confirmations.send_due(utcnow())
        path = link_in(outbox(engine)["email"][1])
        forged = re.sub(r"c=([0-9a-f])", lambda m: "c=" + ("1" if m.group(1) != "1" else "2"), path)
        status, _, _ = await site.get(forged)
        assert status == 404
        other = path.replace("ana%40example.org", "mallory%40example.org")
        assert (await site.get(other))[0] == 404
        sid = re.search(r"s=([^&]+)", path)
        assert sid is not None
        later = utcnow() + timedelta(hours=site.settings.confirm_hours + 1)
        code = re.search(r"c=([0-9a-f]+)", path)
        assert code is not None
        assert not site.form.confirmations.confirm(
            sid.group(1), "ana@example.org", code.group(1), later
        )
        assert site.form.confirmations.confirm(
            sid.group(1), "ana@example.org", code.group(1), utcnow()
        )


async def test_agents_see_the_claim_as_unverified_until_it_is_confirmed(
    engine: Engine, make_api: Any
) -> None:
    import html as htmllib

    from tests.support.inbox_helpers import make_user

    async with Site(engine) as site:
        await site.send(email="ana@example.org")
        normalize(engine)
    with engine.connect() as conn:
        reference = conn.execute(select(Case.reference)).scalar_one()
    make_user(engine, "ann")
    api = await make_api()
    client, _ = await api.session("ann")
    queue = htmllib.unescape(await (await client.get("/queue")).text())
    assert "Unverified: claims to be from ana@example.org" in queue
    assert "typed into the contact form, not confirmed" in queue
    page = htmllib.unescape(await (await client.get(f"/cases/{reference}")).text())
    assert "Unverified: claims to be from ana@example.org" in page
    assert "typed into the contact form and is not confirmed yet" in page
    assert "The mail did not prove" not in page


async def test_only_confirmations_still_due_are_scanned_and_a_stale_one_expires(
    engine: Engine,
) -> None:
    from inbox.models import Checkpoint

    def due() -> list[str]:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    select(Checkpoint.key).where(Checkpoint.key.like("confirm-due:%"))
                ).scalars()
            )

    async with Site(engine) as site:
        await site.send(email="ana@example.org")
        await site.send(email="bob@example.org")
        assert len(due()) == 2
        # Neither case is open: nothing queued, both still due.
        assert site.form.confirmations.send_due(utcnow()) == 0 and len(due()) == 2
        normalize(engine)
        assert site.form.confirmations.send_due(utcnow()) == 2
        assert due() == []
        # A post whose case never opens (its input became a dead letter, say) is given up
        # once its confirmation could no longer be used.
        await site.send(email="carol@example.org")
        later = utcnow() + timedelta(hours=site.settings.confirm_hours + 1)
        assert site.form.confirmations.send_due(later) == 0
        assert due() == []
    assert set(outbox(engine)) == {"email"}
    with engine.connect() as conn:
        recipients = set(
            conn.execute(select(Outbox.recipient).where(Outbox.kind == "confirm")).scalars()
        )
    assert recipients == {"ana@example.org", "bob@example.org"}


async def test_the_confirmations_are_in_the_language_the_person_wrote_in(engine: Engine) -> None:
    async with Site(engine) as site:
        status, _, _ = await site.send(
            email="ines@example.org",
            phone="+34 612 345 678",
            text="Perdí el acceso a mi cuenta y a mi correo.",
            lang="es",
        )
        assert status == 303
        normalize(engine)
        assert site.form.confirmations.send_due(utcnow()) == 2
    sent = outbox(engine)
    with engine.connect() as conn:
        reference = conn.execute(select(Case.reference).where(Case.channel == "web")).scalar_one()
        subject = conn.execute(
            select(Outbox.subject).where(Outbox.kind == "confirm", Outbox.channel == "email")
        ).scalar_one()
    # Spanish, as the form was: worded by hand here, not read from the catalogue.
    assert subject == f"Confirme su dirección para el caso {reference}"
    assert sent["email"][1].startswith("Alguien, esperamos que usted, nos escribió")
    assert re.match(
        rf"Su código de confirmación para el caso {reference} es \d+\. ", sent["sms"][1]
    )
    link_in(sent["email"][1])  # the link is still there, whole
