"""The agent pages over HTTP, on SQLite and PostgreSQL: login redirects, the Content-Security-
Policy, the queue's rows and live events, the case page's folding and the mail frame."""

from __future__ import annotations

import asyncio
import html
import json

from sqlalchemy import select, update

from inbox.models import Case, Message, Outbox
from inbox.outbox import enqueue, report_delivery
from tests.support.inbox_helpers import email_case, link_identity, make_user

pytest_plugins = ["tests.support.inbox_fixtures"]

HTML_MAIL = (
    "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n",
    "<p>Order <b>42</b> is late</p><script>document.title='pwned'</script>"
    '<img src="https://tracker.example/p.gif" onerror="document.title=\'pwned\'">'
    "<a href=\"javascript:document.title='pwned'\">track</a>",
)


async def test_pages_need_a_login_and_forbid_inline_script(api, engine):
    make_user(engine, "ann")
    client = await api.client()
    for path in ("/", "/queue", "/cases/C-000001", "/messages/1/frame", "/queue/rows"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/login?next=/"), path
    events = await client.get("/events/queue")
    assert events.status == 401
    login = await client.get("/login")
    assert login.status == 200
    policy = login.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert "<script>" not in await login.text()  # scripts only by src
    static = await client.get("/static/queue.js")
    assert static.status == 200 and "EventSource" in await static.text()
    assert (await client.get("/static/..%2Fpages.py")).status == 404
    assert (await client.get("/static/nothing.js")).status == 404


async def test_queue_case_page_and_mail_frame(api, engine):
    make_user(engine, "ann")
    make_user(engine, "bo")
    plain = email_case(
        engine,
        "pat@example.org",
        "Card declined",
        "It failed again.\r\n\r\nOn Mon, 2 Mar 2026, Help <help@x.example> wrote:\r\n> try again",
    )
    rich = email_case(engine, "lee@example.org", "Late order", HTML_MAIL[1], extra=HTML_MAIL[0])
    client, csrf = await api.session("ann")

    queue = await (await client.get("/queue")).text()
    assert plain in queue and rich in queue and "pat@example.org" in queue
    assert 'class="badge ch-email"' in queue

    # bo claims the rich case: ann's queue hides it unless she asks for held cases.
    await api.call("bo", "POST", f"/api/cases/{rich}/claim", json={})
    rows = await (await client.get("/queue/rows")).text()
    assert plain in rows and rich not in rows
    assert rich in await (await client.get("/queue/rows?held=1")).text()

    page = await client.get(f"/cases/{plain}")
    assert page.status == 200
    text = await page.text()
    assert '<details class="fold quote">' in text and "It failed again." in text

    with engine.connect() as conn:
        message_id = conn.execute(select(Message.id).where(Message.html.is_not(None))).scalar_one()
    case_text = await (await client.get(f"/cases/{rich}")).text()
    assert f'<iframe class="mail" sandbox title="mail {message_id}"' in case_text
    frame = await client.get(f"/messages/{message_id}/frame")
    body = await frame.text()
    assert "<b>42</b>" in body
    for payload in ("<script", "onerror", "javascript:", "tracker.example"):
        assert payload not in body
    policy = frame.headers["Content-Security-Policy"]
    assert "script-src" not in policy and "default-src 'none'" in policy and "sandbox" in policy
    shown = await client.get(f"/messages/{message_id}/frame?images=1")
    assert "https://tracker.example/p.gif" in await shown.text()
    assert "img-src data: cid: https:" in shown.headers["Content-Security-Policy"]
    assert csrf  # the page's meta tag carries the same token
    assert csrf["X-CSRF-Token"] in case_text


async def test_queue_events_announce_a_claim(api, engine):
    make_user(engine, "ann")
    make_user(engine, "bo")
    reference = email_case(engine, "pat@example.org", "Card declined")
    client, _ = await api.session("ann")
    response = await client.get("/events/queue")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert await response.content.readline() == b"retry: 2000\n"
    await response.content.readline()
    await api.call("bo", "POST", f"/api/cases/{reference}/claim", json={})
    event = await asyncio.wait_for(response.content.readline(), timeout=10)
    assert event == b"event: queue\n"
    data = await response.content.readline()
    assert "at" in json.loads(data.decode().removeprefix("data: "))
    # Shutting the server down ends open streams at once, not after the graceful timeout.
    closing = asyncio.create_task(api.server.close())
    rest = await asyncio.wait_for(response.content.read(), timeout=10)
    assert rest in (b"\n", b"")
    await closing


async def test_the_case_page_says_when_the_acknowledgement_bounced(api, engine):
    """The customer never heard back: the page says so, with the remote server's words."""
    make_user(engine, "ann")
    reference = email_case(engine, "pat@example.org", "Card declined", "It failed again.")
    reason = "pat@example.org: failed 5.1.1 smtp; 550 5.1.1 User unknown"
    with engine.begin() as conn:
        case_id = conn.execute(select(Case.id).where(Case.reference == reference)).scalar_one()
        box = enqueue(
            conn, case_id=case_id, kind="ack", channel="email", recipient="pat@example.org"
        )
        conn.execute(
            update(Outbox)
            .where(Outbox.id == box)
            .values(state="sent", message_id_header="parity.bounced@support.example.com")
        )
        report_delivery(
            conn,
            message_id_header="parity.bounced@support.example.com",
            outcome="undelivered",
            reason=reason,
        )
    client, _ = await api.session("ann")
    text = await (await client.get(f"/cases/{reference}")).text()
    escaped = html.escape(reason)
    assert f"Acknowledgement: undelivered ({escaped})" in text
    assert '<span class="state">undelivered</span>' in text and f"({escaped})</span>" in text


async def test_the_frame_serves_the_stored_view_and_never_parses_raw_html(api, engine):
    """Issue 16: the frame is the view stored at filing; a row without one shows its text."""
    make_user(engine, "ann")
    rich = email_case(engine, "lee@example.org", "Late order", HTML_MAIL[1], extra=HTML_MAIL[0])
    client, _ = await api.session("ann")
    with engine.connect() as conn:
        message_id, stored = conn.execute(
            select(Message.id, Message.html_view).where(Message.html.is_not(None))
        ).one()
    assert stored is not None and "<script" not in stored
    # Replace the stored view by a marker: the frame must serve it, not a fresh parse.
    marker = "<p>stored view 7f3a</p>"
    with engine.begin() as conn:
        conn.execute(update(Message).where(Message.id == message_id).values(html_view=marker))
    body = await (await client.get(f"/messages/{message_id}/frame")).text()
    assert marker in body and "<b>42</b>" not in body
    # A legacy row (HTML kept, no view): no frame, the text part with a note on the page.
    with engine.begin() as conn:
        conn.execute(update(Message).where(Message.id == message_id).values(html_view=None))
    assert (await client.get(f"/messages/{message_id}/frame")).status == 404
    page = await (await client.get(f"/cases/{rich}")).text()
    assert '<iframe class="mail"' not in page
    assert "filed before its HTML was kept in a safe form" in page
    assert "Order 42 is late" in page


async def test_the_reply_form_offers_files_on_x_dms_and_instagram_direct(api, engine):
    """The reply box's targets carry the channel's file refusal (reply.js shows it and
    disables the file input): none on an X DM or Instagram Direct now, Reddit's still."""
    make_user(engine, "ann")
    reference = email_case(engine, "lee@example.org", "Screenshots")
    link_identity(engine, reference, "twitter", "1398765432109876543")
    link_identity(engine, reference, "instagram", "1139876543210456")
    link_identity(engine, reference, "reddit", "lee_r")
    client, _csrf = await api.session("ann")
    page = await (await client.get(f"/cases/{reference}")).text()

    def files_of(value: str) -> str:
        start = page.index(f'<option value="{value}"')
        option = page[start : page.index(">", start)]
        return html.unescape(option.split('data-files="', 1)[1].split('"', 1)[0])

    assert files_of("twitter|1398765432109876543") == ""
    assert files_of("instagram|1139876543210456") == ""
    assert files_of("reddit|lee_r") == "reddit cannot carry files: only text goes out on it"
