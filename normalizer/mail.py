"""Email: raw RFC 5322 bytes to an InboundMessage, with caps checked before the parser runs.

Python's email package is recursive and has no limits of its own: a MIME tree 5,000 deep
raises RecursionError, 100k empty parts take 23 s, and a To: header with 10k addresses
takes 12 s. `check_caps` walks the raw bytes once, iteratively, and refuses such input
before it can stall a worker; while parsing, the parser's own message class holds the same
caps, so a mail the walk misread still cannot get far.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import AddressHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import Policy
from email.policy import default as policy_default
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, cast

from inbox.channels import IDENTITY_KIND_OF, MAIL_CHANNEL
from inbox.mailhtml import html_to_text as html_to_text
from normalizer.dsn import delivery_report
from normalizer.mailheaders import header_text, plain_mailboxes
from normalizer.message import (
    AttachmentPart,
    InboundMessage,
    ParseError,
    Sender,
    ThreadSignals,
)

# Our own outbound mail carries this header, so an acknowledgement that bounces back or is
# auto-forwarded is recognised and never acknowledged in turn.
OWN_HEADER = "X-Parity-Case"


@dataclass(frozen=True)
class Caps:
    max_bytes: int = 50 * 1024 * 1024
    max_depth: int = 100
    max_parts: int = 1000
    max_header_bytes: int = 256 * 1024
    max_addresses: int = 1000
    # MIME parameters (Content-Type, Content-Disposition): the library parses each at about
    # 7 us a byte and every parse of a part repeats it; 250 KB of parameters took 45 s.
    max_header_params: int = 64
    max_param_header_bytes: int = 16 * 1024


# The parser's own test for a header line (email.feedparser.headerRE): any other line,
# blank or not, ends a header block.
_HEADER_LINE = re.compile(rb"^(From |[\x21-\x39\x3b-\x7e]*:|[\t ])")
# Every header the policy parses as addresses, Resent-* included: each costs parse time.
_ADDRESS_HEADERS = frozenset(
    name.encode()
    for name, kind in HeaderRegistry().registry.items()
    if issubclass(kind, AddressHeader)
)
# The headers whose value is a list of parameters the library parses (RFC 2045, 2183, 2231).
_PARAM_HEADERS = {b"content-type:": "Content-Type", b"content-disposition:": "Content-Disposition"}
# A boundary the raw bytes can never contain (the parser cannot match a non-ASCII one).
_NEVER = b"\x00never a boundary\x00"


@dataclass
class _Container:
    """A multipart (with its boundary) or a message/* wrapper, open at this point of the walk."""

    boundary: bytes | None
    digest: bool = False


def check_caps(raw: bytes, caps: Caps) -> None:
    """Raise ParseError if `raw` exceeds a cap. One pass over the lines, no recursion.

    The walk follows the standard library parser's own reading of the bytes, so a mail
    cannot hide parts or headers from it: lines end at CR, LF or CRLF; a header block ends
    at the first line that is not a header; the boundary is read by the library's parameter
    parser (RFC 2231 forms included); a boundary of any open multipart ends a part, even
    inside its headers; and the body of a message/* part is another header block. Where the
    walk and the parser could still disagree, the walk counts more, never less.
    """
    if len(raw) > caps.max_bytes:
        raise ParseError(f"message is {len(raw)} bytes, over the cap of {caps.max_bytes}")
    open_: list[_Container] = []
    parts = 1
    in_headers = True
    delivery_status = False  # inside message/delivery-status: blocks of headers
    block: list[bytes] = []
    block_bytes = 0
    addresses = 0
    counting = False  # the current (possibly folded) header is an address header
    content_type_bytes = 0
    for line in raw.splitlines():
        if open_ and line.startswith(b"--"):
            marker = line.rstrip(b" \t")
            matched = _match_boundary(open_, marker)
            if matched is not None:
                level, closing = matched
                del open_[level + (0 if closing else 1) :]
                block, block_bytes, counting, delivery_status = [], 0, False, False
                in_headers = not closing
                if not closing:
                    parts += 1
                    if parts > caps.max_parts:
                        raise ParseError(f"more than {caps.max_parts} MIME parts")
                continue
        if not in_headers:
            # In message/delivery-status a blank line starts the next block of headers.
            in_headers = delivery_status and not line
            continue
        if line and _HEADER_LINE.match(line):
            block_bytes += len(line) + 2
            if block_bytes > caps.max_header_bytes:
                raise ParseError(f"a header block is over {caps.max_header_bytes} bytes")
            if line[:1] in (b" ", b"\t"):
                if block:
                    block[-1] += line
            else:
                block.append(line)
                counting = line.split(b":", 1)[0].lower() in _ADDRESS_HEADERS
            if counting:
                addresses += line.count(b"@")
                if addresses > caps.max_addresses:
                    raise ParseError(f"more than {caps.max_addresses} addresses in headers")
            continue
        # The header block ends here. A blank line is the separator; any other line
        # already belongs to the body, and so cannot start a nested message's headers.
        _check_params(block, caps)
        ctype, boundary, read = _content_type(block, open_)
        block, block_bytes, counting = [], 0, False
        # Content-Type is parsed for every part, by us and again by the parser, at about
        # 6 us a byte for a long one: its total is capped, not only each block.
        content_type_bytes += read
        if content_type_bytes > caps.max_header_bytes:
            raise ParseError(f"Content-Type headers over {caps.max_header_bytes} bytes in all")
        if delivery_status:
            parts += 1  # each block of a delivery report is a part of its own
        elif boundary is not None:
            open_.append(_Container(boundary, digest=ctype == "multipart/digest"))
        elif ctype == "message/delivery-status":
            delivery_status = True
            parts += 1
        elif ctype.startswith("message/"):
            # What follows is a whole message: its own header block, its own structure.
            open_.append(_Container(None))
            parts += 1
        in_headers = (delivery_status or ctype.startswith("message/")) and not line
        if len(open_) > caps.max_depth:
            raise ParseError(f"MIME nesting deeper than {caps.max_depth}")
        if parts > caps.max_parts:
            raise ParseError(f"more than {caps.max_parts} MIME parts")


def _check_params(block: list[bytes], caps: Caps) -> None:
    """Refuse a parameter header too long or with too many parameters, before it is parsed.

    Every `;` counts, quoted or not: the count can only be higher than the parser's.
    """
    for line in block:
        lowered = line[:20].lower()
        for name, header in _PARAM_HEADERS.items():
            if lowered.startswith(name):
                if len(line) > caps.max_param_header_bytes:
                    raise ParseError(
                        f"a {header} header is {len(line)} bytes,"
                        f" over the cap of {caps.max_param_header_bytes}"
                    )
                if line.count(b";") > caps.max_header_params:
                    raise ParseError(
                        f"a {header} header has more than {caps.max_header_params} parameters"
                    )


def _match_boundary(open_: list[_Container], marker: bytes) -> tuple[int, bool] | None:
    """(level, closing) of the innermost open multipart this line delimits, if any."""
    for level in range(len(open_) - 1, -1, -1):
        boundary = open_[level].boundary
        if boundary is None:
            continue
        if marker == b"--" + boundary:
            return level, False
        if marker == b"--" + boundary + b"--":
            return level, True
    return None


def _content_type(block: list[bytes], open_: list[_Container]) -> tuple[str, bytes | None, int]:
    """The block's content type, a multipart's boundary, and the bytes read to find them.

    The header is read by the same policy and methods the parser uses, so comments, encoded
    words and RFC 2231 parameters mean here exactly what they will mean to the parser.
    """
    for line in block:
        if line[:13].lower() == b"content-type:":
            value = line[13:].decode("ascii", "surrogateescape").lstrip(" \t")
            # The parser's own policy: its cache then holds the parse this one made.
            header = EmailMessage(policy=_POLICY)
            header.set_raw("Content-Type", value)
            ctype = header.get_content_type()
            boundary = (
                header.get_boundary() if header.get_content_maintype() == "multipart" else None
            )
            try:
                found = boundary.encode("ascii", "surrogateescape") if boundary else None
            except UnicodeEncodeError:
                found = _NEVER  # no line of raw bytes can match it: the parser sees no parts
            return ctype, found, len(value)
    # No Content-Type: text/plain, or message/rfc822 inside a multipart/digest.
    if open_ and open_[-1].digest:
        return "message/rfc822", None, 0
    return "text/plain", None, 0


class _CappedMessage(EmailMessage):
    """The parser's message class, counting parts and nesting as the parser builds them.

    `check_caps` reads the bytes the way the parser does; this is the backstop that holds
    even where the two might disagree: the parse stops at the first part over a cap, long
    before the 100k-part or 5,000-level cases could cost anything.
    """

    _caps: Caps
    _budget: list[int]  # [entities so far], shared by every part of one parse
    _nesting = 1

    def attach(self, payload: Any) -> None:
        self._budget[0] += 1
        if self._budget[0] > self._caps.max_parts:
            raise ParseError(f"more than {self._caps.max_parts} MIME parts")
        if self._nesting > self._caps.max_depth:
            raise ParseError(f"MIME nesting deeper than {self._caps.max_depth}")
        if isinstance(payload, _CappedMessage):
            payload._nesting = self._nesting + 1
        super().attach(payload)


def _parse_capped(raw: bytes, caps: Caps) -> EmailMessage:
    budget = [1]

    def factory(policy: Policy = _POLICY) -> EmailMessage:
        msg = _CappedMessage(policy=policy)
        msg._caps, msg._budget = caps, budget
        return msg

    msg = BytesParser(_class=factory, policy=_POLICY).parsebytes(raw)
    addresses = 0
    for part in msg.walk():
        for name, value in part.raw_items():  # raw text: nothing is parsed by counting
            if name.lower().encode("ascii", "replace") in _ADDRESS_HEADERS:
                addresses += str(value).count("@")
    if addresses > caps.max_addresses:
        raise ParseError(f"more than {caps.max_addresses} addresses in headers")
    return msg


# --- parsing -------------------------------------------------------------------------------

_LINESEP = re.compile(r"\r\n|\r|\n")


# The headers the email package fetches again and again while it walks a mail's structure
# (get_content_type, get_filename, get_content_charset, is_multipart); only these are cached.
CACHED_HEADERS = frozenset(
    {"content-type", "content-disposition", "content-transfer-encoding", "mime-version"}
)
# Enough for every structural header of the mail being parsed (they are fetched in a burst)
# and for the common values shared between mails; small, because a parsed header keeps its
# whole token tree and its own class alive (several KiB each).
HEADER_CACHE_SIZE = 256


class _HeaderClasses(HeaderRegistry):
    """policy.default's header registry, making each header class once.

    The library's registry builds a new class (`type(...)`) for every header it parses,
    20 to 50 us each, about a quarter of a plain mail's parse. The classes it builds for
    one name are all alike, so one is kept per name.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        key = name.lower()
        made = self._classes.get(key)
        if made is None:
            made = self._classes[key] = super().__getitem__(key)
        return made


_HEADER_CLASSES = _HeaderClasses()


@functools.lru_cache(maxsize=HEADER_CACHE_SIZE)
def _parsed_header(name: str, value: str) -> Any:
    return _HEADER_CLASSES(name, value)


class _ParsePolicy(policy.EmailPolicy):
    """policy.default, without parsing the same structural header text twice.

    The email package parses a header again on every fetch: finding the body of one mail
    calls `get_content_type` about a dozen times, each a full Content-Type parse. Header
    objects are immutable, so equal (name, text) pairs can share one. Only the structural
    headers are cached: a Message-ID, Date or Subject is unique to its mail and read once or
    twice, and caching those too (4,096 entries, as this once did) kept about 37 MiB of
    parse trees of mails long since stored; the soak bench saw it as RSS growth.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        value = _LINESEP.sub("", value)  # as EmailPolicy does before its header factory
        # Long values are rare and would crowd the cache.
        if name.lower() not in CACHED_HEADERS or len(value) > 2048:
            return self.header_factory(name, value)
        return _parsed_header(name, value)


_POLICY = cast("policy.EmailPolicy[EmailMessage]", _ParsePolicy(header_factory=_HEADER_CLASSES))

_MSGID = re.compile(r"<([^<>\s]+)>")


def message_ids(value: str | None) -> tuple[str, ...]:
    """The ids in an In-Reply-To or References header, in order, without duplicates."""
    if not value:
        return ()
    found = _MSGID.findall(value)
    if not found and value.strip() and " " not in value.strip():
        found = [value.strip()]  # some clients omit the angle brackets
    return tuple(dict.fromkeys(found))


def parse_email(
    raw: bytes,
    *,
    envelope: Mapping[str, Any] | None = None,
    received_at: datetime,
    caps: Caps | None = None,
) -> InboundMessage:
    """Parse one raw email. Raises ParseError for anything that cannot become a message."""
    envelope = envelope or {}
    check_caps(raw, caps or Caps())
    try:
        msg = _parse_capped(raw, caps or Caps())
        return _to_message(msg, envelope, received_at)
    except ParseError:
        raise
    except RecursionError as exc:
        raise ParseError("MIME structure too deep for the parser") from exc
    except Exception as exc:  # the email package raises many types on malformed input
        raise ParseError(f"email parser failed: {type(exc).__name__}: {exc}") from exc


def _to_message(
    msg: EmailMessage, envelope: Mapping[str, Any], received_at: datetime
) -> InboundMessage:
    if not msg.keys():
        raise ParseError("no headers: this is not an email message")
    mail_from = str(envelope.get("mail_from", "")) if "mail_from" in envelope else None
    who = _sender(msg, mail_from)
    address, name = who.address, who.name
    subject = _fold(_header(msg, "subject"))
    sent_at = _date(_header(msg, "date"))
    text, html, body_parts = _bodies(msg)
    attachments = tuple(_attachments(msg, body_parts))
    message_id = (message_ids(_header(msg, "message-id")) or ("",))[0]
    digest = content_hash(
        address, sent_at, _header(msg, "date"), subject, text, [a.data for a in attachments]
    )
    dedup_key = f"email:{message_id}:{digest[:40]}" if message_id else f"email::{digest}"
    recipients = tuple(str(r).lower() for r in envelope.get("rcpt_tos", ()) or ())
    if not recipients:
        recipients = tuple(
            a.lower() for _, a in getaddresses([_header(msg, "to"), _header(msg, "cc")]) if a
        )
    # Only the headers automated_reason reads: the email package parses a header each time
    # it is fetched, and fetching all of them was most of the parse time of a typical mail.
    headers = {name: _header(msg, name) for name in AUTOMATION_HEADERS if name in msg}
    meta: dict[str, Any] = {"message_id": message_id} if message_id else {}
    if who.problem:
        # Why the sender is anonymous, and what the mail claimed, for the agent to judge.
        meta["from_problem"] = {"reason": who.problem, "claimed": who.claimed}
    references = message_ids(_header(msg, "references"))
    try:
        report = delivery_report(msg)
    except Exception as exc:  # a mangled report still files as a message; say why it is bare
        report = None
        meta["delivery_report_error"] = f"{type(exc).__name__}: {exc}"[:200]
    if report is not None:
        meta["delivery_report"] = report.as_meta()
        if report.original_message_id:
            # The bounce threads like a reply to what bounced: our Message-ID carries the
            # case's token, so it lands in that case and not in a new one from MAILER-DAEMON.
            references = tuple(dict.fromkeys((*references, report.original_message_id)))
    return InboundMessage(
        channel=MAIL_CHANNEL,
        visibility="private",
        dedup_key=dedup_key,
        external_id=message_id or None,
        sender=Sender(
            kind=IDENTITY_KIND_OF[MAIL_CHANNEL], handle=address, name=name, anonymous=not address
        ),
        received_at=received_at,
        subject=subject,
        text=text,
        html=html,
        sent_at=sent_at,
        own_refs=(message_id,) if message_id else (),
        thread=ThreadSignals(
            in_reply_to=message_ids(_header(msg, "in-reply-to")),
            references=references,
        ),
        attachments=attachments,
        automated=automated_reason(headers, mail_from, address, msg.get_content_type()),
        recipients=recipients,
        meta=meta,
    )


def _header(msg: Message, name: str) -> str:
    """The text of header `name` (lower-case) as policy.default reads it; "" if absent."""
    raw = next((v for k, v in msg.raw_items() if k.lower() == name), None)
    if raw is None:
        return ""
    try:
        quick = header_text(name, _LINESEP.sub("", str(raw)))
    except Exception:
        quick = None  # the registry below meets the same error, and handles it its way
    if quick is not None:
        return utf8_text(quick)
    try:
        value = msg.get(name)
    except Exception:  # a header the registry cannot parse: fall back to its raw text
        value = next((v for k, v in msg.raw_items() if k.lower() == name), None)
    return "" if value is None else utf8_text(str(value))


def _fold(value: str) -> str:
    return " ".join(value.split())


@dataclass(frozen=True)
class FromCheck:
    """Who a mail says it is from: one clean address and its display name, or why not."""

    address: str = ""  # lower-case; "" when the mail names no usable sender
    name: str = ""
    problem: str | None = None  # why the From was not used: shown on the message
    claimed: str = ""  # the From text as written, printable and short, for that note


_CLAIMED_SHOWN = 200


def _sender(msg: EmailMessage, mail_from: str | None) -> FromCheck:
    """The sender, from the From header alone when there is one.

    A From that is not exactly one clean mailbox makes an anonymous sender: the message
    still becomes a case (its text may be a real customer's), but its contact has no
    address and nothing is ever sent to one. There is no falling back to another field
    then: Reply-To, Sender and the envelope are chosen as freely as From, and a fallback
    would hand an attacker the choice of the acknowledgement's recipient.
    """
    froms = _raw_values(msg, "from")
    if len(froms) > 1:
        return FromCheck(
            problem=f"the mail has {len(froms)} From headers",
            claimed=_claimed(" / ".join(froms)),
        )
    if froms:
        return check_from(froms[0])
    # No From at all (RFC 5322 requires one): the Sender header, then the envelope's MAIL
    # FROM (what SPF checks), each only when it is one clean address.
    for value in _raw_values(msg, "sender")[:1]:
        found = check_from(value)
        if found.address:
            return found
    if mail_from:
        address = clean_address(utf8_text(mail_from).strip().strip("<>"))
        if address:
            return FromCheck(address)
    return FromCheck(problem="the mail has no From header")


def _raw_values(msg: Message, name: str) -> list[str]:
    # As written, before the header registry: its own parse is what check_from judges.
    return [str(v) for k, v in msg.raw_items() if k.lower() == name]


def check_from(value: str) -> FromCheck:
    """One From (or Sender) header's text to a clean mailbox, or the problem with it.

    Pure. Refused: a header the parser rejects (an encoded-word that decodes to a line
    break, smuggling "Bcc:" into the name), group syntax, no address or several, and an
    address that is not `local@domain` with a real domain (clean_address).
    """
    claimed = _claimed(value)
    unfolded = _LINESEP.sub("", value)
    plain = plain_mailboxes(unfolded) if "=?" not in unfolded else None
    if plain is not None and len(plain) == 1:
        # One plain mailbox: what the registry would find, without its token tree.
        shown, spec = plain[0]
        address = clean_address(spec)
        if address is None:
            return FromCheck(problem="From is not a usable address", claimed=claimed)
        return FromCheck(address, _clean_name(shown))
    try:
        header = _POLICY.header_factory("from", unfolded)
        groups = list(header.groups)
    except Exception as exc:  # the registry raises ValueError and others on hostile input
        return FromCheck(problem=f"From cannot be parsed ({type(exc).__name__})", claimed=claimed)
    if any(group.display_name is not None for group in groups):
        return FromCheck(problem="From is a group, not one mailbox", claimed=claimed)
    mailboxes = [address for group in groups for address in group.addresses]
    if not mailboxes:
        return FromCheck(problem="From names no address", claimed=claimed)
    if len(mailboxes) > 1:
        return FromCheck(problem=f"From names {len(mailboxes)} addresses", claimed=claimed)
    address = clean_address(utf8_text(mailboxes[0].addr_spec))
    if address is None:
        return FromCheck(problem="From is not a usable address", claimed=claimed)
    return FromCheck(address, _clean_name(utf8_text(mailboxes[0].display_name)))


# RFC 5322 atext: what an unquoted local part may hold, with dots between runs of it.
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def clean_address(spec: str) -> str | None:
    """`spec` lower-cased when it is an address mail can safely be sent to, else None.

    Pure. The local part is a dot-atom (RFC 5322 atext, or non-ASCII letters for SMTPUTF8)
    of at most 64 characters: no space, control or format character, no quotes. The domain
    is a host name of two labels or more (IDN allowed), not an address literal or a number.
    """
    spec = spec.strip().lower()
    if spec.count("@") != 1 or len(spec) > 254:
        return None
    local, domain = spec.split("@")
    if not _clean_local(local):
        return None
    domain = domain[:-1] if domain.endswith(".") else domain
    if _ascii_domain(domain) is None:
        return None
    return f"{local}@{domain}"


def _clean_local(local: str) -> bool:
    if not local or len(local) > 64 or ".." in local or local[0] == "." or local[-1] == ".":
        return False
    # Non-ASCII (SMTPUTF8) is fine when printable: no format, control or space characters.
    return all(ch == "." or ch in _ATEXT or (ord(ch) > 127 and ch.isprintable()) for ch in local)


def _ascii_domain(domain: str) -> str | None:
    labels = domain.split(".")
    if len(labels) < 2 or len(domain) > 253:
        return None
    encoded = []
    for label in labels:
        try:
            ascii_label = label.encode("idna").decode("ascii") if label else ""
        except UnicodeError:
            return None
        if not _LABEL.match(ascii_label):
            return None
        encoded.append(ascii_label)
    if encoded[-1].isdigit():
        return None  # 192.0.2.1 is not a host name
    return ".".join(encoded)


def _claimed(value: str) -> str:
    return _clean_name(utf8_text(value))[:_CLAIMED_SHOWN]


_ESCAPED = re.compile("[\udc80-\udcff]+")


def utf8_text(value: str) -> str:
    """`value` with raw 8-bit bytes, which the parser keeps as surrogate escapes, decoded.

    SMTPUTF8 mail (RFC 6532) carries UTF-8 in its headers. The email package reads header
    bytes as ASCII with surrogate escapes, so its Address objects hold U+DCC3 U+DCAB where
    the sender wrote `ë`, and such a string cannot even be stored. Invalid UTF-8 becomes
    U+FFFD, and so does NUL.
    """
    decoded = _ESCAPED.sub(
        lambda run: bytes(ord(c) - 0xDC00 for c in run.group()).decode("utf-8", "replace"), value
    )
    return decoded.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL


def _clean_name(name: str) -> str:
    # A display name never carries control characters onward (they end up in headers).
    return " ".join("".join(ch if ch.isprintable() else " " for ch in name).split())


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def content_hash(
    sender: str,
    sent_at: datetime | None,
    raw_date: str,
    subject: str,
    text: str,
    attachments: list[bytes] | None = None,
) -> str:
    """Hash of what a person wrote, blind to trace headers that differ between copies.

    The SMTP copy and the IMAP copy of one mail differ in Received, Return-Path and
    Delivered-To, and possibly in transfer encoding, so only decoded content counts.
    """
    date = sent_at.isoformat() if sent_at else _fold(raw_date)
    body = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()
    digest = hashlib.sha256()
    for piece in (sender.lower(), date, _fold(subject), body):
        digest.update(piece.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    for sha in sorted(hashlib.sha256(a).hexdigest() for a in attachments or []):
        digest.update(sha.encode())
    return digest.hexdigest()


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        decoded = payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name: keep the text readable anyway
        decoded = payload.decode("utf-8", errors="replace")
    # PostgreSQL text cannot hold NUL, and no person wrote one: show it as U+FFFD.
    return decoded.replace("\x00", "\ufffd")


def _bodies(msg: EmailMessage) -> tuple[str, str | None, list[Message]]:
    chosen: list[Message] = []
    text = ""
    html: str | None = None
    plain_part = _body_part(msg, ("plain",))
    html_part = _body_part(msg, ("html",))
    if plain_part is not None:
        text = _part_text(plain_part)
        chosen.append(plain_part)
    if html_part is not None:
        html = _part_text(html_part)
        chosen.append(html_part)
        if plain_part is None:
            text = html_to_text(html)
    return text.replace("\r\n", "\n"), html, chosen


def _body_part(msg: EmailMessage, preference: tuple[str, ...]) -> Message | None:
    try:
        return msg.get_body(preferencelist=preference)
    except Exception:
        return None


def _attachments(msg: Message, body_parts: list[Message]) -> Iterator[AttachmentPart]:
    stack: list[Message] = [msg]
    while stack:
        part = stack.pop()
        if any(part is b for b in body_parts):
            continue
        ctype = part.get_content_type()
        if part.get_content_maintype() == "message":
            # A forwarded mail, or the per-recipient blocks of a delivery report: one
            # attachment each, as the sender attached it, never a tree of little parts.
            inner = part.get_payload()
            if isinstance(inner, list):
                data = b"".join(_verbatim(m) for m in inner if isinstance(m, Message))
            else:
                decoded = part.get_payload(decode=True)
                data = decoded if isinstance(decoded, bytes) else b""
            default_name = "" if ctype == "message/delivery-status" else "message.eml"
            yield AttachmentPart(utf8_text(part.get_filename() or default_name), ctype, data)
            continue
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
            continue
        if part is msg and ctype.startswith("text/"):
            continue  # a single-part text mail whose charset or subtype we could not read
        decoded = part.get_payload(decode=True)
        if isinstance(decoded, bytes):
            yield AttachmentPart(utf8_text(part.get_filename() or ""), ctype, decoded)


# Headers written back as they came: refolding would parse each one (a To: with thousands
# of addresses takes seconds), and the bytes would no longer be the sender's.
_VERBATIM = policy_default.clone(refold_source="none", linesep="\r\n")


def _verbatim(message: Message) -> bytes:
    try:
        return message.as_bytes(policy=_VERBATIM)
    except Exception:  # the raw mail is kept whole in the store; this copy is a convenience
        return b""


# --- auto-replies, bounces and lists --------------------------------------------------------

_SYSTEM_LOCALPARTS = re.compile(
    r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|donotreply|bounces?)([+\-.].*)?$",
    re.IGNORECASE,
)


# Every header automated_reason looks at, lower-case.
AUTOMATION_HEADERS = (
    OWN_HEADER.lower(),
    "auto-submitted",
    "precedence",
    "x-autoreply",
    "x-autorespond",
    "x-auto-response-suppress",
    "list-id",
    "list-unsubscribe",
)


_COMMENT = re.compile(r"\([^()]*\)")
_KEYWORD_SHOWN = 40


def auto_submitted_keyword(value: str) -> str | None:
    """The keyword of an Auto-Submitted value (RFC 3834), lower-case, or None when empty.

    `auto-replied; owner-email="a@b.example"` is "auto-replied": parameters after `;` and
    comments in parentheses do not count. Anything but "no" means a robot sent it, including
    keywords this code has never heard of (`notify-list`, `auto-notified`): a prefix check
    for "no" took `notify-list` for "no".
    """
    text = value
    # Innermost comments first; nesting is bounded by the header's own length.
    while "(" in text:
        stripped = _COMMENT.sub(" ", text)
        if stripped == text:
            break  # an unbalanced "(": keep what is there
        text = stripped
    keyword = text.split(";", 1)[0].strip().lower()
    if not keyword:
        return None
    # Shown on the case as the reason: the sender chose it, so printable and short.
    shown = "".join(ch if ch.isprintable() else "?" for ch in keyword)
    return shown[:_KEYWORD_SHOWN]


def automated_reason(
    headers: Mapping[str, str], mail_from: str | None, sender: str, content_type: str
) -> str | None:
    """Why a message must not be acknowledged, or None. `headers` has lower-case names.

    Answering these would loop with another robot or spam a list (RFC 3834).
    """
    if OWN_HEADER.lower() in headers:
        return "our own outbound mail came back"
    keyword = auto_submitted_keyword(headers.get("auto-submitted", ""))
    if keyword is not None and keyword != "no":
        return f"auto-submitted: {keyword}"
    if content_type == "multipart/report":
        return "bounce: delivery status notification"
    if mail_from is not None and mail_from.strip("<> ") == "":
        return "bounce: null reverse path"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return f"precedence: {precedence}"
    for header in ("x-autoreply", "x-autorespond", "x-auto-response-suppress"):
        if header in headers:
            return f"auto-reply header: {header}"
    if "list-id" in headers or "list-unsubscribe" in headers:
        return "mailing list"
    local = sender.split("@", 1)[0]
    if local and _SYSTEM_LOCALPARTS.match(local):
        return f"system sender: {local}"
    return None
