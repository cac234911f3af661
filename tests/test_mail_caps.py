"""Caps: a crafted mail is refused before the standard library's parser can stall on it.

Python 3.11's email parser recurses (RecursionError at 5,000 levels), takes 23 s on 100k
empty parts and 12 s on a To: header with 10k addresses. `check_caps` walks the raw bytes
once; what it refuses goes to dead letters with its raw bytes. The parser is swapped for
one that fails the test when called, which shows the refusal happens before it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

import normalizer.mail
from connectors.registry import parser_table
from inbox.config import StoreSettings
from inbox.models import Blob, DeadLetter, Intake, Message
from normalizer.config import NormalizerSettings
from normalizer.mail import Caps, check_caps, parse_email
from normalizer.message import ParseError
from normalizer.worker import Normalizer
from tests.support.dns_server import test_mail_auth
from tests.support.helpers import ingest

DEFAULT = Caps()
HEAD = (
    b"From: Mallory <mallory@example.net>\r\nTo: support@support.example.com\r\n"
    b"Subject: x\r\nMIME-Version: 1.0\r\n"
)


def nested(depth: int, boundary: Callable[[int], bytes] | None = None) -> bytes:
    """`depth` multiparts, each the only part of the one above it, text at the bottom."""
    param = boundary or (lambda i: b'boundary="b%d"' % i)
    out = [HEAD]
    for i in range(depth):
        out.append(b"Content-Type: multipart/mixed; " + param(i) + b"\r\n\r\n--b%d\r\n" % i)
    out.append(b"Content-Type: text/plain\r\n\r\nat the bottom\r\n")
    out.extend(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return b"".join(out)


def flat(
    parts: int, content_type: bytes = b'multipart/mixed; boundary="p"', eol: bytes = b"\r\n"
) -> bytes:
    """One multipart with `parts` empty parts."""
    head = HEAD.replace(b"\r\n", eol)
    return (
        head
        + b"Content-Type: "
        + content_type
        + eol
        + eol
        + (b"--p" + eol + eol) * parts
        + b"--p--"
        + eol
    )


def addressed(count: int, header: bytes = b"To") -> bytes:
    addresses = b",\r\n ".join(b'"User %d" <user%d@example.com>' % (i, i) for i in range(count))
    return (
        b"From: Mallory <mallory@example.net>\r\n"
        + header
        + b": "
        + addresses
        + b"\r\nSubject: hello all\r\n\r\nhi\r\n"
    )


def big_headers(size: int) -> bytes:
    line = b"X-Spam-Report: " + b"x" * 990 + b"\r\n"
    return HEAD + line * (size // len(line) + 1) + b"\r\nbody\r\n"


def forwarded(inner: bytes) -> bytes:
    return (
        HEAD
        + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        + b"--outer\r\nContent-Type: text/plain\r\n\r\nsee the attached mail\r\n"
        + b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
        + inner
        + b"\r\n--outer--\r\n"
    )


HOSTILE: dict[str, tuple[bytes, str]] = {
    "MIME nested 5,000 deep": (nested(5000), "nesting"),
    "100k empty parts": (flat(100_000), "parts"),
    "To: with 10k addresses": (addressed(10_000), "addresses"),
    "a 300 KiB header block": (big_headers(300 * 1024), "header block"),
    # The same attacks in other dress: each once got past the caps to the parser.
    "parts with an RFC 2231 boundary": (
        flat(5000, b"multipart/mixed; boundary*=us-ascii'en'p"),
        "parts",
    ),
    "parts with a boundary in RFC 2231 sections": (
        flat(5000, b'multipart/mixed; boundary*0="p"; boundary*1=""'),
        "parts",
    ),
    "parts behind a decoy x-boundary parameter": (
        flat(5000, b'multipart/mixed; x-boundary="decoy"; boundary="p"'),
        "parts",
    ),
    "parts with bare CR line ends": (flat(5000, eol=b"\r"), "parts"),
    "nesting with RFC 2231 boundaries": (
        nested(5000, lambda i: b"boundary*=''b%d" % i),
        "nesting",
    ),
    "10k addresses in Resent-To": (addressed(10_000, b"Resent-To"), "addresses"),
    "10k addresses in a forwarded mail": (forwarded(addressed(10_000)), "addresses"),
}


@pytest.fixture
def no_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refuse:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("the parser ran on input the caps should have refused")

    monkeypatch.setattr(normalizer.mail, "BytesParser", Refuse)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_check_caps_refuses(name):
    raw, reason = HOSTILE[name]
    with pytest.raises(ParseError, match=reason):
        check_caps(raw, DEFAULT)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_parse_email_refuses_before_parsing(name, no_parser):
    raw, reason = HOSTILE[name]
    with pytest.raises(ParseError, match=reason):
        parse_email(raw, received_at=datetime.now(UTC))


def test_an_oversize_message_is_refused_by_its_size(no_parser):
    raw = b"From: a@example.org\r\nSubject: big\r\n\r\n" + b"x" * 4096
    caps = Caps(max_bytes=len(raw) - 1)
    with pytest.raises(ParseError, match="bytes, over the cap"):
        parse_email(raw, received_at=datetime.now(UTC), caps=caps)
    check_caps(raw, Caps(max_bytes=len(raw)))  # at the cap exactly is fine


# --- at the caps, mail still parses ---------------------------------------------------------


def test_nesting_at_the_cap_parses():
    caps = Caps(max_depth=100)
    check_caps(nested(100), caps)
    with pytest.raises(ParseError, match="nesting"):
        check_caps(nested(101), caps)
    message = parse_email(nested(100), received_at=datetime.now(UTC), caps=caps)
    assert message.text == "at the bottom"


@pytest.mark.parametrize("max_parts", [1, 10, 1000])
def test_part_count_counts_every_entity(max_parts):
    # The root multipart is an entity too: n leaves make n + 1 parts.
    caps = Caps(max_parts=max_parts)
    check_caps(flat(max_parts - 1), caps)
    with pytest.raises(ParseError, match="parts"):
        check_caps(flat(max_parts), caps)


def test_address_count_at_the_cap():
    caps = Caps(max_addresses=50)
    check_caps(addressed(49), caps)  # plus the From address: 50
    with pytest.raises(ParseError, match="addresses"):
        check_caps(addressed(50), caps)


def with_header(header: bytes) -> bytes:
    return HEAD + header + b"\r\n\r\nbody\r\n"


def params(count: int, each: bytes = b"v") -> bytes:
    return b"".join(b"; p%d=%s" % (i, each) for i in range(count))


@pytest.mark.parametrize(
    ("header", "refused"),
    [
        (b"Content-Type: text/plain; charset=utf-8", None),
        (b"Content-Type: text/plain" + params(64), None),
        (b"Content-Type: text/plain" + params(65), "more than 64 parameters"),
        (b"Content-Disposition: attachment" + params(65), "more than 64 parameters"),
        (b"Content-Disposition: attachment; filename*0=a" + params(3), None),
        # folded over many lines: the folded header is one header
        (b"Content-Type: text/plain" + params(65).replace(b"; ", b";\r\n "), "parameters"),
        (b'Content-Type: text/plain; name="' + b"x" * 16_000 + b'"', None),
        (b'Content-Type: text/plain; name="' + b"x" * 17_000 + b'"', "bytes, over the cap"),
        # The attack as tried: 250 KB of parameters in one Content-Type (45 s before).
        (b"Content-Type: multipart/mixed; boundary=b" + params(20_000, b"x" * 6), "over"),
        # A Subject is no parameter list: its semicolons are text.
        (b"Subject: a; b; c" + b";" * 100, None),
    ],
)
def test_parameter_caps(header: bytes, refused: str | None):
    raw = with_header(header)
    if refused is None:
        check_caps(raw, DEFAULT)
        return
    with pytest.raises(ParseError, match=refused):
        check_caps(raw, DEFAULT)


def test_long_references_are_not_addresses():
    refs = b" ".join(b"<msg%d@lists.example.org>" % i for i in range(3000))
    raw = (
        b"From: a@example.org\r\nSubject: Re: long thread\r\nReferences: "
        + refs
        + b"\r\n\r\nhi\r\n"
    )
    check_caps(raw, DEFAULT)


def test_boundary_lookalikes_in_a_plain_body_are_not_parts():
    body = b"--p\r\n\r\n" * 5000
    raw = b"From: a@example.org\r\nSubject: dashes\r\nContent-Type: text/plain\r\n\r\n" + body
    check_caps(raw, DEFAULT)


# --- through intake and the worker: dead letters with the raw bytes -------------------------


def test_hostile_mail_ends_as_dead_letters_with_its_raw_bytes(engine):
    settings = NormalizerSettings(max_message_bytes=2 * 1024 * 1024)
    oversize = b"From: a@example.org\r\nSubject: big\r\n\r\n" + b"y" * (2 * 1024 * 1024)
    inputs = {name: raw for name, (raw, _) in HOSTILE.items()}
    inputs["a message over the size cap"] = oversize
    for name, raw in inputs.items():
        ingest(engine, raw, source_key=f"hostile:{name}")
    outcomes = Normalizer(
        engine, StoreSettings(), settings, mail_auth=test_mail_auth(), parsers=parser_table()
    ).drain()
    assert [o.state for o in outcomes] == ["dead"] * len(inputs)
    with engine.connect() as conn:
        assert conn.execute(select(Message.id)).first() is None
        rows = conn.execute(
            select(Intake.source_key, Intake.state, DeadLetter.error, Blob.data)
            .join(DeadLetter, DeadLetter.intake_id == Intake.id)
            .join(Blob, Blob.sha256 == DeadLetter.raw_sha256)
        ).all()
    kept = {row.source_key.removeprefix("hostile:"): row for row in rows}
    assert set(kept) == set(inputs)
    for name, row in kept.items():
        assert row.state == "dead"
        assert row.data == inputs[name], name
        assert row.error


# --- the walk reads the bytes as the parser does ---------------------------------------------

# Forms of one multipart with 50 empty parts. Whatever the parser makes of each, check_caps
# must count at least as many parts: the expectation is the parser's own count.
DRESSES = {
    "plain": b'multipart/mixed; boundary="p"',
    "comment after the type": b"multipart/mixed (c); boundary=p",
    "comment after the boundary": b"multipart/mixed; boundary=p (c)",
    "quoted boundary and comment": b'multipart/mixed; boundary="p"(c)',
    "space after the slash": b"multipart/ mixed; boundary=p",
    "encoded-word type": b"=?utf-8?q?multipart/mixed?=; boundary=p",
    "base64 encoded-word type": b"=?utf-8?b?bXVsdGlwYXJ0L21peGVk?=; boundary=p",
    "empty parameter": b"multipart/mixed;; boundary=p",
    "spaces around =": b"multipart/mixed; boundary = p",
    "upper-case RFC 2231 section": b"multipart/mixed; BOUNDARY*0*=us-ascii''p",
    "comment before the type": b"(c) multipart/mixed; boundary=p",
    "space before the slash": b"multipart /mixed; boundary=p",
    "non-ASCII RFC 2231 boundary": b"multipart/mixed; boundary*=utf-8''p%C3%A4",
    "digest": b"multipart/digest; boundary=p",
}


def parser_parts(raw: bytes) -> int:
    from email import policy
    from email.parser import BytesParser

    return len(list(BytesParser(policy=policy.default).parsebytes(raw).walk()))


@pytest.mark.parametrize("dress", list(DRESSES))
def test_check_caps_counts_parts_as_the_parser_sees_them(dress):
    raw = flat(50, DRESSES[dress])
    real = parser_parts(raw)
    if real > 10:
        with pytest.raises(ParseError, match="parts"):
            check_caps(raw, Caps(max_parts=10))
    else:
        check_caps(raw, Caps(max_parts=10))
    check_caps(raw, Caps(max_parts=real))


LAYOUTS = {
    "parts without blank lines": HEAD
    + b"Content-Type: multipart/mixed; boundary=p\r\n\r\n"
    + b"--p\r\nContent-Type: text/plain\r\n" * 50
    + b"--p--\r\n",
    "headers ended by a non-header line": HEAD
    + b"Content-Type: multipart/mixed; boundary=p\r\n\r\n"
    + b"--p\r\nX-A: 1\r\nnot a header\r\n" * 50
    + b"--p--\r\n",
    "LF only": flat(50, eol=b"\n"),
    "CR only": flat(50, eol=b"\r"),
    "a digest of bare messages": HEAD
    + b"Content-Type: multipart/digest; boundary=p\r\n\r\n"
    + b"--p\r\n\r\nFrom: x@example.org\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n"
    + b"--q\r\n\r\n" * 50
    + b"--q--\r\n--p--\r\n",
    "inside a forwarded mail": forwarded(flat(50)),
    "a delivery report with many blocks": HEAD
    + b"Content-Type: multipart/report; boundary=p\r\n\r\n--p\r\n\r\ntext\r\n"
    + b"--p\r\nContent-Type: message/delivery-status\r\n\r\n"
    + b"Reporting-MTA: dns; mx.example.net\r\n\r\n" * 50
    + b"--p--\r\n",
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_check_caps_follows_the_parsers_structure(layout):
    raw = LAYOUTS[layout]
    real = parser_parts(raw)
    assert real > 40  # each layout really has many parts for the parser
    with pytest.raises(ParseError, match="parts"):
        check_caps(raw, Caps(max_parts=real - 1))


def test_forwarded_mail_nesting_counts(no_parser):
    inner = nested(60)
    with pytest.raises(ParseError, match="nesting"):
        check_caps(forwarded(forwarded(inner)), Caps(max_depth=60))


# --- the parse itself holds the caps, even if the walk missed something ---------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (flat(100_000), "parts"),
        (nested(5000), "nesting"),
        (addressed(10_000), "addresses"),
        (forwarded(addressed(10_000)), "addresses"),
    ],
    ids=["parts", "nesting", "addresses", "forwarded addresses"],
)
def test_the_parse_stops_at_the_caps_without_the_walk(monkeypatch, raw, reason):
    monkeypatch.setattr(normalizer.mail, "check_caps", lambda raw, caps: None)
    with pytest.raises(ParseError, match=reason):
        parse_email(raw, received_at=datetime.now(UTC))
