"""Text a sender chose, made safe to show among our own words. Pure functions.

Bidirectional controls (the embeddings, overrides and isolates, and the invisible direction
marks) reorder the characters around them: a file named "invoice<U+202E>gpj.exe" is shown as
"invoice" followed by "exe.jpg". In a name, a subject or a file name they have no honest use
that survives their removal being noticed, so every such text is shown without them.
"""

from __future__ import annotations

# U+061C ARABIC LETTER MARK, U+200E/U+200F LEFT-TO-RIGHT/RIGHT-TO-LEFT MARK,
# U+202A..U+202E the embeddings and overrides (LRE, RLE, PDF, LRO, RLO),
# U+2066..U+2069 the isolates (LRI, RLI, FSI, PDI).
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_DROP = dict.fromkeys(ord(c) for c in BIDI_CONTROLS)


def strip_bidi(text: str) -> str:
    """`text` without bidirectional controls (one pass, linear in its length)."""
    return text.translate(_DROP)


def has_bidi(text: str) -> bool:
    return not BIDI_CONTROLS.isdisjoint(text)
