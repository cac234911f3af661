"""Header handling the parse speed-ups must not change: automation signals and shared headers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from normalizer import mail as mail_module
from normalizer.mail import HEADER_CACHE_SIZE, OWN_HEADER, parse_email

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def mail(extra: str = "", sender: str = "ann@example.org", ctype: str = "text/plain") -> bytes:
    return (
        f"From: Ann <{sender}>\r\n"
        "To: help@support.example.com\r\n"
        "Subject: Hello\r\n"
        "Message-ID: <h1@example.org>\r\n"
        f"Content-Type: {ctype}; charset=utf-8\r\n"
        f"{extra}"
        "\r\n"
        "Body text.\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("", None),
        ("Auto-Submitted: auto-replied\r\n", "auto-submitted: auto-replied"),
        ("Auto-Submitted: no\r\n", None),
        ("Precedence: bulk\r\n", "precedence: bulk"),
        ("X-Autoreply: yes\r\n", "auto-reply header: x-autoreply"),
        ("X-Auto-Response-Suppress: All\r\n", "auto-reply header: x-auto-response-suppress"),
        ("List-Id: <users.lists.example.org>\r\n", "mailing list"),
        ("List-Unsubscribe: <mailto:u@example.org>\r\n", "mailing list"),
        (f"{OWN_HEADER}: C-000001\r\n", "our own outbound mail came back"),
        ("X-Mailer: Thunderbird\r\n", None),
    ],
)
def test_automation_headers_are_still_seen(extra, reason):
    message = parse_email(mail(extra), envelope={"mail_from": "ann@example.org"}, received_at=NOW)
    assert message.automated == reason


def test_messages_sharing_header_text_each_keep_their_own_values():
    html = parse_email(mail(ctype="text/html"), received_at=NOW)
    plain = parse_email(mail(sender="bo@example.org"), received_at=NOW)
    again = parse_email(mail(ctype="text/html", sender="cy@example.org"), received_at=NOW)
    assert (html.html is not None, plain.html is not None, again.html is not None) == (
        True,
        False,
        True,
    )
    assert [m.sender.handle for m in (html, plain, again)] == [
        "ann@example.org",
        "bo@example.org",
        "cy@example.org",
    ]


def distinct_mail(i: int) -> bytes:
    """A multipart mail whose every per-mail header (and its boundary) is its own."""
    boundary = f"b{i:06d}"
    return (
        f"From: Customer {i} <c{i}@example.org>\r\n"
        "To: help@support.example.com\r\n"
        f"Subject: Help needed {i}\r\n"
        f"Date: Fri, 20 Nov 2026 10:{i // 60 % 60:02d}:{i % 60:02d} +0000\r\n"
        f"Message-ID: <m{i}@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Question {i}.\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "\r\n"
        f"<p>Question {i}.</p>\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def test_the_header_cache_stays_bounded_and_holds_only_structural_headers():
    # A soak of distinct mails once filled the cache with every mail's Message-ID, Date and
    # Subject, each parse tree kept alive long after its mail was stored.
    mail_module._parsed_header.cache_clear()
    count = 3 * HEADER_CACHE_SIZE
    for i in range(count):
        message = parse_email(distinct_mail(i), envelope={}, received_at=NOW)
        assert message.subject == f"Help needed {i}"  # the uncached headers are still read
        assert message.text.strip() == f"Question {i}."
    info = mail_module._parsed_header.cache_info()
    # Every mail brings one structural value of its own (its boundary), so the cache saw
    # more values than it may keep: it is full, and no larger.
    assert info.currsize == HEADER_CACHE_SIZE
    # A miss per mail for its boundary, plus at most one each for the three structural
    # values all mails share (MIME-Version, the text and the HTML part's Content-Type).
    # Caching the per-mail headers too would add a miss per mail for each of them.
    assert count <= info.misses <= count + 3
    # Within one mail the structural headers are fetched again and again: those are hits.
    assert info.hits > count
