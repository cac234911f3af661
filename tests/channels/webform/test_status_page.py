"""The status page on SQLite and PostgreSQL: what each kind of reader may see, the token and
404 rules, its rate limit, adding to a case, and reopening a resolved one."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from inbox import casework, merges
from inbox.accounts import Principal
from inbox.casework import ReplyRequest
from inbox.models import Case, Identity, Message, utcnow
from tests.channels.webform.support import PNG, Site, settings
from tests.support.helpers import normalize
from tests.support.inbox_helpers import email_case, make_user


def agent(engine: Engine) -> Principal:
    return Principal(id=make_user(engine, "sam"), name="Sam Agent", role="agent", via="cli")


async def open_case(site: Site, text: str = "My account was taken over.") -> tuple[str, str]:
    status, _, _ = await site.send(text=text)
    assert status == 303
    normalize(site.engine)
    with site.engine.connect() as conn:
        row = conn.execute(
            select(Case.reference, Case.token).order_by(Case.id.desc()).limit(1)
        ).one()
    return str(row.reference), str(row.token)


def status_path(reference: str, token: str) -> str:
    return f"/status/{reference}?t={token}"


async def add(
    site: Site,
    reference: str,
    token: str,
    page: str,
    text: str,
    files: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
) -> tuple[int, str, Any]:
    """Post `text` (and `files`) with the add form of the status page `page` (its token)."""
    form_token = re.search(r'name="form_token" value="([^"]+)"', page)
    assert form_token is not None
    return await site.post(
        {"form_token": form_token.group(1), "text": text},
        files=files,
        path=status_path(reference, token),
    )


def conversation(html: str) -> list[tuple[str, str]]:
    """(who, text) of each message the page shows."""
    block = html.split('id="conversation"', 1)[1].split("</ol>", 1)[0]
    items = re.findall(
        r'<li class="(ours|theirs)">.*?<div class="text" dir="auto">(.*?)</div>', block, re.S
    )
    return [(who, text.strip()) for who, text in items]


async def test_what_each_kind_of_reader_may_see(engine: Engine) -> None:
    """The privacy table: the link's holder sees the messages of the identity that opened
    the case and the replies to it; never a note, another identity's messages or a handle,
    nor a merged-in case of another person."""
    async with Site(engine) as site:
        reference, token = await open_case(site, "First: I cannot log in.")
        me = agent(engine)
        casework.add_note(engine, me, reference, "NOTE: caller sounded like a bot")
        casework.reply(
            engine, me, reference, ReplyRequest(text="REPLY: we reset it"), message_id_domain="x"
        )
        # Another identity of the same contact (an agent linked a phone): its message and a
        # reply to it are not the link holder's to see.
        with engine.begin() as conn:
            case = conn.execute(select(Case).where(Case.reference == reference)).one()
            other = conn.execute(
                insert(Identity)
                .values(kind="phone", handle="+447700900123", display_name="", facts={},
                        contact_id=case.contact_id, verified=False, created_at=utcnow())
                .returning(Identity.id)
            ).scalar_one()  # fmt: skip
            conn.execute(
                insert(Message).values(
                    case_id=case.id, identity_id=other, channel="sms", direction="inbound",
                    visibility="private", dedup_key="sms:other", from_handle="+447700900123",
                    from_name="", text="OTHER-IDENTITY: secret sms", received_at=utcnow(),
                    thread={}, meta={},
                )
            )  # fmt: skip
        casework.reply(
            engine, me, reference,
            ReplyRequest(text="REPLY-TO-OTHER: by sms", channel="sms", handle="+447700900123"),
            message_id_domain="x",
        )  # fmt: skip
        # Another person's case merged into this one.
        stranger = email_case(engine, "stranger@example.net", "STRANGER subject", "STRANGER body")
        merges.merge(engine, me, stranger, reference)
        status, html, headers = await site.get(status_path(reference, token))
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    shown = conversation(html)
    # The table: reader = the holder of the link of the case opened by the form.
    expected = [("theirs", "First: I cannot log in."), ("ours", "REPLY: we reset it")]
    assert shown == expected
    for hidden in ("NOTE:", "OTHER-IDENTITY", "REPLY-TO-OTHER", "STRANGER", "+447700900123",
                   "ana@example.org", "stranger@example.net", "Sam Agent"):  # fmt: skip
        assert hidden not in html, hidden
    assert "Waiting for you" in html  # the reply left the ball with the person
    # The other side of the merge: the stranger's own link shows the surviving case's state,
    # but only the stranger's messages.
    with engine.connect() as conn:
        theirs = conn.execute(select(Case.token).where(Case.reference == stranger)).scalar_one()
    async with Site(engine) as site:
        status, html, _ = await site.get(status_path(stranger, theirs))
    assert status == 200
    assert conversation(html) == [("theirs", "STRANGER body")]
    for hidden in ("First: I cannot log in.", "REPLY: we reset it", "NOTE:", "OTHER-IDENTITY"):
        assert hidden not in html, hidden


async def test_the_page_of_an_email_case_shows_that_senders_side_only(engine: Engine) -> None:
    """The link in an email acknowledgement: the mail sender's messages and our replies."""
    reference = email_case(engine, "lee@example.org", "Order late", "EMAIL: where is it")
    me = agent(engine)
    casework.reply(
        engine, me, reference, ReplyRequest(text="REPLY: shipped"), message_id_domain="x"
    )
    with engine.connect() as conn:
        token = conn.execute(select(Case.token).where(Case.reference == reference)).scalar_one()
    async with Site(engine) as site:
        status, html, _ = await site.get(status_path(reference, token))
    assert status == 200
    assert conversation(html) == [("theirs", "EMAIL: where is it"), ("ours", "REPLY: shipped")]
    assert "lee@example.org" not in html


async def test_a_wrong_or_missing_token_is_the_same_404_as_an_unknown_case(engine: Engine) -> None:
    async with Site(engine) as site:
        reference, token = await open_case(site)
        answers = []
        # One character changed: a fixed "x" would be the same token when it
        # already ends in "x" (one run in 32: the token is base32).
        wrong = token[:-1] + ("y" if token.endswith("x") else "x")
        for path in (
            f"/status/{reference}?t={wrong}",
            f"/status/{reference}?t=",
            f"/status/{reference}",
            f"/status/C-999999?t={token}",
            f"/status/{reference.lower()}?t={token.upper()}",
        ):
            status, html, _ = await site.get(path)
            answers.append((status, html))
    assert {a[0] for a in answers} == {404}
    assert len({a[1] for a in answers}) == 1  # the very same page
    assert reference not in answers[0][1]


async def test_status_reads_are_rate_limited_per_address(engine: Engine) -> None:
    async with Site(
        engine, settings(status_per_address_burst=3, status_per_address_per_hour=0)
    ) as site:
        reference, token = await open_case(site)
        got = [(await site.get(f"/status/{reference}?t=bad", "192.0.2.50"))[0] for _ in range(3)]
        assert got == [404, 404, 404]
        # The fourth from that address is refused even with the right token.
        assert (await site.get(status_path(reference, token), "192.0.2.50"))[0] == 429
        assert (await site.get(status_path(reference, token), "192.0.2.51"))[0] == 200


async def test_a_message_added_on_the_page_joins_the_case_on_channel_web(engine: Engine) -> None:
    async with Site(engine) as site:
        reference, token = await open_case(site)
        _, html, _ = await site.get(status_path(reference, token))
        status, _, headers = await add(
            site,
            reference,
            token,
            html,
            "ADDED: here is the screenshot",
            files=[("shot.png", PNG, "image/png")],
        )
        assert status == 303 and "added=1" in headers["Location"]
        normalize(engine)
        status, html, _ = await site.get(headers["Location"])
    assert status == 200 and "was added to the case" in html
    assert conversation(html)[-1] == ("theirs", "ADDED: here is the screenshot")
    assert "shot.png" in html
    with engine.connect() as conn:
        rows = conn.execute(
            select(Message.case_id, Message.channel, Identity.kind)
            .join(Identity, Identity.id == Message.identity_id)
            .order_by(Message.id)
        ).all()
        case_ids = set(conn.execute(select(Case.id)).scalars())
    assert len(case_ids) == 1 and [r.channel for r in rows] == ["web", "web"]
    assert {r.kind for r in rows} == {"web"}


async def test_a_resolved_case_reopens_inside_the_window_and_not_after(engine: Engine) -> None:
    async with Site(engine) as site:
        reference, token = await open_case(site)
        me = agent(engine)
        casework.set_status(engine, me, reference, "resolved", force=True)
        _, resolved, _ = await site.get(status_path(reference, token))
        assert "Resolved" in resolved and 'id="reopen-hint"' in resolved
        status, _, _ = await add(site, reference, token, resolved, "It happened again")
        assert status == 303
        normalize(engine)
        with engine.connect() as conn:
            assert conn.execute(select(Case.status)).scalar_one() == "open"
        # Resolved 15 days ago: outside the 14-day window, the page offers nothing.
        casework.set_status(engine, me, reference, "resolved", force=True)
        with engine.begin() as conn:
            conn.execute(update(Case).values(resolved_at=utcnow() - timedelta(days=15)))
        _, html, _ = await site.get(status_path(reference, token))
        assert 'id="closed"' in html and 'id="add"' not in html
        # The form of the page read inside the window, posted after it closed.
        status, _, _ = await add(site, reference, token, resolved, "Again")
        assert status == 409


async def test_the_page_gives_the_acknowledged_promise_and_says_when_we_are_late(
    engine: Engine,
) -> None:
    from inbox import audit
    from inbox.models import AuditLog

    async with Site(engine) as site:
        reference, token = await open_case(site)
        with engine.connect() as conn:
            case_id = conn.execute(select(Case.id)).scalar_one()
            promise = conn.execute(
                select(AuditLog.after).where(AuditLog.action == "acknowledgement.queued")
            ).scalar_one()
        # The answer page's promise is the acknowledgement's, audited with the case.
        assert promise["channel"] == "web" and promise["eta_at"]
        _, html, _ = await site.get(status_path(reference, token))
        assert "Received" in html and "Our next answer is expected" in html
        assert 'class="late"' not in html
        # The promise passed (written as the planner writes it, later than the first).
        past = utcnow() - timedelta(hours=2)
        with engine.begin() as conn:
            audit.append(
                conn,
                actor="system",
                action="acknowledgement.queued",
                case_id=case_id,
                after={"channel": "web", "eta_at": past.isoformat()},
            )
        _, html, _ = await site.get(status_path(reference, token))
        assert 'class="late"' in html and "We are late" in html
        # After our first answer the case's due time is what the page holds us to.
        casework.reply(
            engine, agent(engine), reference, ReplyRequest(text="Looking", status="open"),
            message_id_domain="x",
        )  # fmt: skip
        with engine.begin() as conn:
            conn.execute(update(Case).values(due_at=utcnow() + timedelta(hours=5)))
        _, html, _ = await site.get(status_path(reference, token))
    assert "Waiting for us" in html and 'class="late"' not in html


async def test_a_reply_on_web_is_delivered_by_the_status_page(engine: Engine) -> None:
    """An agent's reply to a form's case goes out on `web` (the registry's reply channel):
    the status page's sender marks it sent, and the page shows it."""
    from connectors.config import OutboxSettings
    from connectors.outbox import OutboxDrainer
    from connectors.webform.outbox import StatusPageSender
    from inbox.models import Outbox

    async with Site(engine) as site:
        reference, token = await open_case(site)
        casework.reply(
            engine, agent(engine), reference, ReplyRequest(text="REPLY: on the page"),
            message_id_domain="x",
        )  # fmt: skip
        with engine.connect() as conn:
            row = conn.execute(
                select(Outbox.channel, Outbox.recipient, Outbox.state).where(Outbox.kind == "reply")
            ).one()
            sid = conn.execute(select(Identity.handle).where(Identity.kind == "web")).scalar()
        assert (row.channel, row.recipient, row.state) == ("web", sid, "queued")
        drainer = OutboxDrainer(engine, StatusPageSender(), OutboxSettings(), worker="t")
        report = drainer.drain_once()
        # The acknowledgement (what the answer page showed) and the reply.
        assert report.sent == 2
        with engine.connect() as conn:
            states = conn.execute(select(Outbox.kind, Outbox.state).order_by(Outbox.id)).all()
        assert [tuple(r) for r in states] == [("ack", "sent"), ("reply", "sent")]
        _, html, _ = await site.get(status_path(reference, token))
    assert conversation(html)[-1] == ("ours", "REPLY: on the page")


async def test_a_message_added_on_an_email_cases_page_shows_there(engine: Engine) -> None:
    """The link of an email acknowledgement: a message added on its page joins the case and
    is shown (it carries the case's token); the mail sender's handle is still never shown."""
    reference = email_case(engine, "lee@example.org", "Order late", "EMAIL: where is it")
    with engine.connect() as conn:
        token = conn.execute(select(Case.token).where(Case.reference == reference)).scalar_one()
    async with Site(engine) as site:
        _, html, _ = await site.get(status_path(reference, token))
        status, _, _ = await add(site, reference, token, html, "WEB: the parcel number is 4471")
        assert status == 303
        normalize(engine)
        _, html, _ = await site.get(status_path(reference, token))
    assert conversation(html) == [
        ("theirs", "EMAIL: where is it"),
        ("theirs", "WEB: the parcel number is 4471"),
    ]
    assert "lee@example.org" not in html and token not in conversation(html)[1][1]
    with engine.connect() as conn:
        assert len(set(conn.execute(select(Message.case_id)).scalars())) == 1
