"""The form's own tokens, the proof of work and the difficulty rule. Pure functions.

One signed token does three jobs: it is the form's CSRF token (only a page we served holds
one), the proof-of-work challenge (the work is over the token, so it cannot be done ahead
of time for another form), and, hashed, the submission's intake key (a double click or a
replayed post is the same submission, stored once).

A token is `<issued unix seconds>.<random>.<bits>.<mac>`, the mac an HMAC-SHA256 with the
server secret over the rest. Nothing about it is stored: an instance that never saw the form
checks it all the same. Comparisons of secrets go through `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass

_TOKEN = re.compile(r"(\d{1,12})\.([A-Za-z0-9_-]{22,64})\.(\d{1,2})\.([0-9a-f]{64})")
_NONCE = re.compile(r"[0-9a-f]{1,32}")
_CONTEXT = b"parity-webform-v1"


class TokenError(ValueError):
    """The form token is missing, forged, too old or too young. `key` names the sentence for
    the person in the form's texts (connectors/webform/text.py), shown in the page's
    language; the English text is the exception's own."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(text)
        self.key = key


@dataclass(frozen=True)
class FormToken:
    raw: str
    issued: int
    bits: int


def _mac(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(
        secret, b"|".join((_CONTEXT, purpose.encode(), value.encode())), "sha256"
    ).hexdigest()


def mint(secret: bytes, now: float, bits: int, rand: str | None = None) -> str:
    """A new form token issued at `now` asking for `bits` of work."""
    body = f"{int(now)}.{rand or secrets.token_urlsafe(18)}.{bits}"
    return f"{body}.{_mac(secret, 'form', body)}"


def check(
    secret: bytes, token: str, now: float, max_age_s: float, min_age_s: float = 0
) -> FormToken:
    """The token's facts when we made it and it is between `min_age_s` and `max_age_s` old."""
    found = _TOKEN.fullmatch(token or "")
    if found is None:
        raise TokenError("token_missing", "the form's security token is missing: reload the page")
    body = token.rsplit(".", 1)[0]
    if not hmac.compare_digest(_mac(secret, "form", body), found.group(4)):
        raise TokenError("token_foreign", "the form's security token is not ours: reload the page")
    issued = int(found.group(1))
    age = now - issued
    if age > max_age_s or age < -60:  # a minute of clock skew between instances
        raise TokenError(
            "token_expired",
            "the form was open too long and its security token expired: send it again",
        )
    if age < min_age_s:
        raise TokenError(
            "too_fast",
            "the form was sent faster than a person can fill it in: wait a moment and send it "
            "again",
        )
    return FormToken(token, issued, int(found.group(3)))


def leading_zero_bits(digest: bytes) -> int:
    """How many zero bits `digest` starts with (for the tests and the bench; not a check)."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def work_ok(challenge: str, nonce: str, bits: int) -> bool:
    """Whether SHA-256(challenge ":" nonce) starts with `bits` zero bits.

    Its time does not depend on where the digest differs: the whole bytes are compared with
    compare_digest and the last partial byte by a mask, so the check says nothing about how
    near a wrong nonce came.
    """
    if _NONCE.fullmatch(nonce or "") is None:
        return False
    digest = hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()
    whole, rest = divmod(bits, 8)
    ok = hmac.compare_digest(digest[:whole], bytes(whole))
    mask = (0xFF << (8 - rest)) & 0xFF
    return ok & (digest[whole] & mask == 0 if whole < len(digest) else True)


def solve(challenge: str, bits: int, start: int = 0) -> str:
    """A nonce for `challenge` (the browser's work, done here for tests and the bench)."""
    n = start
    while not work_ok(challenge, format(n, "x"), bits):
        n += 1
    return format(n, "x")


def difficulty(base_bits: int, max_bits: int, level: float, burst: int) -> int:
    """The bits asked of the next form: `base_bits`, plus one for each halving of the
    global bucket below its burst (full: base; half empty: +1; a quarter left: +2), at most
    `max_bits`. Under a flood each post costs a sender twice the work of the one before
    it, while people who fill in a form now and then never notice."""
    if level >= burst:
        return base_bits
    extra = math.floor(math.log2(burst / max(level, 0.5)))
    return min(max_bits, base_bits + max(0, extra))


def submission_id(secret: bytes, token: str) -> str:
    """The submission's id (its `web` identity's handle) from its token: stable, so a replay
    of one post is the same submission; not the token, so the handle reveals no token."""
    return "f-" + _mac(secret, "submission", token)[:24]


def followup_id(secret: bytes, reference: str) -> str:
    """The `web` identity of whoever writes on a case's status page when no form opened it."""
    return "s-" + _mac(secret, "status", reference)[:24]


def received_key(secret: bytes, sid: str) -> str:
    """The key of the "received" page of a submission: only its sender was given it."""
    return _mac(secret, "received", sid)[:32]


def confirm_code(secret: bytes, sid: str, handle: str, digits: int = 0) -> str:
    """The confirmation of `handle` for submission `sid`: a link's key, or with `digits` a
    code to type (sent by SMS). Derived, not stored: nothing to steal from the store."""
    mac = _mac(secret, "confirm", f"{sid}|{handle}")
    if digits:
        return str(int(mac, 16) % 10**digits).zfill(digits)
    return mac[:32]


def same(a: str, b: str) -> bool:
    """Secrets compared in constant time (of the shorter's length)."""
    return hmac.compare_digest(a.encode(), b.encode())


# --- attachments: the type is what the bytes are, never what the browser says ---------------

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)


def sniff(data: bytes) -> str | None:
    """The content type the file's first bytes show, or None for one we do not know."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data and b"\0" not in data[:8192]:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return "text/plain"
    return None
