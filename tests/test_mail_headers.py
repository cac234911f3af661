"""Header handling the parse speed-ups must not change: automation signals and shared headers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from normalizer.mail import OWN_HEADER, parse_email

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
