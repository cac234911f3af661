"""What an agent's reply is made of, before it is queued: its formatting, its copies, its
files, and a canned reply's placeholders. Pure functions, tested by tables
(tests/test_compose.py); the store and the senders call them.

Every value here was typed by an agent or filled in from a customer's message (a name, a
subject): hostile either way. Markdown is rendered with raw HTML switched off and the result
goes through the same whitelist sanitizer as inbound mail (nh3), so neither an agent's paste
nor a customer's name can put script or a tracking image into our mail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr

import nh3
from markdown_it import MarkdownIt

from inbox.channels import CHANNEL_FACTS

# Copies per reply: a CC list is for the few people on a conversation, not a mailing.
MAX_COPIES = 20
# The longest address a mail header takes (RFC 5321's path limit).
MAX_ADDRESS = 254

# What a reply's HTML may contain: text structure and links, nothing that loads or runs.
_TAGS = frozenset(
    {
        "p", "br", "strong", "em", "b", "i", "code", "pre", "blockquote", "ul", "ol", "li",
        "a", "h1", "h2", "h3", "h4", "hr", "table", "thead", "tbody", "tr", "th", "td", "del",
    }
)  # fmt: skip
_ATTRIBUTES = {"a": {"href"}, "ol": {"start"}}
_SCHEMES = frozenset({"http", "https", "mailto"})


class ComposeRefused(ValueError):
    """The reply cannot be sent as written; the message says why, for the agent."""


def _markdown() -> MarkdownIt:
    # CommonMark plus tables and strikethrough; "html": False turns raw HTML in the text into
    # text, before the sanitizer even sees it. Linkify stays off: it needs another library.
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


_MD = _markdown()
# Markdown is rendered only up to this many characters; a longer reply goes as plain text.
# Rendering is linear but costly on hostile shapes (50 µs a character for long runs of "["
# or "*", bench/reply_compose.py): 20,000 keeps the worst case near a second on a loaded
# 2-core machine, and no reply a person writes is longer.
MARKDOWN_MAX = 20_000


def markdown_html(text: str) -> str:
    """An agent's Markdown as a sanitized HTML fragment (the mail's text/html part). The
    caller keeps `text` within MARKDOWN_MAX."""
    rendered = _MD.render(text)
    return nh3.clean(
        rendered,
        tags=set(_TAGS),
        attributes={k: set(v) for k, v in _ATTRIBUTES.items()},
        url_schemes=set(_SCHEMES),
        link_rel="noopener noreferrer",
    )


def html_document(fragment: str) -> str:
    """A whole HTML part around a fragment, so mail clients pick the right charset."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>'
        f"<body>\n{fragment}</body></html>\n"
    )


def formatting(channel: str) -> str:
    """How a reply on `channel` is sent: "markdown" (HTML with a text part) or "plain"."""
    facts = CHANNEL_FACTS.get(channel)
    return facts.formatting if facts is not None else "plain"


def attachment_refusal(channel: str) -> str | None:
    """Why a reply on `channel` cannot take files, or None when it can (registry facts)."""
    facts = CHANNEL_FACTS[channel]
    if facts.sends_attachments:
        return None
    if facts.carries_attachments:
        return (
            f"{facts.label} can carry files, but Parity's {facts.label} sender does not send "
            "them yet: send the text, and share the file another way"
        )
    return f"{facts.label} cannot carry files: only text goes out on it"


def files_in_public(channel: str) -> str:
    """Why a public reply on `channel` (a reply tweet, a comment) takes no files: what we
    post in public is text only, by design, whatever the platform allows there; a file an
    agent means for one customer goes to them privately (a DM, a Direct message)."""
    label = CHANNEL_FACTS[channel].label
    return f"a public reply on {label} goes as text only: reply by private message to send files"


def files_in_window(channel: str, mode: str) -> str | None:
    """Why a reply's files cannot go on `channel` in its reply window's `mode` now, or None.
    Outside a window where only an approved template may go (WhatsApp's), the template
    carries the case reference and nothing else: the files would be lost, so the reply is
    refused rather than sent without them."""
    if mode != "template":
        return None
    return (
        f"{CHANNEL_FACTS[channel].reply_window.outside}, and a template cannot carry files: "
        "send them once the customer writes again"
    )


@dataclass(frozen=True)
class Copy:
    """One CC or BCC address of a reply, and whether the case has seen it before."""

    address: str
    known: bool


def clean_address(typed: str) -> str:
    """One address as typed ("Ann <ann@example.org>" or "ann@example.org"), checked and
    lower-cased in its domain, or ComposeRefused saying what is wrong with it."""
    value = typed.strip()
    if not value or len(value) > MAX_ADDRESS * 2 or any(c in value for c in "\r\n\x00"):
        raise ComposeRefused(f"not an address: {typed[:80]!r}")
    _, addr = parseaddr(value)
    local, at, domain = addr.rpartition("@")
    if not at or not local or "." not in domain or len(addr) > MAX_ADDRESS:
        raise ComposeRefused(f"not an address: {typed[:80]!r}")
    try:
        Address(addr_spec=addr)  # what a header can carry, as the relay will build it
    except Exception as exc:  # the email package raises several types for a bad addr-spec
        raise ComposeRefused(f"not an address: {typed[:80]!r}") from exc
    return f"{local}@{domain.lower()}"


def copies(
    cc: Sequence[str], bcc: Sequence[str], known: Iterable[str], recipient: str
) -> tuple[list[Copy], list[Copy]]:
    """The CC and BCC lists of a reply: each address checked, once across both lists (a CC
    wins over a BCC), never the recipient itself, each marked known when the case's
    messages came from or named it. Raises ComposeRefused for a bad address or too many."""
    seen = {recipient.strip().lower()}
    folded_known = {k.strip().lower() for k in known}
    out: tuple[list[Copy], list[Copy]] = ([], [])
    for target, typed in ((out[0], cc), (out[1], bcc)):
        for raw in typed:
            address = clean_address(raw)
            if address.lower() in seen:
                continue
            seen.add(address.lower())
            target.append(Copy(address, address.lower() in folded_known))
    if len(out[0]) + len(out[1]) > MAX_COPIES:
        raise ComposeRefused(f"at most {MAX_COPIES} copies (CC and BCC) per reply")
    return out


# --- attachments -----------------------------------------------------------------------------


def check_files(channel: str, sizes: Sequence[int], max_count: int, max_bytes: int) -> None:
    """Refuse files a reply on `channel` cannot carry, or more than the settings allow."""
    if not sizes:
        return
    refusal = attachment_refusal(channel)
    if refusal is not None:
        raise ComposeRefused(refusal)
    if len(sizes) > max_count:
        raise ComposeRefused(f"at most {max_count} files per reply")
    if sum(sizes) > max_bytes:
        raise ComposeRefused(
            f"the files come to {sum(sizes)} bytes; a reply takes at most {max_bytes}"
        )


# --- canned replies --------------------------------------------------------------------------

PLACEHOLDERS = ("contact.name", "case.reference", "agent.name", "eta")
_PLACEHOLDER = re.compile(r"\{([a-z]+(?:\.[a-z]+)?)\}")


def unknown_placeholders(body: str) -> list[str]:
    """The {names} in a canned reply that are not placeholders we fill (a typo, mostly)."""
    return sorted({m for m in _PLACEHOLDER.findall(body) if m not in PLACEHOLDERS})


def fill(body: str, values: Mapping[str, str]) -> str:
    """A canned reply's text with its placeholders filled in. One pass, so a value that
    itself looks like a placeholder (a customer named "{agent.name}") stays as it is; an
    unknown {name} stays for the agent to see and edit."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), body)


@dataclass(frozen=True)
class LengthCheck:
    """How a text fits a channel: within its limit or not, and in how many parts."""

    channel: str
    length: int
    limit: int
    parts: int
    fits: bool
    note: str


def check_length(channel: str, text: str, *, public: bool | None = None) -> LengthCheck:
    """A text against `channel`'s limits (registry facts), and its parts where it is split.
    `public`: whether it goes as a public post (its limit) or privately; None, not known
    yet (a canned reply): the strictest limit a reply there may meet."""
    facts = CHANNEL_FACTS[channel]
    if public is None:
        limit = min(facts.max_text, facts.max_public_text)
    else:
        limit = facts.max_public_text if public else facts.max_text
    length = len(text)
    parts = 1
    segment = facts.segment_text
    if segment and any(ord(c) > 127 for c in text):
        # Outside GSM-7 an SMS is UCS-2: 70 characters a part. The few accented letters GSM-7
        # has count as UCS-2 here too, which over-counts parts, never under-counts them.
        segment = segment * 7 // 16
    if segment and length > segment:
        # Concatenated SMS carry a header in each part: 153 characters each, not 160 (67 of
        # 70 in UCS-2).
        per = segment - (7 if segment > 100 else 3)
        parts = -(-length // per)
    fits = length <= limit
    if not fits:
        note = f"{length} characters: {facts.label} takes at most {limit}"
    elif parts > 1:
        note = f"{length} characters: sent as {parts} {facts.label} parts"
    else:
        note = f"{length} of {limit} characters"
    return LengthCheck(channel, length, limit, parts, fits, note)
