"""Pure functions that make stranger-written mail safe and quick to read.

The HTML side (the linear tokenizer, the depth cap, the stored sanitized view) lives in
`inbox.mailhtml`, which the normalizer also uses when it files a message; it is re-exported
here for the pages. `fold` splits a plain text body into what the customer wrote now and the
quoted history and signature, which the page folds away.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from inbox.mailhtml import MAX_DEPTH as MAX_DEPTH
from inbox.mailhtml import VOID as VOID
from inbox.mailhtml import cap_depth as cap_depth
from inbox.mailhtml import sanitize as sanitize
from inbox.mailhtml import with_images as with_images

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
