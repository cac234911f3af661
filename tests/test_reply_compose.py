"""Replies with attachments, copies and formatting (issue 22), through the API on both stores
and out through a real SMTP server (the sink), parsed back; and the pure parts by tables.

The expected figures are written out by hand: the bytes we upload, the addresses we type,
the HTML a few Markdown constructs must (and must not) become.
"""

from __future__ import annotations

import mailbox
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import Engine, select

from connectors.mail.relay import relay_availability
from inbox.compose import (
    ComposeRefused,
    attachment_refusal,
    check_length,
    clean_address,
    copies,
    files_in_public,
    files_in_window,
    fill,
    markdown_html,
    unknown_placeholders,
)
from inbox.models import Attachment, AuditLog, Outbox
from tests.support.inbox_helpers import email_case, link_identity, make_user
from tests.support.outbox_helpers import drainer_for
from tests.support.sink import Sink

pytest_plugins = ["tests.support.inbox_fixtures"]

# A small PNG (1x1, red) and a PDF-looking file: the bytes must come back exactly.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db40000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n% not really a pdf, but its bytes must survive base64\n\x00\x01\xfe\xff\n"


async def _upload(api: Any, name: str, ref: str, filename: str, data: bytes, kind: str) -> int:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", data, filename=filename, content_type=kind)
    result = await api.call(name, "POST", f"/api/cases/{ref}/uploads", 201, data=form)
    assert result["upload"]["size"] == len(data)
    return int(result["upload"]["id"])


async def test_a_reply_with_files_and_copies_reaches_the_relay_as_written(
    api: Any, engine: Engine, sink: Sink
) -> None:
    make_user(engine, "ann")
    ref = email_case(engine, "kim@example.org", "Invoice is wrong", "Please check it.")
    png = await _upload(api, "ann", ref, "screen shot.png", PNG, "image/png")
    pdf = await _upload(api, "ann", ref, "../../etc/invoice.pdf", PDF, "application/pdf")
    draft = await api.call("ann", "GET", f"/api/cases/{ref}/draft")
    # The case knows the customer's address: a CC of it is "known", another is new.
    assert "kim@example.org" in draft["known_addresses"]
    text = "Hello Kim,\n\nthe **corrected** invoice is attached.\n\n- item one\n- item two\n"
    result = await api.call(
        "ann",
        "POST",
        f"/api/cases/{ref}/replies",
        201,
        json={
            "text": text,
            "cc": ["Boss <Boss@Example.ORG>"],
            "bcc": ["audit@example.net"],
            "attachments": [png, pdf],
        },
    )
    outbox_id = result["outbox"]["id"]
    report = drainer_for(engine, sink).drain_once()
    assert report.sent == 2, report  # the acknowledgement and the reply
    (delivery,) = [d for d in sink.delivered if d.parsed()["Subject"].startswith("Re:")]
    msg = delivery.parsed()
    # It threads: the customer's mail is what it answers (these were once dropped).
    assert msg["In-Reply-To"] and msg["References"]
    assert msg["Message-ID"].count("<") == 1
    # Envelope: the customer, the CC and the BCC; headers: never the BCC.
    # The domain is folded; a local part is the receiving server's to interpret, kept as typed.
    assert sorted(delivery.rcpt_tos) == ["Boss@example.org", "audit@example.net", "kim@example.org"]
    assert msg["Cc"] == "Boss@example.org"
    assert "audit@example.net" not in delivery.data.decode("ascii", "replace")
    assert msg["Bcc"] is None
    # Both parts: the text as typed, and HTML made from its Markdown.
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n").strip() == text.strip()
    html_text = html.get_content()
    assert "<strong>corrected</strong>" in html_text
    assert "<li>item one</li>" in html_text
    # The files, byte for byte, with safe names.
    files = {p.get_filename(): p.get_content() for p in msg.iter_attachments()}
    assert files == {"screen shot.png": PNG, "invoice.pdf": PDF}
    # The reply's message shows its files in the timeline, downloadable like a customer's.
    with engine.connect() as conn:
        row = conn.execute(select(Outbox).where(Outbox.id == outbox_id)).one()
        assert row.state == "sent"
        names = sorted(
            a.filename
            for a in conn.execute(
                select(Attachment).where(Attachment.message_id == result["message_id"])
            )
        )
        assert names == ["invoice.pdf", "screen shot.png"]
        audit_row = conn.execute(select(AuditLog).where(AuditLog.action == "case.replied")).one()
        assert audit_row.after["cc"] == ["Boss@example.org"]
        assert audit_row.after["bcc"] == ["audit@example.net"]
    # The case shows the reply's copies to agents, BCC included.
    view = await api.call("ann", "GET", f"/api/cases/{ref}")
    (entry,) = [e for e in view["timeline"] if e.get("id") == result["message_id"]]
    assert (entry["cc"], entry["bcc"]) == (["Boss@example.org"], ["audit@example.net"])
    # A sent upload cannot go out twice.
    again = await api.call(
        "ann",
        "POST",
        f"/api/cases/{ref}/replies",
        400,
        json={"text": "Once more", "attachments": [png]},
    )
    assert "already sent" in again["error"]


async def test_uploads_belong_to_their_agent_and_case(api: Any, engine: Engine) -> None:
    make_user(engine, "ann")
    make_user(engine, "bob")
    ref = email_case(engine, "kim@example.org", "One", "Please help.")
    other = email_case(engine, "lee@example.org", "Two", "Me too.")
    upload = await _upload(api, "ann", ref, "a.txt", b"secret", "text/plain")
    for name, case in (("bob", ref), ("ann", other)):
        refused = await api.call(
            name,
            "POST",
            f"/api/cases/{case}/replies",
            400,
            json={"text": "Hi", "attachments": [upload]},
        )
        assert f"no upload {upload} of yours on this case" in refused["error"]


async def test_files_are_refused_with_the_reason_where_the_channel_cannot_take_them(
    api: Any, engine: Engine
) -> None:
    make_user(engine, "ann")
    ref = email_case(engine, "kim@example.org", "Call me", "My number is below.")
    link_identity(engine, ref, "reddit", "kim_r")
    upload = await _upload(api, "ann", ref, "a.png", PNG, "image/png")
    refused = await api.call(
        "ann",
        "POST",
        f"/api/cases/{ref}/replies",
        400,
        json={"text": "Hi", "channel": "reddit", "handle": "kim_r", "attachments": [upload]},
    )
    assert refused["error"] == "reddit cannot carry files: only text goes out on it"
    copies_refused = await api.call(
        "ann",
        "POST",
        f"/api/cases/{ref}/replies",
        400,
        json={"text": "Hi", "channel": "reddit", "handle": "kim_r", "cc": ["a@example.org"]},
    )
    assert "copies (CC, BCC) go only by mail" in copies_refused["error"]


async def test_a_reply_longer_than_its_channel_takes_is_refused(api: Any, engine: Engine) -> None:
    make_user(engine, "ann")
    ref = email_case(engine, "kim@example.org", "Text me", "My number is +4915112345678.")
    link_identity(engine, ref, "phone", "+4915112345678")
    body = {"channel": "sms", "handle": "+4915112345678"}
    refused = await api.call(
        "ann", "POST", f"/api/cases/{ref}/replies", 400, json={**body, "text": "x" * 1601}
    )
    assert refused["error"] == "too long for sms: 1601 characters: sms takes at most 1600"
    await api.call(
        "ann", "POST", f"/api/cases/{ref}/replies", 201, json={**body, "text": "x" * 1600}
    )


async def test_markdown_only_up_to_its_limit(api: Any, engine: Engine) -> None:
    make_user(engine, "ann")
    ref = email_case(engine, "kim@example.org", "Long", "Please explain everything.")
    for text, rich in (("**x** " * 3333 + "ab", True), ("**x** " * 3333 + "abc", False)):
        assert len(text) == 20_000 + (not rich)
        sent = await api.call("ann", "POST", f"/api/cases/{ref}/replies", 201, json={"text": text})
        with engine.connect() as conn:
            payload = conn.execute(
                select(Outbox.payload).where(Outbox.id == sent["outbox"]["id"])
            ).scalar_one()
        assert ("html" in payload) is rich


async def test_the_size_limit_stops_reading_an_upload(make_api: Any, engine: Engine) -> None:
    from inbox.web.config import InboxSettings

    api = await make_api(InboxSettings(attachments_max_bytes=1000))
    make_user(engine, "ann")
    ref = email_case(engine, "kim@example.org", "Big", "Please help.")
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", b"x" * 1001, filename="big.bin", content_type="application/zip")
    refused = await api.call("ann", "POST", f"/api/cases/{ref}/uploads", 400, data=form)
    assert refused["error"] == "a reply's files take at most 1000 bytes"
    # Two files under the limit each are refused together when their sum is over it.
    one = await _upload(api, "ann", ref, "a.bin", b"a" * 600, "application/zip")
    two = await _upload(api, "ann", ref, "b.bin", b"b" * 600, "application/zip")
    over = await api.call(
        "ann",
        "POST",
        f"/api/cases/{ref}/replies",
        400,
        json={"text": "Hi", "attachments": [one, two]},
    )
    assert over["error"] == "the files come to 1200 bytes; a reply takes at most 1000"


async def test_a_draft_is_kept_per_agent_and_case_and_goes_with_the_reply(
    api: Any, engine: Engine
) -> None:
    make_user(engine, "ann")
    make_user(engine, "bob")
    ref = email_case(engine, "kim@example.org", "Draft", "Please help.")
    empty = await api.call("ann", "GET", f"/api/cases/{ref}/draft")
    assert empty["draft"]["text"] == "" and empty["updated_at"] is None
    upload = await _upload(api, "ann", ref, "a.txt", b"abc", "text/plain")
    await api.call(
        "ann",
        "PUT",
        f"/api/cases/{ref}/draft",
        json={"text": "Half written", "cc": ["new@example.com"], "attachments": [upload]},
    )
    mine = await api.call("ann", "GET", f"/api/cases/{ref}/draft")
    assert mine["draft"]["text"] == "Half written"
    assert mine["draft"]["cc"] == ["new@example.com"]
    assert [f["filename"] for f in mine["files"]] == ["a.txt"]
    # Another agent sees none of it.
    theirs = await api.call("bob", "GET", f"/api/cases/{ref}/draft")
    assert theirs["draft"]["text"] == "" and theirs["files"] == []
    await api.call("ann", "POST", f"/api/cases/{ref}/replies", 201, json={"text": "Done"})
    gone = await api.call("ann", "GET", f"/api/cases/{ref}/draft")
    assert gone["draft"]["text"] == ""


async def test_capture_dir_writes_mail_to_a_maildir_instead(
    engine: Engine, sink: Sink, tmp_path: Path
) -> None:
    email_case(engine, "kim@example.org", "Trial", "Just trying.")
    captured = tmp_path / "captured"
    drainer = drainer_for(engine, sink, relay={"capture_dir": str(captured), "host": ""})
    assert drainer.drain_once().sent == 1  # the acknowledgement
    assert sink.received == []  # nothing went to any relay
    (message,) = list(mailbox.Maildir(str(captured), create=False))
    assert message["To"] == "kim@example.org"
    with engine.connect() as conn:
        row = conn.execute(select(Outbox)).one()
    assert row.provider_id.startswith("captured to Maildir, not sent")


def test_capture_counts_as_a_way_out() -> None:
    from connectors.config import EmailRelaySettings, OutboxSettings

    assert relay_availability(OutboxSettings()) == (
        False,
        "no relay configured ([outbox.email] host); email stays queued",
    )
    capture = OutboxSettings(email=EmailRelaySettings(capture_dir="trial"))
    assert relay_availability(capture) == (True, None)


# --- pure parts, by tables -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "present", "absent"),
    [
        ("**bold** and _it_", ["<strong>bold</strong>", "<em>it</em>"], []),
        ("1. one\n2. two", ["<ol>", "<li>one</li>"], []),
        ("[site](https://example.org)", ['href="https://example.org"', "noopener"], []),
        # Raw HTML is text, not markup: an agent's paste cannot add script or images.
        ("<script>alert(1)</script>", ["&lt;script&gt;"], ["<script>"]),
        ("<img src=x onerror=alert(1)>", ["&lt;img"], ["<img"]),
        ("[x](javascript:alert(1))", [], ['href="javascript', "<a"]),
        ("![pixel](https://tracker.example/p.gif)", [], ["<img", "tracker.example"]),
        ("| a | b |\n|---|---|\n| 1 | 2 |", ["<table>", "<td>1</td>"], []),
    ],
)
def test_markdown_becomes_safe_html(markdown: str, present: list[str], absent: list[str]) -> None:
    html = markdown_html(markdown)
    for part in present:
        assert part in html
    for part in absent:
        assert part not in html


@pytest.mark.parametrize(
    ("typed", "clean"),
    [
        ("ann@Example.ORG", "ann@example.org"),
        ("Ann Lee <ann@example.org>", "ann@example.org"),
        ("  bob@mail.example.com ", "bob@mail.example.com"),
    ],
)
def test_addresses_are_cleaned(typed: str, clean: str) -> None:
    assert clean_address(typed) == clean


@pytest.mark.parametrize(
    "typed",
    ["", "ann", "ann@localhost", "ann@example.org\r\nBcc: x@evil.example", "@example.org"],
)
def test_bad_addresses_are_refused(typed: str) -> None:
    with pytest.raises(ComposeRefused):
        clean_address(typed)


def test_copies_mark_new_addresses_and_drop_repeats() -> None:
    cc, bcc = copies(
        ["boss@example.org", "KIM@example.org", "new@example.com"],
        ["boss@example.org", "hidden@example.net"],
        known=["boss@example.org", "kim@example.org"],
        recipient="kim@example.org",
    )
    assert [(c.address, c.known) for c in cc] == [
        ("boss@example.org", True),
        ("new@example.com", False),
    ]
    assert [(c.address, c.known) for c in bcc] == [("hidden@example.net", False)]
    with pytest.raises(ComposeRefused, match="at most 20 copies"):
        copies([f"p{i}@example.org" for i in range(21)], [], [], "kim@example.org")


@pytest.mark.parametrize(
    ("channel", "refusal"),
    [
        ("email", None),
        ("reddit", "reddit cannot carry files: only text goes out on it"),
        ("web", "web cannot carry files: only text goes out on it"),
        ("telegram", None),
        ("twitter", None),
        ("instagram", None),
    ],
)
def test_attachments_follow_the_registry(channel: str, refusal: str | None) -> None:
    assert attachment_refusal(channel) == refusal


@pytest.mark.parametrize(
    ("channel", "refusal"),
    [
        ("twitter", "a public reply on twitter goes as text only: reply by private message "
                    "to send files"),
        ("instagram", "a public reply on instagram goes as text only: reply by private "
                      "message to send files"),
    ],
)  # fmt: skip
def test_a_public_reply_takes_no_files(channel: str, refusal: str) -> None:
    assert files_in_public(channel) == refusal


@pytest.mark.parametrize(
    ("channel", "mode", "refusal"),
    [
        ("whatsapp", "text", None),
        (
            "whatsapp",
            "template",
            "outside WhatsApp's 24-hour window: a template will be sent, and a template cannot "
            "carry files: send them once the customer writes again",
        ),
        # A tagged Messenger answer carries files; a refused one is refused for its text.
        ("messenger", "tagged", None),
        ("messenger", "refused", None),
        ("telegram", "text", None),
    ],
)
def test_files_and_the_reply_window(channel: str, mode: str, refusal: str | None) -> None:
    assert files_in_window(channel, mode) == refusal


@pytest.mark.parametrize(
    ("channel", "text", "fits", "parts"),
    [
        # SMS: 160 GSM-7 characters in one part; longer ones go in parts of 153; 1600 at most.
        ("sms", "x" * 160, True, 1),
        ("sms", "x" * 161, True, 2),
        ("sms", "x" * 306, True, 2),
        ("sms", "x" * 307, True, 3),
        ("sms", "x" * 1600, True, 11),
        ("sms", "x" * 1601, False, 11),
        # Outside GSM-7: 70 characters, then parts of 67.
        ("sms", "ü" * 70, True, 1),
        ("sms", "ü" * 71, True, 2),
        # X: a post takes 280.
        ("twitter", "x" * 280, True, 1),
        ("twitter", "x" * 281, False, 1),
        ("email", "x" * 5000, True, 1),
        ("instagram", "x" * 1001, False, 1),
    ],
)
def test_lengths_against_the_channel(channel: str, text: str, fits: bool, parts: int) -> None:
    check = check_length(channel, text)
    assert (check.fits, check.parts) == (fits, parts)


@pytest.mark.parametrize(
    ("body", "filled"),
    [
        ("Hi {contact.name}, case {case.reference}.", "Hi Kim, case C-000042."),
        ("{agent.name} will answer {eta}.", "ann will answer within 2 hours."),
        # A value that looks like a placeholder is not filled again.
        ("Hi {contact.name}", "Hi {agent.name}"),
        # An unknown one stays for the agent to see.
        ("Hi {contact.nmae}", "Hi {contact.nmae}"),
    ],
)
def test_placeholders_fill_once(body: str, filled: str) -> None:
    name = "{agent.name}" if "nmae" not in body and body == "Hi {contact.name}" else "Kim"
    values = {
        "contact.name": name,
        "case.reference": "C-000042",
        "agent.name": "ann",
        "eta": "within 2 hours",
    }
    assert fill(body, values) == filled


def test_unknown_placeholders_are_named() -> None:
    assert unknown_placeholders("{contact.nmae} {eta} {case}") == ["case", "contact.nmae"]
