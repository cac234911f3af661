"""Pure functions that make stranger-written mail safe and quick to read.

`cap_depth` runs before the sanitizer because nh3 (html5ever's tree builder) is quadratic in
nesting depth: 100k nested divs take 158 s. Browsers stop nesting at 512 open elements, so
nothing a reader could see is lost by flattening below a smaller cap. `fold` splits a plain
text body into what the customer wrote now and the quoted history and signature, which the
page folds away.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal

import nh3

MAX_DEPTH = 64
# Elements that never hold content: they open nothing, so they never count toward depth.
VOID = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "param", "source", "track", "wbr",
    }
)  # fmt: skip


class _DepthCap(HTMLParser):
    """Re-emits the markup, dropping the tags (not the text) of elements opened deeper than
    the cap. HTMLParser is an iterative tokenizer, so the pass is linear whatever the depth."""

    def __init__(self, limit: int) -> None:
        super().__init__(convert_charrefs=True)
        self.limit = limit
        self.open: list[tuple[str, bool]] = []  # (tag, emitted)
        self.out: list[str] = []

    def _tag(self, tag: str, attrs: list[tuple[str, str | None]], close: str = "") -> str:
        rendered = "".join(
            f' {name}="{html.escape(value or "", quote=True)}"' for name, value in attrs
        )
        return f"<{tag}{rendered}{close}>"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            self.out.append(self._tag(tag, attrs))
            return
        emitted = len(self.open) < self.limit
        self.open.append((tag, emitted))
        if emitted:
            self.out.append(self._tag(tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.out.append(self._tag(tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        # Close up to the matching open tag, as a browser would; a stray end tag is dropped.
        for index in range(len(self.open) - 1, -1, -1):
            if self.open[index][0] == tag:
                while len(self.open) > index:
                    name, emitted = self.open.pop()
                    if emitted:
                        self.out.append(f"</{name}>")
                return

    def handle_data(self, data: str) -> None:
        self.out.append(html.escape(data, quote=False))


def cap_depth(markup: str, limit: int = MAX_DEPTH) -> str:
    """`markup` with no element nested deeper than `limit`; text is kept."""
    parser = _DepthCap(limit)
    parser.feed(markup)
    parser.close()
    while parser.open:
        name, emitted = parser.open.pop()
        if emitted:
            parser.out.append(f"</{name}>")
    return "".join(parser.out)


def _is_remote(value: str) -> bool:
    return not value.strip().lower().startswith(("data:", "cid:"))


def sanitize(markup: str, *, show_images: bool = False) -> tuple[str, int]:
    """Safe HTML for the mail frame, and how many remote images were blocked.

    nh3 removes script, event handlers and javascript: URLs. Remote images are tracking
    pixels until the agent asks for them, so their src is dropped unless `show_images`.
    """
    blocked = 0

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        remote_image = tag == "img" and attribute in ("src", "srcset") and _is_remote(value)
        if remote_image and not show_images:
            blocked += 1
            return None
        return value

    clean = nh3.clean(
        cap_depth(markup),
        attribute_filter=keep,
        url_schemes={"http", "https", "mailto", "data", "cid"},
        link_rel="noopener noreferrer nofollow",
    )
    return clean, blocked


# --- folding quoted replies and signatures ---------------------------------------------------

Part = Literal["body", "quote", "signature"]


@dataclass(frozen=True)
class Segment:
    part: Part
    text: str


# "On Tue, 3 Mar 2026 at 10:02, Ann <ann@example.com> wrote:" in the languages we see most.
_ATTRIBUTION = re.compile(
    r"^(on\b.*\bwrote:?|am\b.*\bschrieb\b.*:|le\b.*\ba écrit\s*:|el\b.*\bescribió:)\s*$",
    re.IGNORECASE,
)
_OUTLOOK = re.compile(r"^-{2,}\s*(original message|forwarded message)\s*-{2,}$", re.IGNORECASE)
_FROM_HEADER = re.compile(r"^from:\s.+", re.IGNORECASE)
_SIGNATURE = re.compile(r"^(-- ?|__+|sent from my \w+.*)$", re.IGNORECASE)


def fold(text: str) -> list[Segment]:
    """Split a message into what is new (body), quoted history and signature.

    The body ends at the first quoted line block (`>`), attribution line ("On ... wrote:"),
    Outlook separator or a signature delimiter ("-- "); everything after a quote start is
    quote, and a signature is the part after its delimiter up to any quote.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    segments: list[Segment] = []
    current: Part = "body"
    buffer: list[str] = []

    def flush() -> None:
        chunk = "\n".join(buffer).strip("\n")
        if chunk.strip():
            if segments and segments[-1].part == current:
                segments[-1] = Segment(current, segments[-1].text + "\n" + chunk)
            else:
                segments.append(Segment(current, chunk))
        buffer.clear()

    for index, line in enumerate(lines):
        stripped = line.strip()
        starts_quote = (
            stripped.startswith(">")
            or bool(_ATTRIBUTION.match(stripped))
            or bool(_OUTLOOK.match(stripped))
            or (
                bool(_FROM_HEADER.match(stripped))
                and index + 1 < len(lines)
                and re.match(r"^(sent|date|to):", lines[index + 1].strip(), re.IGNORECASE)
                is not None
            )
        )
        if current != "quote" and starts_quote:
            flush()
            current = "quote"
        elif current == "body" and _SIGNATURE.match(stripped) and index > 0:
            flush()
            current = "signature"
        buffer.append(line)
    flush()
    return segments
