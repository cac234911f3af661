"""The agent inbox's pure rules, by tables: reply targets, reply subjects, download headers,
search words, roles and queue cursors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from inbox import references
from inbox.accounts import AccountError, check_password, has_role, normalize_name
from inbox.casework import Invalid, decode_cursor, encode_cursor
from inbox.downloads import download_headers, safe_filename
from inbox.replies import (
    IdentityView,
    InboundView,
    ReplyRefused,
    choose_reply_target,
    offered_channels,
    reply_subject,
)
from inbox.search import fts5_query, snippet, tsquery, words
from normalizer import threads

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
ANN = 1  # the case's contact
OTHER = 2  # another contact: a stranger, or a new address that carried the case's token

IDENTITIES = [
    IdentityView(10, "email", "ann@example.org", ANN),
    IdentityView(11, "phone", "+14155550100", ANN),
    IdentityView(12, "email", "ann.work@example.com", ANN),
    IdentityView(20, "email", "ann.new@example.net", OTHER),
    IdentityView(21, "email", "mallory@evil.example", OTHER),
]


def inbound(message_id: int, identity_id: int | None, channel: str, minutes: int) -> InboundView:
    return InboundView(message_id, identity_id, channel, "private", T0 + timedelta(minutes=minutes))


# (name, inbound messages, channel asked, handle asked, expected (handle, channel) or error)
REPLY_TARGETS = [
    (
        "the last message's channel",
        [inbound(1, 10, "email", 0)],
        None,
        None,
        ("ann@example.org", "email"),
    ),
    (
        "a later message from another contact's address is not a target",
        [inbound(1, 10, "email", 0), inbound(2, 20, "email", 5)],
        None,
        None,
        ("ann@example.org", "email"),
    ),
    (
        "the customer moved to SMS",
        [inbound(1, 10, "email", 0), inbound(2, 11, "sms", 5)],
        None,
        None,
        ("+14155550100", "sms"),
    ),
    (
        "a voicemail is answered by SMS",
        [inbound(1, 11, "voice", 0)],
        None,
        None,
        ("+14155550100", "sms"),
    ),
    (
        "an anonymous caller is nobody to reply to",
        [inbound(1, 10, "email", 0), inbound(2, None, "voice", 9)],
        None,
        None,
        ("ann@example.org", "email"),
    ),
    (
        "another channel of the contact",
        [inbound(1, 10, "email", 0)],
        "sms",
        None,
        ("+14155550100", "sms"),
    ),
    (
        "the email address they last wrote from",
        [inbound(1, 10, "email", 0), inbound(2, 12, "email", 5)],
        "email",
        None,
        ("ann.work@example.com", "email"),
    ),
    (
        "a named identity of the contact, any case",
        [inbound(1, 10, "email", 0)],
        None,
        "ANN.WORK@example.com",
        ("ann.work@example.com", "email"),
    ),
    (
        "a stranger who cited the reference",
        [inbound(1, 10, "email", 0)],
        None,
        "mallory@evil.example",
        ReplyRefused,
    ),
    (
        "the token-bearing new address",
        [inbound(1, 10, "email", 0), inbound(2, 20, "email", 5)],
        None,
        "ann.new@example.net",
        ReplyRefused,
    ),
    (
        "a handle on the wrong channel",
        [inbound(1, 10, "email", 0)],
        "sms",
        "ann@example.org",
        ReplyRefused,
    ),
    (
        "a channel the contact has no identity on",
        [inbound(1, 10, "email", 0)],
        "twitter",
        None,
        ReplyRefused,
    ),
    (
        "voice cannot carry a written reply",
        [inbound(1, 11, "voice", 0)],
        "voice",
        None,
        ReplyRefused,
    ),
    (
        "nothing from the contact in this case",
        [inbound(1, 20, "email", 0)],
        None,
        None,
        ReplyRefused,
    ),
]


@pytest.mark.parametrize(
    ("messages", "channel", "handle", "expected"),
    [row[1:] for row in REPLY_TARGETS],
    ids=[row[0] for row in REPLY_TARGETS],
)
def test_reply_target(messages, channel, handle, expected):
    if expected is ReplyRefused:
        with pytest.raises(ReplyRefused):
            choose_reply_target(ANN, IDENTITIES, messages, channel=channel, handle=handle)
        return
    target = choose_reply_target(ANN, IDENTITIES, messages, channel=channel, handle=handle)
    assert (target.handle, target.channel) == expected
    assert next(i for i in IDENTITIES if i.id == target.identity_id).contact_id == ANN


TOKEN = "abcdefghijkl"
TAG = f"[C-000042 #{TOKEN}]"
SUBJECTS = [
    ("Locked out", f"Re: Locked out {TAG}"),
    ("Re: RE: Locked out", f"Re: Locked out {TAG}"),
    (f"Re: Locked out {TAG}", f"Re: Locked out {TAG}"),
    ("Re: [C-000042] still locked out", f"Re: still locked out {TAG}"),
    ("AW: Konto gesperrt", f"Re: Konto gesperrt {TAG}"),
    ("Fwd: help\r\nBcc: victim@example.org", f"Re: help Bcc: victim@example.org {TAG}"),
    ("", f"Re: {TAG}"),
    ("x" * 300, "Re: " + "x" * 200 + f" {TAG}"),
]


@pytest.mark.parametrize(("subject", "expected"), SUBJECTS)
def test_reply_subject(subject, expected):
    result = reply_subject(subject, "C-000042", TOKEN)
    assert result == expected
    assert "\r" not in result and "\n" not in result
    # The customer's reply to it threads back by the token in the subject.
    assert threads.find_tokens([result]) == [("C-000042", TOKEN)]


DOWNLOADS = [
    # declared type, filename, inline asked -> served type, disposition, file name
    ("image/png", "cat.png", True, "image/png", "inline", "cat.png"),
    ("image/png", "cat.png", False, "image/png", "attachment", "cat.png"),
    ("IMAGE/JPEG; name=x", "photo.JPG", True, "image/jpeg", "inline", "photo.JPG"),
    ("image/png", "invoice.html", False, "image/png", "attachment", "invoice.html.png"),
    ("text/html", "page.html", True, "application/octet-stream", "attachment", "page.html"),
    ("image/svg+xml", "logo.svg", True, "application/octet-stream", "attachment", "logo.svg"),
    (
        "application/pdf",
        "../../etc/passwd",
        False,
        "application/octet-stream",
        "attachment",
        "passwd",
    ),
    (
        "text/plain",
        'a"; filename=evil.exe',
        False,
        "application/octet-stream",
        "attachment",
        "a_ filename=evil.exe",
    ),
    (
        "text/plain",
        "a\r\nContent-Type: text/html.txt",
        False,
        "application/octet-stream",
        "attachment",
        "html.txt",
    ),
    (
        "text/plain",
        "a\r\nX-Evil: 1.txt",
        False,
        "application/octet-stream",
        "attachment",
        "a_X-Evil_ 1.txt",
    ),
    ("", "", False, "application/octet-stream", "attachment", "download"),
    (
        "application/x-msdownload",
        "..hidden.exe",
        True,
        "application/octet-stream",
        "attachment",
        "hidden.exe",
    ),
]


@pytest.mark.parametrize(
    ("declared", "filename", "inline", "served", "disposition", "name"), DOWNLOADS
)
def test_download_headers(declared, filename, inline, served, disposition, name):
    headers = download_headers(declared, filename, inline=inline)
    assert headers["Content-Type"] == served
    assert headers["Content-Disposition"].startswith(f"{disposition}; ")
    assert safe_filename(filename) == name or served.startswith("image/")
    assert f'filename="{name}"' in headers["Content-Disposition"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in headers["Content-Security-Policy"]
    assert "\r" not in headers["Content-Disposition"] and "\n" not in headers["Content-Disposition"]


def test_download_names_keep_unicode_in_the_extended_parameter():
    headers = download_headers("application/pdf", "résumé.pdf")
    assert 'filename="resume.pdf"' in headers["Content-Disposition"]
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.pdf" in headers["Content-Disposition"]


SEARCH_WORDS = [
    ("Locked out", ["locked", "out"]),
    ("ann@example.org", ["ann", "example", "org"]),
    ("C-001042", ["c", "001042"]),
    ("+1 (415) 555-0100", ["1", "415", "555", "0100"]),
    ('"locked" OR NEAR(x) AND *', ["locked", "or", "near", "x", "and"]),
    ("Grüße über_alles", ["grüße", "über", "alles"]),
    ("   ", []),
]


@pytest.mark.parametrize(("query", "expected"), SEARCH_WORDS)
def test_search_words(query, expected):
    assert words(query) == expected


def test_search_queries_quote_every_word():
    assert fts5_query(["locked", "or"]) == '"locked"* AND "or"*'
    assert tsquery(["locked", "or"]) == "locked:* & or:*"


SNIPPETS = [
    (
        "I cannot log in since my phone was stolen",
        ["stol"],
        "I cannot log in since my phone was stolen",
    ),
    ("a " * 100 + "hacked account", ["hacked"], None),
    ("nothing matches here", ["zzz"], "nothing matches here"),
]


@pytest.mark.parametrize(("body", "terms", "expected"), SNIPPETS)
def test_snippet(body, terms, expected):
    result = snippet(body, terms, width=60)
    if expected is not None:
        assert result == expected
    else:
        assert "hacked" in result and result.startswith("…")


@pytest.mark.parametrize(
    ("role", "needed", "allowed"),
    [
        ("agent", "agent", True),
        ("agent", "manager", False),
        ("manager", "agent", True),
        ("manager", "admin", False),
        ("admin", "manager", True),
        ("intruder", "agent", False),
    ],
)
def test_roles(role, needed, allowed):
    assert has_role(role, needed) is allowed


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("ann", True),
        ("Ann.Lee", True),
        ("a" * 64, True),
        ("", False),
        ("-ann", False),
        ("ann smith", False),
        ("a" * 65, False),
        ("ann/../admin", False),
    ],
)
def test_user_names(name, ok):
    if ok:
        assert normalize_name(name) == name.lower()
    else:
        with pytest.raises(AccountError):
            normalize_name(name)


def test_short_passwords_are_refused():
    with pytest.raises(AccountError):
        check_password("short")


def test_queue_cursor_round_trips_and_refuses_forgeries():
    row = SimpleNamespace(due_at=T0, first_inbound_at=T0 - timedelta(hours=1), id=42)
    assert decode_cursor(encode_cursor(row)) == (T0, T0 - timedelta(hours=1), 42)
    for bad in ("", "not-base64!", "WzEsMl0"):
        with pytest.raises(Invalid):
            decode_cursor(bad)


def test_reference_formats_live_in_the_inbox_and_thread_the_same():
    assert threads.find_references is references.find_references
    assert threads.own_message_id is references.own_message_id
    own = references.own_message_id("C-000042", TOKEN, "u1", "parity.test")
    assert threads.find_tokens([], [own]) == [("C-000042", TOKEN)]
    assert references.find_references("about C-001042 and c-000001") == ["C-001042"]


# WhatsApp is offered to a number only where it wrote on WhatsApp (replies.offered_channels):
# (name, inbound messages, the reply channels each identity ever wrote on, channel asked,
# handle asked, expected (handle, channel) or error)
WHATSAPP_TARGETS = [
    (
        "asked for WhatsApp, the number wrote there (in another case)",
        [inbound(1, 11, "sms", 0)],
        {11: {"sms", "whatsapp"}},
        "whatsapp",
        None,
        ("+14155550100", "whatsapp"),
    ),
    (
        "asked for WhatsApp by number",
        [inbound(1, 10, "email", 0)],
        {10: {"email"}, 11: {"whatsapp"}},
        "whatsapp",
        "+14155550100",
        ("+14155550100", "whatsapp"),
    ),
    (
        "asked for WhatsApp, the number only ever texted",
        [inbound(1, 11, "sms", 0)],
        {11: {"sms"}},
        "whatsapp",
        None,
        ReplyRefused,
    ),
    (
        "asked for WhatsApp by number, a number known only from a call",
        [inbound(1, 10, "email", 0)],
        {10: {"email"}, 11: {"sms"}},
        "whatsapp",
        "+14155550100",
        ReplyRefused,
    ),
    (
        "SMS is the number's own channel: offered whatever it wrote on",
        [inbound(1, 11, "whatsapp", 0)],
        {11: {"whatsapp"}},
        "sms",
        None,
        ("+14155550100", "sms"),
    ),
    (
        "by default, the channel they last wrote on",
        [inbound(1, 11, "sms", 0), inbound(2, 11, "whatsapp", 5)],
        {11: {"sms", "whatsapp"}},
        None,
        None,
        ("+14155550100", "whatsapp"),
    ),
]


@pytest.mark.parametrize(
    ("messages", "written", "channel", "handle", "expected"),
    [row[1:] for row in WHATSAPP_TARGETS],
    ids=[row[0] for row in WHATSAPP_TARGETS],
)
def test_whatsapp_is_offered_where_the_number_wrote_on_it(
    messages, written, channel, handle, expected
):
    kwargs = {"channel": channel, "handle": handle, "written": written}
    if expected is ReplyRefused:
        with pytest.raises(ReplyRefused, match="has never written on whatsapp"):
            choose_reply_target(ANN, IDENTITIES, messages, **kwargs)
        return
    target = choose_reply_target(ANN, IDENTITIES, messages, **kwargs)
    assert (target.handle, target.channel) == expected


@pytest.mark.parametrize(
    ("kind", "written", "expected"),
    [
        ("phone", set(), ("sms",)),
        ("phone", {"sms"}, ("sms",)),
        ("phone", {"whatsapp"}, ("sms", "whatsapp")),
        ("email", set(), ("email",)),
        ("messenger", {"messenger"}, ("messenger",)),
    ],
)
def test_offered_channels(kind, written, expected):
    assert offered_channels(kind, written) == expected
