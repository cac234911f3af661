"""Property tests (issue 16) over the mail parser, the HTML path and the reference finder.

Each example's CPU time is measured with time.process_time and must stay under CPU_BOUND:
a budget bound (no input may make these pure functions work for long), not a performance
figure. Inputs are built from the shapes attacks use (unclosed tags, deep nesting, stray
end tags, many parameters, nested multiparts), so the generator reaches them quickly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from inbox.mailhtml import cap_depth, html_to_text, sanitize
from inbox.references import find_references
from normalizer.mail import Caps, check_caps, parse_email
from normalizer.message import InboundMessage, ParseError

CPU_BOUND = 2.0  # seconds of CPU for one example, generous on a loaded 2-core machine
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
T = TypeVar("T")


def bounded(call: Callable[[], T]) -> T:
    started = time.process_time()
    result = call()
    spent = time.process_time() - started
    assert spent < CPU_BOUND, f"{spent:.2f} s of CPU for one input"
    return result


# --- HTML ------------------------------------------------------------------------------------

NAMES = st.sampled_from(["div", "p", "b", "i", "a", "span", "table", "tr", "td", "li", "br", "img"])
ATTRIBUTE = st.builds(
    lambda name, value, quote: f" {name}={quote}{value}{quote}",
    st.sampled_from(["href", "src", "class", "onclick", "style", "title"]),
    st.text(alphabet="ab:/.<>=&;#' \"", max_size=12),
    st.sampled_from(['"', "'", ""]),
)
START = st.builds(lambda n, attrs: f"<{n}{''.join(attrs)}>", NAMES, st.lists(ATTRIBUTE, max_size=3))
END = NAMES.map(lambda n: f"</{n}>")
JUNK = st.sampled_from(
    ["<a<a\u2039a", "<", "</", "<!--", "-->", "<!", "<?x", "&amp;", "&lt;", "&#x41;", "'", '"']
)
TEXT = st.text(alphabet="xyz <>&;\n", max_size=10)
PIECE = st.one_of(START, END, JUNK, TEXT)


@st.composite
def markup(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(PIECE, max_size=60))
    # Attack shapes, repeated: deep nesting, stray end tags, quadratic junk.
    repeat = draw(st.sampled_from(["", "<div>", "</x>", "<a<a\u2039a", "<b><i>", "<!--<"]))
    count = draw(st.integers(min_value=0, max_value=20_000))
    at = draw(st.integers(min_value=0, max_value=len(pieces)))
    return "".join(pieces[:at]) + repeat * count + "".join(pieces[at:])


def depth(serialized: str) -> int:
    """Deepest nesting of non-void elements in our own serialization, counted independently."""
    deepest = level = 0
    for closing, name in re.findall(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*>", serialized):
        if name.lower() in {"br", "img", "hr", "meta", "input", "wbr"}:
            continue
        level += -1 if closing else 1
        deepest = max(deepest, level)
    return deepest


def letters(text: str) -> str:
    return "".join(ch for ch in text if ch in "xyz")


@PROPERTY
@given(markup(), st.integers(min_value=1, max_value=80))
def test_cap_depth_bounds_nesting_and_keeps_the_text(source: str, limit: int) -> None:
    capped = bounded(lambda: cap_depth(source, limit))
    assert depth(capped) <= limit
    # Tags are dropped, never text: the words read the same before and after the cap.
    assert letters(bounded(lambda: html_to_text(capped))) == letters(html_to_text(source))


class Tags(HTMLParser):
    """Every start tag of a serialization with its attributes, as a browser's tokenizer
    reads them (the standard library's, independent of the sanitizer): an attribute's value
    that merely contains `onclick=` is text, not a handler."""

    def __init__(self, serialized: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str]]]] = []
        self.feed(serialized)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, [(name, value or "") for name, value in attrs]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def unsafe(serialized: str, *, show: bool) -> list[str]:
    """What in a serialization a browser would run or fetch: script tags, handlers,
    javascript: links, and remote images when images are not shown."""
    found = []
    for tag, attrs in Tags(serialized).tags:
        if tag == "script":
            found.append("script")
        for name, value in attrs:
            if name.startswith("on"):
                found.append(f"{tag} {name}")
            if name in ("href", "src"):
                # What a browser would follow, with the whitespace it ignores removed.
                target = re.sub(r"[\s\x00-\x1f]", "", value).lower()
                if target.startswith("javascript:"):
                    found.append(f"{tag} {name} javascript")
                if (
                    tag == "img"
                    and name == "src"
                    and not show
                    and re.match(r"(https?:)?//", target)
                ):
                    found.append("remote image")
    return found


@pytest.mark.parametrize(
    ("serialized", "show", "expected"),
    [
        ('<div onclick="x()">a</div>', False, ["div onclick"]),
        ("<p><script>x()</script></p>", False, ["script"]),
        ('<a href=" java\tscript:x()">a</a>', False, ["a href javascript"]),
        ('<img src="https://tracker.example/p.gif">', False, ["remote image"]),
        ('<img src="//tracker.example/p.gif">', False, ["remote image"]),
        ('<img src="https://tracker.example/p.gif">', True, []),
        # Inside an attribute's value, "onclick=" is text: what the property once flagged.
        ('<div title=" onclick=&quot;"></div>', False, []),
        ('<a href="https://example.org/?onload=1" title="javascript:">a</a>', False, []),
    ],
)
def test_the_safety_check_reads_tags_as_a_browser_does(
    serialized: str, show: bool, expected: list[str]
) -> None:
    assert unsafe(serialized, show=show) == expected


@PROPERTY
@given(markup(), st.booleans())
@example("<div title=' onclick=\"'>", False)  # a value holding "onclick=": not a handler
def test_sanitized_view_has_no_script_handler_or_remote_image(source: str, show: bool) -> None:
    clean, _blocked = bounded(lambda: sanitize(source, show_images=show))
    assert unsafe(clean, show=show) == [], clean


@PROPERTY
@given(markup())
def test_html_to_text_is_text(source: str) -> None:
    text = bounded(lambda: html_to_text(source))
    assert isinstance(text, str)
    assert "\n\n\n" not in text and text == text.strip()


# --- the mail parser -------------------------------------------------------------------------

HEADER_NAMES = st.sampled_from(
    ["From", "To", "Cc", "Subject", "Message-ID", "References", "Date", "Content-Type", "X-Note"]
)
HEADER_VALUE = st.text(alphabet="ab@.<>;=\"' ,:()\u00e9=?", max_size=40)


@st.composite
def body(draw: st.DrawFn, level: int = 0) -> bytes:
    kind = draw(st.sampled_from(["plain", "html", "multipart"] if level < 4 else ["plain"]))
    if kind == "plain":
        return b"Content-Type: text/plain\r\n\r\n" + draw(st.binary(max_size=40)) + b"\r\n"
    if kind == "html":
        return b"Content-Type: text/html\r\n\r\n" + draw(markup()).encode() + b"\r\n"
    boundary = b"b%d" % level
    params = b"; p=x" * draw(st.integers(min_value=0, max_value=80))
    parts = draw(st.lists(body(level + 1), max_size=3))
    inner = b"".join(b"--" + boundary + b"\r\n" + p for p in parts)
    return (
        b"Content-Type: multipart/mixed; boundary=" + boundary + params + b"\r\n\r\n"
        + inner + b"--" + boundary + b"--\r\n"
    )  # fmt: skip


@st.composite
def mail(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUE), max_size=8))
    head = b"From: a@example.org\r\n" + b"".join(
        f"{n}: {v}\r\n".encode() for n, v in headers if n != "Content-Type"
    )
    return head + draw(body())


CAPS = Caps(max_depth=3, max_parts=20, max_header_params=40)


@PROPERTY
@given(mail())
def test_parse_email_gives_a_message_or_a_parse_error(raw: bytes) -> None:
    def run() -> Any:
        try:
            check_caps(raw, CAPS)
        except ParseError:
            return None
        try:
            return parse_email(raw, received_at=datetime.now(UTC), caps=CAPS)
        except ParseError:
            return None

    result = bounded(run)
    assert result is None or isinstance(result, InboundMessage)
    if isinstance(result, InboundMessage):
        assert "\x00" not in result.text


# --- the reference finder ------------------------------------------------------------------


@PROPERTY
@given(
    st.text(max_size=200),
    st.integers(min_value=1, max_value=10**9),
    st.text(max_size=200),
    st.integers(min_value=0, max_value=50_000),
)
def test_find_references_finds_a_cited_reference(
    before: str, case_id: int, after: str, noise: int
) -> None:
    reference = f"C-{case_id:06d}"
    text = f"{before} {reference} {after}" + "C-1" * noise
    found = bounded(lambda: find_references(text))
    assert reference in found
    assert all(re.fullmatch(r"C-\d{6,12}", r) for r in found)
