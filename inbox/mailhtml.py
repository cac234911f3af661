"""Stranger-written HTML in linear time: a tokenizer, the depth cap, the sanitized view, text.

Why a tokenizer of our own. Every parser that runs on untrusted mail must be linear in its
input, and each candidate was measured on the two known shapes of attack (CPU seconds on
this project's 2-core machine, Python 3.11):

    input                                  html.parser  lexbor (selectolax)  libxml2 (lxml)
    "<a<a‹a" repeated, 20/40/80/160 KB     0.9/2.8/13.3/~50  0.001 each      0.001 each
    100k nested <div>                      linear       21.9                 0.08 (*)
    100k <div> then 100k stray </x>        linear (**)  20.5                 24.2

(*) only with a SAX target; building lxml's tree silently drops everything below depth 255
(2,047 with huge_tree), text included. (**) the old depth cap's own end-tag search was
quadratic there. nh3 (html5ever) takes 158 s on 100k nested divs. So every tree builder
available is quadratic in nesting, because tree construction looks up the stack of open
elements on each tag; the nesting must be capped before any tree builder runs, and capping
needs only tokens. None of the libraries exposes its tokenizer alone, so `tokens` is a small
HTML5-style tokenizer written so that every byte is looked at a bounded number of times:
each construct is found with one forward `str.find` or an anchored regex with possessive
quantifiers (no backtracking), and a construct whose end is missing runs to the end of the
input, as in HTML5, instead of being retried from the next character (the retry is what
makes html.parser quadratic, CVE-2025-6069). It is not the security boundary: the capped
markup is re-serialized from our tokens (text escaped, attributes quoted) and then
sanitized by nh3, which parses it as a browser does.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Final

import nh3

MAX_DEPTH = 64
# Elements that never hold content: they open nothing, so they never count toward depth.
VOID = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "param", "source", "track", "wbr",
    }
)  # fmt: skip
# Elements whose content is text up to their own end tag (HTML5 raw text and RCDATA).
_RAWTEXT = frozenset({"script", "style", "xmp", "iframe", "noembed", "noframes", "noscript"})
_RCDATA = frozenset({"textarea", "title"})

_TAG_NAME = re.compile(r"[A-Za-z][^\t\n\f\r />]*+")
_BETWEEN = re.compile(r"[\t\n\f\r /]*+")
_ATTR_NAME = re.compile(r"[^\t\n\f\r />][^\t\n\f\r />=]*+")
_EQUALS = re.compile(r"[\t\n\f\r ]*+=[\t\n\f\r ]*+")
_UNQUOTED = re.compile(r"[^\t\n\f\r >]*+")
_COMMENT_END = re.compile(r"--!?>")

# (kind, name, attributes, data): kind is "start", "end" or "text"; text carries `data`.
Token = tuple[str, str, dict[str, str], str]
_NO_ATTRS: Final[dict[str, str]] = {}


def tokens(markup: str) -> Iterator[Token]:
    """Start tags, end tags and text of `markup`, entities decoded. Comments are dropped."""
    n = len(markup)
    pos = 0
    closers: dict[str, re.Pattern[str]] = {}
    while pos < n:
        lt = markup.find("<", pos)
        if lt < 0:
            yield ("text", "", _NO_ATTRS, html.unescape(markup[pos:]))
            return
        if lt > pos:
            yield ("text", "", _NO_ATTRS, html.unescape(markup[pos:lt]))
        pos = lt
        nxt = markup[pos + 1 : pos + 2]
        if nxt == "!" or nxt == "?" or (nxt == "/" and not _TAG_NAME.match(markup, pos + 2)):
            if nxt == "/" and markup[pos + 2 : pos + 3] == ">":
                pos += 3  # "</>" is nothing at all
                continue
            if nxt == "/" and pos + 2 >= n:
                yield ("text", "", _NO_ATTRS, "</")
                return
            if markup.startswith("<!--", pos):
                comment_end = _COMMENT_END.search(markup, pos + 2)
                if comment_end is None:
                    return  # a comment left open runs to the end of the input
                pos = comment_end.end()
                continue
            close = markup.find(">", pos + 2)  # doctype, CDATA, <?...>: a bogus comment
            if close < 0:
                return
            pos = close + 1
            continue
        closing = nxt == "/"
        name_match = _TAG_NAME.match(markup, pos + (2 if closing else 1))
        if name_match is None:
            yield ("text", "", _NO_ATTRS, "<")  # a lone "<" is text
            pos += 1
            continue
        name = name_match.group().lower()
        attrs, pos = _attributes(markup, name_match.end())
        if pos < 0:
            return  # a tag cut off by the end of the input is dropped, as in HTML5
        if closing:
            yield ("end", name, _NO_ATTRS, "")
            continue
        yield ("start", name, attrs, "")
        if name in _RAWTEXT or name in _RCDATA:
            closer = closers.get(name)
            if closer is None:
                closer = closers[name] = re.compile(
                    rf"</{re.escape(name)}[\t\n\f\r />]", re.IGNORECASE
                )
            found = closer.search(markup, pos)
            end = found.start() if found else n
            body = markup[pos:end]
            if body:
                yield ("text", "", _NO_ATTRS, html.unescape(body) if name in _RCDATA else body)
            pos = end
        elif name == "plaintext":
            if pos < n:
                yield ("text", "", _NO_ATTRS, markup[pos:])
            return


def _attributes(markup: str, pos: int) -> tuple[dict[str, str], int]:
    """The attributes of a tag from `pos`, and where the tag ends (-1: it never does).

    Each turn of the loop consumes at least one character, and nothing is read twice.
    """
    n = len(markup)
    attrs: dict[str, str] = {}
    while True:
        pos = _BETWEEN.match(markup, pos).end()  # type: ignore[union-attr]
        if pos >= n:
            return attrs, -1
        if markup[pos] == ">":
            return attrs, pos + 1
        name_match = _ATTR_NAME.match(markup, pos)
        assert name_match is not None  # the character here is none of _BETWEEN's nor ">"
        name = name_match.group().lower()
        pos = name_match.end()
        value = ""
        equals = _EQUALS.match(markup, pos)
        if equals is not None:
            pos = equals.end()
            if pos >= n:
                return attrs, -1
            quote = markup[pos]
            if quote in "\"'":
                end = markup.find(quote, pos + 1)
                if end < 0:
                    return attrs, -1
                value = markup[pos + 1 : end]
                pos = end + 1
            else:
                unquoted = _UNQUOTED.match(markup, pos)
                assert unquoted is not None  # a possessive star always matches
                value = unquoted.group()
                pos = unquoted.end()
        # HTML5 keeps the first of two attributes with one name.
        attrs.setdefault(name, html.unescape(value))


# --- the depth cap ---------------------------------------------------------------------------

# Remote images are parked in this attribute in the stored view, so the view never loads
# a tracking pixel until an agent asks (`with_images` moves them back into `src`).
PARKED = "data-parity-src"
PARKED_SET = "data-parity-srcset"
_PARKED_ATTRS = {"src": PARKED, "srcset": PARKED_SET}


def _is_web(value: str) -> bool:
    return value.strip().lower().startswith(("http:", "https:", "//"))


def _tag(name: str, attrs: dict[str, str], park_images: bool) -> str:
    rendered: list[str] = []
    for attr, value in attrs.items():
        if attr in (PARKED, PARKED_SET):
            continue  # only we write these
        if park_images and name == "img" and attr in _PARKED_ATTRS:
            if _is_web(value):
                attr = _PARKED_ATTRS[attr]
            elif not value.strip().lower().startswith(("data:", "cid:")):
                continue  # neither remote nor inline: nothing an agent could want shown
        if not _ATTR_NAME.fullmatch(attr) or "=" in attr or '"' in attr or "'" in attr:
            continue  # a name nh3 would drop anyway; it must not break our quoting
        rendered.append(f' {attr}="{html.escape(value, quote=True)}"')
    return f"<{name}{''.join(rendered)}>"


def _capped(markup: str, limit: int, park_images: bool = False) -> str:
    out: list[str] = []
    open_: list[tuple[str, bool]] = []  # (tag, emitted)
    depth_of: dict[str, int] = {}  # how many of each tag are open: a stray end tag is O(1)
    for kind, name, attrs, data in tokens(markup):
        if kind == "text":
            out.append(html.escape(data, quote=False))
        elif kind == "start":
            if name in VOID:
                out.append(_tag(name, attrs, park_images))
                continue
            emitted = len(open_) < limit
            open_.append((name, emitted))
            depth_of[name] = depth_of.get(name, 0) + 1
            if emitted:
                out.append(_tag(name, attrs, park_images))
        elif depth_of.get(name):
            # Close up to the matching open tag, as a browser would: every element popped
            # here was pushed once, so all the closing of a document costs linear time.
            while True:
                tag, emitted = open_.pop()
                depth_of[tag] -= 1
                if emitted:
                    out.append(f"</{tag}>")
                if tag == name:
                    break
        # else: a stray end tag is dropped
    while open_:
        tag, emitted = open_.pop()
        if emitted:
            out.append(f"</{tag}>")
    return "".join(out)


def cap_depth(markup: str, limit: int = MAX_DEPTH) -> str:
    """`markup` with no element nested deeper than `limit`; text is kept.

    Runs before the sanitizer because nh3 (html5ever's tree builder) is quadratic in nesting
    depth: 100k nested divs take 158 s. Browsers stop nesting at 512 open elements, so
    nothing a reader could see is lost by flattening below a smaller cap.
    """
    return _capped(markup, limit)


# --- the stored view -------------------------------------------------------------------------

_VIEW_ATTRIBUTES: dict[str, set[str]] = {
    **{tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()},
}
_VIEW_ATTRIBUTES["img"] = {*_VIEW_ATTRIBUTES.get("img", set()), PARKED, PARKED_SET}


def _keep_web_parked(tag: str, attribute: str, value: str) -> str | None:
    # nh3 checks URL schemes of src and href; a parked value is ours to check.
    if attribute in (PARKED, PARKED_SET) and not _is_web(value):
        return None
    return value


def view(markup: str) -> str:
    """The sanitized HTML kept with a message: depth-capped, nh3-cleaned, remote images parked.

    Computed once when the message is filed (in the parse worker, under its time budget),
    so showing a mail never parses its raw HTML again.
    """
    return nh3.clean(
        _capped(markup, MAX_DEPTH, park_images=True),
        attributes=_VIEW_ATTRIBUTES,
        attribute_filter=_keep_web_parked,
        url_schemes={"http", "https", "mailto", "data", "cid"},
        link_rel="noopener noreferrer nofollow",
    )


_PARKED_VALUE = re.compile(rf' (?:{PARKED}|{PARKED_SET})="[^"]*+"')


def with_images(stored: str, show_images: bool) -> tuple[str, int]:
    """A stored view as served, and how many remote images it holds back.

    Without `show_images` the parked addresses are removed, so the frame does not even name
    the tracker; with it they go back into `src`. Both are one forward pass over the view:
    nh3 escapes `"` in every attribute value, so ` data-parity-src="` can only be an
    attribute we wrote or (harmlessly) text, where the change alters a word, never markup.
    """
    if show_images:
        shown = stored.replace(f' {PARKED}="', ' src="').replace(f' {PARKED_SET}="', ' srcset="')
        return shown, 0
    hidden, parked = _PARKED_VALUE.subn("", stored)
    return hidden, stored.count(f' {PARKED}="') if parked else 0


def sanitize(markup: str, *, show_images: bool = False) -> tuple[str, int]:
    """Safe HTML for the mail frame, and how many remote images were blocked.

    nh3 removes script, event handlers and javascript: URLs. Remote images are tracking
    pixels until the agent asks for them, so their src is parked unless `show_images`.
    """
    return with_images(view(markup), show_images)


# --- text ------------------------------------------------------------------------------------

_SKIP = frozenset({"script", "style", "head", "title"})
_BREAK = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})


def html_to_text(markup: str) -> str:
    """Readable text of an HTML body, for search and for mail that has no text part."""
    out: list[str] = []
    skipping = 0
    for kind, name, _attrs, data in tokens(markup):
        if kind == "text":
            if not skipping:
                out.append(data)
        elif name in _SKIP:
            if kind == "start" and name not in VOID:
                skipping += 1
            elif kind == "end" and skipping:
                skipping -= 1
        elif name in _BREAK:
            out.append("\n")
    lines = [" ".join(line.split()) for line in "".join(out).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
