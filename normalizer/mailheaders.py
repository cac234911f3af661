"""A header's text as `email.policy.default` gives it, without the header registry, where cheap.

The registry builds a class and a full token tree for every header it is asked for (about
100 to 250 us each, most of a plain mail's parse), while the normalizer needs only the text:
a Subject, a Date, a Message-ID, the addresses of To and Cc. For the common shapes of these
headers the registry's text is a simple function of the raw value, and these functions
compute it. Any other shape (an encoded word, a comment, a quoted name, a group, an obsolete
form) returns None, and the caller asks the registry as before: the result is the same
either way, only cheaper when the value is plain. The tests check every function against
the registry itself, on tables of realistic values and on generated ones.

Pure: a header name and its unfolded value (line breaks removed, as the policy removes
them before its header factory) in, text out.
"""

from __future__ import annotations

import re
from email.headerregistry import AddressHeader, HeaderRegistry, UnstructuredHeader
from email.utils import format_datetime, parsedate_to_datetime

# Header names whose registry class is unstructured text, and those it parses otherwise;
# a name the registry does not know is unstructured (HeaderRegistry's default class).
_REGISTRY = HeaderRegistry().registry
_STRUCTURED = frozenset(
    name for name, kind in _REGISTRY.items() if not issubclass(kind, UnstructuredHeader)
)
_DATE_HEADERS = frozenset({"date", "resent-date", "orig-date"})

# RFC 5322 atext and dot-atom-text; ASCII only (non-ASCII bytes arrive as surrogate escapes,
# which the registry handles with defects and replacement characters: not a plain shape).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_ADDR_SPEC = rf"{_DOT_ATOM}@{_DOT_ATOM}"
_MSG_ID = re.compile(rf"<{_ADDR_SPEC}>")
# One mailbox of an address list: `local@domain`, `<local@domain>`, or a display name of
# plain words (atext, separated by spaces or tabs) before `<local@domain>`.
_BARE = re.compile(_ADDR_SPEC)
_NAMED = re.compile(rf"(?:(?P<name>{_ATEXT}+(?:[ \t]+{_ATEXT}+)*)[ \t]*)?<(?P<spec>{_ADDR_SPEC})>")
_BLANKS = re.compile(r"[ \t]+")


def sanitized(value: str) -> str:
    """`value` as a registry header's text holds it: raw 8-bit bytes (surrogate escapes)
    decoded as UTF-8, invalid ones as U+FFFD (the library's `utils._sanitize`)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def header_text(name: str, value: str) -> str | None:
    """str(policy.default.header_factory(name, value)), or None when not a plain shape.

    May raise what the registry's own parse raises for the same value (a date whose
    numbers overflow); callers treat that as they treat the registry's error.
    """
    lowered = name.lower()
    if lowered in _DATE_HEADERS:
        return date_text(value)
    if "=?" in value:
        # An encoded word (RFC 2047): the registry decodes it, in text, names, even atoms.
        return None
    if lowered not in _STRUCTURED:
        return sanitized(value)  # unstructured text is kept as written
    if lowered == "message-id":
        return value if _MSG_ID.fullmatch(value) else None
    if issubclass(_REGISTRY[lowered], AddressHeader):
        mailboxes = plain_mailboxes(value)
        if mailboxes is None:
            return None
        return ", ".join(f"{shown} <{spec}>" if shown else spec for shown, spec in mailboxes)
    return None


def date_text(value: str) -> str:
    """A Date header's text: the date written the library's way, or the value as written
    when it is not a date (the registry's DateHeader)."""
    if not value:
        return ""
    try:
        parsed = parsedate_to_datetime(value)
    except ValueError:
        return sanitized(value)
    return format_datetime(parsed)


def plain_mailboxes(value: str) -> list[tuple[str, str]] | None:
    """(display name, addr-spec) of each mailbox of a plain address list, else None.

    Plain: comma-separated mailboxes of the `_BARE` and `_NAMED` shapes, nothing else. The display
    name's runs of blanks become one space, as the registry writes it.
    """
    found = []
    for item in value.split(","):
        item = item.strip(" \t")
        if _BARE.fullmatch(item):
            found.append(("", item))
            continue
        match = _NAMED.fullmatch(item)
        if match is None:
            return None
        found.append((_BLANKS.sub(" ", match["name"] or ""), match["spec"]))
    return found
