# ruff: noqa: E501  (tables of realistic inputs read best one case per line)
"""The pure parts of the case page: depth capping, sanitizing, folding, durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from inbox.web.mailview import Segment, cap_depth, fold, sanitize
from inbox.web.pages import duration, queue_rows, time_left


def depth(markup: str) -> int:
    """Deepest nesting of non-void elements, counted independently with a regex walk."""
    deepest = level = 0
    for closing, name in re.findall(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*>", markup):
        if name.lower() in {"br", "img", "hr", "meta", "input", "wbr"}:
            continue
        level += -1 if closing else 1
        deepest = max(deepest, level)
    return deepest


@pytest.mark.parametrize(
    ("markup", "limit", "expected"),
    [
        ("<div><p>hi</p></div>", 5, "<div><p>hi</p></div>"),
        ("<div>" * 5 + "x", 3, "<div><div><div>x</div></div></div>"),
        ("<b>a<i>b</b>c", 5, "<b>a<i>b</i></b>c"),  # closes what a browser would close
        ("text</span>more", 5, "textmore"),  # a stray end tag is dropped
        ('<a href="x?a=1&amp;b=2">l</a>', 5, '<a href="x?a=1&amp;b=2">l</a>'),
        ("<p>1 &lt; 2 <br> 3</p>", 1, "<p>1 &lt; 2 <br> 3</p>"),  # void tags do not nest
        ("<table><tr><td><div>deep</div></td></tr></table>", 2, "<table><tr>deep</tr></table>"),
    ],
)
def test_cap_depth(markup: str, limit: int, expected: str) -> None:
    assert cap_depth(markup, limit) == expected


def test_cap_depth_is_linear_enough_for_a_hundred_thousand_divs() -> None:
    capped = cap_depth("<div>" * 100_000 + "deep" + "</div>" * 100_000, 64)
    assert depth(capped) == 64
    assert "deep" in capped
    clean, _ = sanitize("<div>" * 100_000 + "deep")
    assert depth(clean) <= 64 and "deep" in clean


@pytest.mark.parametrize(
    ("markup", "show_images", "must_not_contain", "must_contain", "blocked"),
    [
        ("<p>hi<script>document.title='x'</script></p>", False, ["<script", "document.title"], ["hi"], 0),
        ('<img src="data:image/png;base64,AA" onerror="alert(1)">', False, ["onerror", "alert"], ["data:image/png"], 0),
        ('<a href="javascript:alert(1)">click</a>', False, ["javascript:"], ["click"], 0),
        ('<img src="https://track.example/p.gif">', False, ["track.example"], ["<img"], 1),
        ('<img src="https://track.example/p.gif">', True, [], ["https://track.example/p.gif"], 0),
        ('<svg><script>alert(1)</script></svg><iframe src="x"></iframe>', False, ["<svg", "<iframe", "alert"], [], 0),
        ('<a href="https://shop.example/">shop</a>', False, [], ['href="https://shop.example/"', "noopener"], 0),
        ('<p style="color:red" onclick="x()">red</p>', False, ["onclick"], ["red"], 0),
    ],
)  # fmt: skip
def test_sanitize(
    markup: str,
    show_images: bool,
    must_not_contain: list[str],
    must_contain: list[str],
    blocked: int,
) -> None:
    clean, count = sanitize(markup, show_images=show_images)
    for bad in must_not_contain:
        assert bad not in clean
    for good in must_contain:
        assert good in clean
    assert count == blocked


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Just a question.", [("body", "Just a question.")]),
        (
            "Thanks, that worked.\n\nOn Tue, 3 Mar 2026 at 10:02, Help <help@x.example> wrote:\n"
            "> Try again\n> please",
            [
                ("body", "Thanks, that worked."),
                ("quote", "On Tue, 3 Mar 2026 at 10:02, Help <help@x.example> wrote:\n> Try again\n> please"),
            ],
        ),
        (
            "Still broken.\n-- \nPat Lee\nACME Ltd\n\n> earlier words",
            [("body", "Still broken."), ("signature", "-- \nPat Lee\nACME Ltd"), ("quote", "> earlier words")],
        ),
        (
            "Hallo\n\nAm 3. März 2026 um 10:02 schrieb Support <s@x.example>:\n> alt",
            [("body", "Hallo"), ("quote", "Am 3. März 2026 um 10:02 schrieb Support <s@x.example>:\n> alt")],
        ),
        (
            "See below\r\n\r\n-----Original Message-----\r\nFrom: a@x.example\r\nSent: Monday\r\nold",
            [("body", "See below"), ("quote", "-----Original Message-----\nFrom: a@x.example\nSent: Monday\nold")],
        ),
        (
            "ok\nFrom: Help <h@x.example>\nSent: Tuesday\nTo: me\nold text",
            [("body", "ok"), ("quote", "From: Help <h@x.example>\nSent: Tuesday\nTo: me\nold text")],
        ),
        ("Great\n\nSent from my iPhone", [("body", "Great"), ("signature", "Sent from my iPhone")]),
        ("From: here on I will write from: anywhere", [("body", "From: here on I will write from: anywhere")]),
        ("", []),
    ],
)  # fmt: skip
def test_fold(text: str, expected: list[tuple[str, str]]) -> None:
    assert fold(text) == [Segment(part, chunk) for part, chunk in expected]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0m"), (59, "0m"), (61, "1m"), (3600 + 5 * 60, "1h 5m"), (3 * 86400 + 4 * 3600, "3d 4h")],
)
def test_duration(seconds: float, expected: str) -> None:
    assert duration(seconds) == expected


def test_time_left_and_queue_rows() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert time_left((now + timedelta(hours=2)).isoformat(), now) == ("2h 0m", False)
    assert time_left((now - timedelta(minutes=30)).isoformat(), now) == ("30m over", True)
    case = {
        "reference": "C-000001",
        "contact": {"name": "", "identities": [{"handle": "pat@x.example"}]},
        "subject": "Help",
        "channels": ["email", "sms"],
        "first_inbound_at": (now - timedelta(days=1, hours=2)).isoformat(),
        "due_at": (now - timedelta(hours=1)).isoformat(),
        "status": "open",
        "followups": 2,
        "assignee": None,
        "lease": None,
    }
    held = {**case, "reference": "C-000002", "lease": {"holder": "bo", "mine": False}}
    mine = {**case, "reference": "C-000003", "lease": {"holder": "ann", "mine": True}}
    rows = queue_rows([case, held, mine], now, show_held=False)
    assert [r["reference"] for r in rows] == ["C-000001", "C-000003"]
    assert rows[0]["contact"] == "pat@x.example"
    assert (rows[0]["age"], rows[0]["left"], rows[0]["overdue"]) == ("1d 2h", "1h 0m over", True)
    assert rows[1]["mine"] is True
    assert len(queue_rows([case, held, mine], now, show_held=True)) == 3
    assert rows[0]["similar"] == []
    twin = {
        **case,
        "suggestions": [
            {"reference": "C-000009", "score": 0.8125, "subject": "Help", "first_inbound_at": None}
        ],
    }
    assert queue_rows([twin], now, show_held=False)[0]["similar"] == [("C-000009", "0.81")]
