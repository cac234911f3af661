"""The contact form over HTTP on SQLite and PostgreSQL: store then answer, the form's own
CSRF token, the honeypot, the proof of work (stamps made here with hashlib), the rate
limits and the difficulty raised under load, attachments checked by their bytes."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape as html_unescape
from typing import Any

from sqlalchemy import Engine, func, select, update

from connectors.webform import limits
from inbox.models import AckBucket, Attachment, Case, Identity, Intake, Message, utcnow
from tests.channels.webform.support import PNG, PUBLIC, Site, settings, stamp
from tests.support.helpers import normalize


def count(engine: Engine, model: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


async def test_the_form_page_is_strict_and_self_contained(engine: Engine) -> None:
    async with Site(engine) as site:
        status, html, headers = await site.get("/contact")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "form-action 'self'" in csp
    # No inline script or style, nothing from another host.
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None
    assert "style=" not in html and "<style" not in html
    assert re.search(r'(src|href)="(https?:)?//', html) is None
    # Every input has its label; the honeypot is hidden from people and screen readers.
    for name in ("name", "email", "phone", "text", "files"):
        assert f'<label for="{name}">' in html
    assert 'class="trap" aria-hidden="true"' in html and 'tabindex="-1"' in html


async def test_a_post_is_stored_then_answered_and_the_reference_appears(engine: Engine) -> None:
    async with Site(engine) as site:
        status, _, headers = await site.send(files=[("error.png", PNG, "image/png")])
        assert status == 303
        location = headers["Location"]
        # Stored before the answer: the intake row exists as the 303 arrives.
        assert count(engine, Intake, Intake.channel == "web") == 1
        # The normalizer has not run: "received", refreshing itself without script.
        status, html, _ = await site.get(location)
        assert status == 200 and 'http-equiv="refresh"' in html
        normalize(engine)
        status, html, _ = await site.get(location)
    assert status == 200
    with engine.connect() as conn:
        case = conn.execute(select(Case.reference, Case.token, Case.unverified_from)).one()
        identity = conn.execute(select(Identity.kind, Identity.handle, Identity.verified)).one()
        attached = conn.execute(select(Attachment.filename, Attachment.content_type)).all()
    assert case.reference in html
    assert f"{PUBLIC}/status/{case.reference}?t={case.token}" in html
    assert "A person will answer" in html
    # The address typed is a claim: the case says so, and the identity is the submission.
    assert case.unverified_from == "ana@example.org"
    assert identity.kind == "web" and identity.handle.startswith("f-") and not identity.verified
    assert attached == [("error.png", "image/png")]


async def test_a_replayed_post_is_the_same_submission(engine: Engine) -> None:
    async with Site(engine) as site:
        token, bits = await site.page()
        values = {
            "form_token": token, "name": "Ana", "email": "ana@example.org", "phone": "",
            "text": "Help", "work": stamp(token, bits),
        }  # fmt: skip
        first = await site.post(values)
        second = await site.post(values)
    assert first[0] == second[0] == 303 and first[2]["Location"] == second[2]["Location"]
    normalize(engine)
    assert count(engine, Intake) == 1 and count(engine, Case) == 1


async def test_a_forged_expired_or_missing_token_is_refused_and_nothing_stored(
    engine: Engine,
) -> None:
    async with Site(engine, settings(token_max_age_minutes=1)) as site:
        token, bits = await site.page()
        forged = token[:-1] + ("0" if token[-1] != "0" else "1")
        old = site.form  # an expired token: issued two minutes ago, signed by us
        from connectors.webform.abuse import mint

        expired = mint(old.secret, utcnow().timestamp() - 120, bits)
        for bad in ("", forged, expired):
            values = {"form_token": bad, "name": "A", "email": "a@example.org", "text": "x"}
            values["work"] = stamp(bad, bits) if bad else ""
            status, html, _ = await site.post(values)
            assert status == 403, bad
            assert "security token" in html
        # The refusal is in the page's language too: here Spanish, chosen on the form.
        status, html, _ = await site.post(
            {"form_token": forged, "lang": "es", "name": "A", "email": "a@example.org"}
        )
        assert status == 403
        assert html_unescape(html).count("código de seguridad del formulario no es nuestro") == 1
    assert count(engine, Intake) == 0


async def test_the_honeypot_refuses_with_a_clear_error(engine: Engine) -> None:
    async with Site(engine) as site:
        status, html, _ = await site.send(website="http://spam.example")
    assert status == 400 and "Leave this field empty" in html
    assert count(engine, Intake) == 0


async def test_the_proof_of_work_must_check_out(engine: Engine) -> None:
    async with Site(engine) as site:
        token, bits = await site.page()
        good = stamp(token, bits)
        n = int(good, 16) + 1
        # A nonce that does not give the zero bits (checked here with hashlib).
        import hashlib

        while (
            int.from_bytes(hashlib.sha256(f"{token}:{n:x}".encode()).digest(), "big")
            >> (256 - bits)
            == 0
        ):
            n += 1
        values = {"form_token": token, "name": "A", "email": "a@example.org", "text": "x"}
        status, html, _ = await site.post({**values, "work": format(n, "x")})
        assert status == 400 and "proof of work" in html
        status, _, _ = await site.post({**values, "work": good})
        assert status == 303
    assert count(engine, Intake) == 1


async def test_without_javascript_a_post_must_not_be_faster_than_a_person(engine: Engine) -> None:
    async with Site(engine, settings(nojs_min_fill_seconds=30)) as site:
        status, html, _ = await site.send(work=False)
        assert status == 400 and "faster than a person" in html
        from connectors.webform.abuse import mint

        # The same form, opened a minute ago.
        token = mint(site.form.secret, utcnow().timestamp() - 60, 8)
        values = {"form_token": token, "name": "A", "email": "a@example.org", "text": "x"}
        status, _, _ = await site.post(values)
        assert status == 303
    normalize(engine)
    with engine.connect() as conn:
        meta = conn.execute(select(Message.meta)).scalar_one()
    assert meta["web"]["work"] == "nojs"


async def test_per_address_limits_hold_and_no_script_posts_get_stricter_ones(
    engine: Engine,
) -> None:
    section = settings(per_address_burst=3, per_address_per_hour=0, nojs_per_address_burst=1,
                       nojs_per_address_per_hour=0)  # fmt: skip
    async with Site(engine, section) as site:
        answers = [(await site.send(address="203.0.113.5"))[0] for _ in range(4)]
        assert answers == [303, 303, 303, 429]
        # Another address is not limited by the first one's bucket.
        assert (await site.send(address="203.0.113.6"))[0] == 303
        # Without script: one per address here.
        nojs = [(await site.send(address="203.0.113.9", work=False))[0] for _ in range(2)]
        assert nojs == [303, 429]
    assert count(engine, Intake) == 5
    # The buckets are in the store, so every instance draws on the same ones.
    assert count(engine, AckBucket, AckBucket.key.like("webform:%")) >= 4


async def test_the_global_limit_holds_and_the_difficulty_rises_as_it_drains(
    engine: Engine,
) -> None:
    section = settings(global_burst=8, global_per_hour=0, pow_bits=4, pow_max_bits=10)
    async with Site(engine, section) as site:
        seen = []
        for i in range(9):
            token, bits = await site.page()
            seen.append(bits)
            values = {"form_token": token, "name": "A", "email": f"a{i}@example.org",
                      "text": "x", "work": stamp(token, bits)}  # fmt: skip
            status, _, _ = await site.post(values, address=f"192.0.2.{i + 1}")
            assert status == (303 if i < 8 else 429)
    # Worked out by hand: the bucket holds 8, 7, ... 1, 0 before each page; one bit more
    # per halving below 8: 8 -> 4, 7..5 -> 4 + floor(log2(8/level)) = 4, 4 -> 5, 3 -> 5,
    # 2 -> 6, 1 -> 7, 0 -> at most 10 (log2(8/0.5) = 4 -> 8).
    assert seen == [4, 4, 4, 4, 5, 5, 6, 7, 8]


async def test_fields_and_files_are_checked_and_errors_tied_to_their_inputs(
    engine: Engine,
) -> None:
    async with Site(engine) as site:
        status, html, _ = await site.send(email="not an address", text="")
        assert status == 400
        assert 'aria-describedby="email-hint email-error"' in html and 'id="email-error"' in html
        assert 'aria-describedby="text-error"' in html
        # What was typed comes back (but not the token or the work).
        assert 'value="not an address"' in html
        status, html, _ = await site.send(email="", phone="")
        assert status == 400 and "email address or a phone number" in html
        # A file is what its bytes are: an executable called .png is refused.
        status, html, _ = await site.send(files=[("cat.png", b"MZ\x90\0" + bytes(60), "image/png")])
        assert status == 400 and 'id="files-error"' in html
        too_many = [(f"{i}.png", PNG, "image/png") for i in range(6)]
        status, html, _ = await site.send(files=too_many)
        assert status == 400 and "At most 5" in html
    assert count(engine, Intake) == 0


async def test_an_oversized_file_is_refused_before_it_is_read_whole(engine: Engine) -> None:
    async with Site(engine, settings(max_attachment_bytes=2048)) as site:
        status, html, _ = await site.send(files=[("big.png", PNG + bytes(10_000), "image/png")])
    assert status == 413
    assert "too large" in html and "2 KB" in html
    assert count(engine, Intake) == 0


def test_the_difficulty_reads_the_stored_global_bucket(engine: Engine) -> None:
    section = settings(global_burst=16, pow_bits=10, pow_max_bits=14)
    bucket = limits.global_bucket(section)
    now = utcnow()
    assert limits.level(engine, bucket, now) == 16
    for _ in range(12):
        assert limits.take(engine, [bucket], now) is None
    assert limits.level(engine, bucket, now) == 4
    # Refilled at global_per_hour: half an hour later 300 more (capped at the burst).
    assert limits.level(engine, bucket, now + timedelta(minutes=30)) == 16
    with engine.begin() as conn:
        conn.execute(update(AckBucket).where(AckBucket.key == bucket.key).values(tokens=1.0))
    assert limits.level(engine, bucket, now) == 1
