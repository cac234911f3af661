"""The web form's pure parts, by tables of realistic inputs: tokens, the proof of work
(checked against stamps made here with hashlib), the difficulty rule, file sniffing, the
field checks and the parser."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.webform import abuse
from connectors.webform.form import Limits, Upload, check_form, email_of, phone_of
from connectors.webform.parse import parse
from normalizer.mail import Caps
from normalizer.message import ParseError

SECRET = b"pure-test-secret"
NOW = 1_800_000_000.0
FIXTURES = Path(__file__).parent / "fixtures"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(40)


def zero_bits(token: str, nonce: str) -> int:
    value = int.from_bytes(hashlib.sha256(f"{token}:{nonce}".encode()).digest(), "big")
    return 256 - value.bit_length()


# --- tokens --------------------------------------------------------------------------------


def test_a_token_we_made_checks_out_and_says_its_difficulty() -> None:
    token = abuse.mint(SECRET, NOW, 17)
    found = abuse.check(SECRET, token, NOW + 60, max_age_s=3600)
    assert (found.issued, found.bits, found.raw) == (int(NOW), 17, token)


@pytest.mark.parametrize(
    ("token_of", "now", "min_age", "says"),
    [
        (lambda t: "", NOW, 0, "missing"),
        (lambda t: "1.2.3", NOW, 0, "missing"),
        (lambda t: t[:-1] + ("a" if t[-1] != "a" else "b"), NOW, 0, "not ours"),
        # The difficulty is signed: asking for less work forges the token.
        (lambda t: t.replace(".16.", ".1.", 1), NOW, 0, "not ours"),
        (lambda t: abuse.mint(b"another secret", NOW, 16), NOW, 0, "not ours"),
        # A trailing newline would be another intake key for the same form: a replay.
        (lambda t: t + "\n", NOW, 0, "missing"),
        (lambda t: t, NOW + 3601, 0, "expired"),
        (lambda t: t, NOW - 3600, 0, "expired"),  # issued in the future
        (lambda t: t, NOW + 2, 5, "faster than a person"),
    ],
)
def test_a_bad_token_is_refused_with_a_reason(token_of, now, min_age, says) -> None:
    token = token_of(abuse.mint(SECRET, NOW, 16))
    with pytest.raises(abuse.TokenError, match=says):
        abuse.check(SECRET, token, now, max_age_s=3600, min_age_s=min_age)


# --- the proof of work ---------------------------------------------------------------------


@pytest.mark.parametrize("bits", [0, 1, 4, 8, 9, 12, 15])
def test_the_work_check_agrees_with_a_count_of_zero_bits(bits: int) -> None:
    token = abuse.mint(SECRET, NOW, bits, rand="r" * 24)
    for n in range(3000):
        nonce = format(n, "x")
        assert abuse.work_ok(token, nonce, bits) == (zero_bits(token, nonce) >= bits), nonce


def test_a_stamp_found_here_is_accepted() -> None:
    token = abuse.mint(SECRET, NOW, 14)
    n = 0
    while zero_bits(token, format(n, "x")) < 14:
        n += 1
    assert abuse.work_ok(token, format(n, "x"), 14)


@pytest.mark.parametrize("nonce", ["", "-1", "ZZ", "a" * 33, "1 2", "0x10", "é", "0\n"])
def test_a_malformed_nonce_is_refused_before_hashing(nonce: str) -> None:
    assert not abuse.work_ok("t", nonce, 0)


@pytest.mark.parametrize(
    ("level", "burst", "bits"),
    [
        (200, 200, 16),
        (150, 200, 16),
        (100, 200, 17),
        (99, 200, 17),
        (50, 200, 18),
        (25, 200, 19),
        (12, 200, 20),
        (6, 200, 21),
        (1, 200, 22),  # capped at the maximum
        (0, 200, 22),
    ],
)
def test_the_difficulty_rises_a_bit_per_halving_of_the_global_bucket(level, burst, bits) -> None:
    assert abuse.difficulty(16, 22, level, burst) == bits


# --- what a file is ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0\0\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\0", "image/gif"),
        (b"RIFF\x24\0\0\0WEBPVP8 ", "image/webp"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"plain words\n", "text/plain"),
        (b"MZ\x90\0\x03\0\0\0", None),  # a Windows executable
        (b"PK\x03\x04\x14\0", None),  # a zip (an .docx too)
        (b"\xff\xfe\0\0", None),
    ],
)
def test_a_file_is_what_its_first_bytes_show(data: bytes, kind: str | None) -> None:
    assert abuse.sniff(data) == kind


# --- the fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Ana@Example.ORG", "ana@example.org"),
        ("  bob.smith+support@mail.example.co.uk ", "bob.smith+support@mail.example.co.uk"),
        ("Ana <ana@example.org>", None),
        ("ana@example", None),
        ("ana@@example.org", None),
        ("ana@example.org\r\nBcc: x@example.org", None),
        ("", None),
    ],
)
def test_an_address_is_taken_only_in_its_plain_shape(typed: str, stored: str | None) -> None:
    assert email_of(typed) == stored


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("+1 (415) 555-0199", "+14155550199"),
        ("0049 151 12345678", "+4915112345678"),
        ("+49.151.123.456.78", "+4915112345678"),
        ("020 7946 0958", None),  # no country code: we cannot know which country
        ("+0 123456789", None),
        ("+1234", None),
        ("call me", None),
    ],
)
def test_a_number_is_taken_in_e164(typed: str, stored: str | None) -> None:
    assert phone_of(typed) == stored


def check(**kw) -> dict[str, str]:
    values: dict[str, Any] = {
        "name": "Ana", "email": "ana@example.org", "phone": "", "text": "Help", "uploads": []
    }  # fmt: skip
    values.update(kw)
    return check_form(**values, limits=Limits(100, 2, 1000, ["image/png"])).errors


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({}, set()),
        ({"name": "  "}, {"name"}),
        ({"name": "x" * 201}, {"name"}),
        ({"email": "", "phone": ""}, {"email"}),
        ({"email": "", "phone": "+442079460958"}, set()),
        ({"email": "nope"}, {"email"}),
        ({"phone": "12"}, {"phone"}),
        ({"text": " \n "}, {"text"}),
        ({"text": "x" * 101}, {"text"}),
        ({"text": "line one\r\nline two\x00"}, set()),
        ({"uploads": [Upload("a.png", "image/png", PNG)] * 3}, {"files"}),
        ({"uploads": [Upload("a.png", "image/png", PNG + bytes(1000))]}, {"files"}),
        ({"uploads": [Upload("a.pdf", "application/pdf", b"%PDF-1.4")]}, {"files"}),
        ({"uploads": [Upload("", "", b"")]}, set()),  # an empty file input sends this
    ],
)
def test_each_field_error_names_its_field(fields, errors) -> None:
    assert set(check(**fields)) == errors


def test_controls_are_taken_out_of_a_name_and_a_text_keeps_its_lines() -> None:
    checked = check_form(
        name="Ana\u202e\x07 Lima", email="ana@example.org", phone="", text="a\r\nb\x1b[31m",
        uploads=[], limits=Limits(max_text=100, max_files=1, max_file_bytes=10, types=[]),
    )  # fmt: skip
    assert checked.name == "Ana Lima" and checked.text == "a\nb[31m"


# --- the parser ----------------------------------------------------------------------------

RECEIVED = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def parsed(raw: bytes, key: str = "form:k"):
    return parse(raw, envelope={"key": key}, received_at=RECEIVED, caps=Caps())


@pytest.mark.parametrize(
    ("name", "claims", "files"),
    [
        ("form_email_screenshot.json", "ana.lima@example.org", ["login-error.png"]),
        ("form_phone_nojs.json", "+4915112345678", []),
        ("form_both.json", "priya@example.net, +14155550123", []),
    ],
)
def test_each_fixture_parses_to_a_web_message_from_its_submission(name, claims, files) -> None:
    raw = (FIXTURES / name).read_bytes()
    doc = json.loads(raw)
    message = parsed(raw)
    assert message.channel == "web" and message.visibility == "private"
    assert (message.sender.kind, message.sender.handle) == ("web", doc["sid"])
    assert message.sender.name == doc["name"] and message.text == doc["text"]
    assert message.meta["claims_reachable"] == claims
    assert [a.filename for a in message.attachments] == files
    assert message.thread.conversation == (f"web:{doc['sid']}",)
    assert message.dedup_key == "web:form:form:k"


def test_a_followup_carries_its_case_tag_for_threading_and_no_claims() -> None:
    doc = {"v": 1, "kind": "followup", "sid": "f-1", "name": "", "claims": [], "text": "More",
           "work": "", "attachments": [], "tag": "[C-000042 #abcdefgh]"}  # fmt: skip
    message = parsed(json.dumps(doc).encode())
    assert message.subject == "[C-000042 #abcdefgh]" and "claims_reachable" not in message.meta


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        json.dumps({"v": 2, "kind": "form", "sid": "f-1"}).encode(),
        json.dumps({"v": 1, "kind": "spam", "sid": "f-1"}).encode(),
        json.dumps({"v": 1, "kind": "form", "sid": ""}).encode(),
        json.dumps({"v": 1, "kind": "form", "sid": "f-1", "text": 5}).encode(),
        json.dumps(
            {"v": 1, "kind": "form", "sid": "f-1", "attachments": [{"data": "%%%"}]}
        ).encode(),
        json.dumps({"v": 1, "kind": "form", "sid": "f-1", "attachments": [{}] * 6}).encode(),
        json.dumps({"v": 1, "kind": "form", "sid": "f-1", "claims": "ana"}).encode(),
    ],
)
def test_what_cannot_be_a_message_raises_for_the_dead_letters(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parsed(raw)


def test_the_size_cap_comes_first() -> None:
    raw = json.dumps({"v": 1, "kind": "form", "sid": "f", "text": "x" * 2000}).encode()
    with pytest.raises(ParseError, match="over the cap"):
        parse(raw, envelope={}, received_at=RECEIVED, caps=Caps(max_bytes=1000))


def test_an_attachment_round_trips_its_bytes() -> None:
    doc = {"v": 1, "kind": "form", "sid": "f-1", "name": "A", "claims": [], "text": "x",
           "attachments": [{"filename": "a.png", "content_type": "image/png",
                            "data": base64.b64encode(PNG).decode()}]}  # fmt: skip
    assert parsed(json.dumps(doc).encode()).attachments[0].data == PNG
