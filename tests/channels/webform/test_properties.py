"""Generated hostile input for the web form's pure parts: whatever arrives, the parser gives
a `web` message or a ParseError (the dead letters' cue), the field check gives fields or
errors by field, and the work check says no to anything but real work."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.webform import abuse
from connectors.webform.form import Limits, Upload, check_form
from connectors.webform.parse import parse
from normalizer.mail import Caps
from normalizer.message import ParseError

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RECEIVED = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
FIELDS = ("name", "email", "phone", "text")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def form_like() -> st.SearchStrategy[dict[str, Any]]:
    """Documents shaped like ours, with any field replaced by anything."""
    return st.fixed_dictionaries(
        {
            "v": st.sampled_from([1, 1, 1, 2, "1", None]),
            "kind": st.sampled_from(["form", "followup", "spam", ""]),
            "sid": st.text(max_size=70) | json_values,
            "name": st.text(max_size=300) | json_values,
            "claims": st.lists(
                st.fixed_dictionaries(
                    {"kind": st.text(max_size=8), "handle": st.text(max_size=300)}
                )
                | json_values,
                max_size=6,
            )
            | json_values,
            "text": st.text(max_size=500) | json_values,
            "attachments": st.lists(
                st.fixed_dictionaries(
                    {
                        "filename": st.text(max_size=30) | json_values,
                        "content_type": st.text(max_size=30),
                        "data": st.text(max_size=40) | json_values,
                    }
                ),
                max_size=7,
            )
            | json_values,
        }
    )


@PROPERTY
@given(st.binary(max_size=400) | form_like().map(lambda d: json.dumps(d).encode()))
def test_the_parser_makes_a_web_message_or_a_dead_letter(raw: bytes) -> None:
    try:
        message = parse(raw, envelope={"key": "k"}, received_at=RECEIVED, caps=Caps())
    except ParseError:
        return
    assert message.channel == "web" and message.sender.kind == "web" and message.sender.handle
    assert len(message.attachments) <= 5 and len(message.text) <= 100_000


@PROPERTY
@given(
    st.fixed_dictionaries({f: st.text(max_size=400) for f in FIELDS}),
    st.lists(
        st.builds(Upload, st.text(max_size=40), st.text(max_size=20), st.binary(max_size=64)),
        max_size=7,
    ),
)
def test_the_field_check_gives_clean_fields_or_errors_by_field(
    fields: dict[str, str], uploads: list[Upload]
) -> None:
    limits = Limits(max_text=300, max_files=5, max_file_bytes=60, types=["image/png", "text/plain"])
    checked = check_form(**fields, uploads=uploads, limits=limits)
    assert set(checked.errors) <= {"name", "email", "phone", "text", "files"}
    if not checked.errors:
        assert checked.name and checked.text and (checked.email or checked.phone)
        assert not any(ord(c) < 32 for c in checked.name)
        assert "\r" not in checked.text and len(checked.text) <= 300
        assert checked.email == checked.email.lower() and "\n" not in checked.email
        assert not checked.phone or checked.phone.startswith("+")
        assert all(kind in ("image/png", "text/plain") for _, kind, _ in checked.files)


@PROPERTY
@given(st.text(max_size=80), st.text(max_size=40), st.integers(min_value=0, max_value=24))
def test_the_work_check_says_yes_only_to_real_work(challenge: str, nonce: str, bits: int) -> None:
    """Any text as a nonce: accepted exactly when it is a hex nonce whose digest has the
    zero bits (counted here with hashlib)."""
    import hashlib
    import re

    digest = hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()
    real = bool(re.fullmatch(r"[0-9a-f]{1,32}", nonce)) and (
        int.from_bytes(digest, "big") >> (256 - bits) == 0 if bits else True
    )
    assert abuse.work_ok(challenge, nonce, bits) == real
