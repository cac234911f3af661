"""What a tag and a custom field look like: small pure rules shared by the settings (rules
that tag), the store (inbox.tags) and the API, so all three compare the same strings."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

MAX_TAG = 64
MAX_TAGS_PER_CASE = 50
MAX_FIELD_NAME = 64
MAX_FIELD_VALUE = 512
MAX_FIELDS_PER_CASE = 50
_TAG_JUNK = re.compile(r"[^\w]+")
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class BadTag(ValueError):
    pass


def normalize_tag(raw: str) -> str:
    """A tag as stored and compared: NFKC, lower-case, runs of anything but letters and
    digits turned into one hyphen. "VIP customer" and "vip-customer" are one tag."""
    folded = unicodedata.normalize("NFKC", raw).strip().lower()
    tag = _TAG_JUNK.sub("-", folded).replace("_", "-").strip("-")
    tag = re.sub("-{2,}", "-", tag)
    if not tag:
        raise BadTag(f"{raw!r} has no letters or digits to make a tag of")
    if len(tag) > MAX_TAG:
        raise BadTag(f"a tag has at most {MAX_TAG} characters")
    return tag


def normalize_tags(raw: Iterable[str]) -> list[str]:
    """Each tag normalized, duplicates dropped, first-seen order kept."""
    return list(dict.fromkeys(normalize_tag(t) for t in raw))


def normalize_field(name: str, value: str | None) -> tuple[str, str | None]:
    """(name, value) as stored: the name a lower-case identifier, the value one trimmed line
    (None or empty clears the field). Control characters are refused, not stripped: a value
    an agent did not see is not one they chose."""
    key = name.strip().lower()
    if not _FIELD_NAME.match(key):
        raise BadTag("a field name is a letter then letters, digits or _ (at most 64)")
    if value is None:
        return key, None
    text = unicodedata.normalize("NFKC", value).strip()
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        raise BadTag("a field value is one line of visible text")
    if len(text) > MAX_FIELD_VALUE:
        raise BadTag(f"a field value has at most {MAX_FIELD_VALUE} characters")
    return key, text or None


def labelling_rules(rules: Iterable[Any], haystack: str) -> list[Any]:
    """The content rules that tag or set fields and whose pattern matches `haystack`, in
    the settings' order (a field two rules set keeps the first rule's value)."""
    return [
        rule
        for rule in rules
        if (rule.tags or rule.fields) and re.search(rule.pattern, haystack) is not None
    ]
