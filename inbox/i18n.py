"""The languages people are answered in: which ones, how one is chosen, and their catalogues.

Every sentence Parity shows or sends to a person (the contact form, the status page, the
default acknowledgements of every channel, the expected-time words) is an English gettext
message id; the catalogues in inbox/locale/<lang>/LC_MESSAGES/parity.po translate them.
The .po files are the only source: they are compiled in memory the first time a language
is used (Babel's reader and .mo writer), so a clean clone needs no build step and a
translator's edit is live at the next start. A compiled parity.mo beside a .po, as
`pybabel compile` writes it, is used instead when it is newer (docs/development/languages.md).

Operator-written texts are never translated: the operator gives each language's text
(normalizer/acks.py, `[acknowledgements.<channel>.<lang>]`).
"""

from __future__ import annotations

import gettext
import io
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

# The languages with a catalogue, English (the message ids) first.
LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "de", "pt")
DEFAULT = "en"
# How the language selector names each language: in itself, so a reader finds their own.
LANGUAGE_NAMES: Mapping[str, str] = MappingProxyType(
    {"en": "English", "es": "Español", "fr": "Français", "de": "Deutsch", "pt": "Português"}
)
DOMAIN = "parity"

# An Accept-Language header is hostile input like any other: only this much is read.
MAX_HEADER = 1024
MAX_RANGES = 32
_RANGE = re.compile(r"^(?:\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*)$")
_QVALUE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")


def N_(message: str) -> str:
    """Marks `message` for the catalogues without translating it (it is translated later,
    in the reader's language)."""
    return message


def supported(tag: str | None) -> str | None:
    """The catalogue language of a language tag ("pt-BR" -> "pt"), or None."""
    if not tag:
        return None
    primary = tag.strip().split("-", 1)[0].split("_", 1)[0].lower()
    return primary if primary in LANGUAGES else None


def parse_accept_language(header: str | None) -> list[tuple[str, float]]:
    """The language ranges of an Accept-Language header (RFC 9110 12.5.4), most wanted
    first, ties in the order given. Malformed ranges and q-values are dropped, not guessed
    at; a range with q=0 is kept (it says "not this one") at the end."""
    if not header:
        return []
    found: list[tuple[str, float, int]] = []
    for index, item in enumerate(header[:MAX_HEADER].split(",")[:MAX_RANGES]):
        parts = [p.strip() for p in item.split(";")]
        tag = parts[0]
        if not tag or not _RANGE.match(tag):
            continue
        q = 1.0
        bad = False
        for param in parts[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() != "q":
                continue  # other parameters are not defined; ignore them
            value = value.strip()
            if not _QVALUE.match(value):
                bad = True
                break
            q = float(value)
        if not bad:
            found.append((tag.lower(), q, index))
    found.sort(key=lambda f: (-f[1], f[2]))
    return [(tag, q) for tag, q, _ in found]


def from_accept_language(header: str | None) -> str | None:
    """The catalogue language the header wants most, or None when it wants none of ours.

    "*" stands for any language not named: English, unless English was refused (q=0)."""
    ranked = parse_accept_language(header)
    refused = {supported(tag) for tag, q in ranked if q == 0} - {None}
    for tag, q in ranked:
        if q == 0:
            break
        if tag == "*":
            rest = [lang for lang in LANGUAGES if lang not in refused]
            return rest[0] if rest else None
        lang = supported(tag)
        if lang is not None and lang not in refused:
            return lang
    return None


def choose(explicit: str | None, accept_language: str | None, known: str | None = None) -> str:
    """The language of a page: the one the reader chose (a form's `lang`, `?lang=`), else
    their browser's Accept-Language, else what we know of them (the case's), else English."""
    return (
        supported(explicit) or from_accept_language(accept_language) or supported(known) or DEFAULT
    )


# --- catalogues -------------------------------------------------------------------------------


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The catalogue of `lang` (English and unknown languages: the message ids as they are)."""
    if lang not in LANGUAGES or lang == DEFAULT:
        return gettext.NullTranslations()
    folder = resources.files("inbox") / "locale" / lang / "LC_MESSAGES"
    po, mo = folder / f"{DOMAIN}.po", folder / f"{DOMAIN}.mo"
    if mo.is_file():
        return gettext.GNUTranslations(io.BytesIO(mo.read_bytes()))
    return gettext.GNUTranslations(io.BytesIO(compile_po(po.read_bytes(), lang)))


def compile_po(data: bytes, lang: str) -> bytes:
    """A .po catalogue compiled to .mo bytes, as `pybabel compile` would (fuzzy entries are
    left out: a translation a translator has not confirmed is not shown)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    catalog = read_po(io.BytesIO(data), locale=lang, domain=DOMAIN)
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def gettext_in(lang: str, message: str) -> str:
    if not message:
        return message  # "" is the catalogue's header in gettext, never a sentence
    return translations(supported(lang) or DEFAULT).gettext(message)


def ngettext_in(lang: str, singular: str, plural: str, n: int) -> str:
    return translations(supported(lang) or DEFAULT).ngettext(singular, plural, n)


def default_or_own(lang: str, value: str, default: str) -> str:
    """An operator-configurable text in `lang`: the translation of our default when the
    operator kept the default, and the operator's own text, untouched, when they wrote one."""
    return gettext_in(lang, default) if value == default else value


# The language of the page being rendered, set by the handler that serves it: the form's
# sentences (connectors/webform/text.py) are looked up in it without each caller passing it.
current: ContextVar[str] = ContextVar("parity_language", default=DEFAULT)


def format_when(at: datetime, lang: str, pattern: str = "EEEE d MMMM, HH:mm") -> str:
    """A local date and time in words of `lang` ("Monday 23 November, 13:00", "lunes 23
    de noviembre, 13:00"); `pattern` is a CLDR pattern, its words are the locale's."""
    from babel.dates import format_datetime

    return str(format_datetime(at, pattern, tzinfo=at.tzinfo, locale=supported(lang) or DEFAULT))


def catalogue_ids(lang: str) -> Iterator[str]:
    """The message ids the catalogue of `lang` translates (for the completeness test)."""
    from babel.messages.pofile import read_po

    folder = resources.files("inbox") / "locale" / lang / "LC_MESSAGES"
    catalog = read_po(io.BytesIO((folder / f"{DOMAIN}.po").read_bytes()), locale=lang)
    for entry in catalog:
        if entry.id and entry.string and not entry.fuzzy:
            yield entry.id if isinstance(entry.id, str) else entry.id[0]


def extract_registry(
    fileobj: Any, keywords: Any, comment_tags: Any, options: Any
) -> Iterator[tuple[int, str, str, list[str]]]:
    """A pybabel extractor for inbox/channels.py: the default acknowledgements of the
    channel registry are message ids, though the registry (plain data) calls no gettext."""
    from inbox.channels import CHANNEL_FACTS

    for facts in CHANNEL_FACTS.values():
        if facts.ack is None:
            continue
        for text in (facts.ack.subject, facts.ack.body, facts.ack.follow_up):
            if text:
                yield 0, "gettext", text, [f"the default acknowledgement of {facts.name}"]
