"""Signed, expiring URLs for the files of an MMS reply: Twilio fetches media from a URL we
give it (`MediaUrl`), and cannot log in, so the URL itself is the permission.

A URL names one blob by its sha256, the content type it is served with, and when it stops
working, and carries an HMAC-SHA256 over exactly those: changing any of them, or using it
after its time, gets the same 404 as a blob that does not exist (nothing to tell a guesser
which it was). The key is derived from the Twilio auth token, which both the sender (that
makes the URL) and the listener (that checks it) already hold, under a fixed context, so
the token itself is never what signs a URL. Pure functions; the route is in intake.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime
from urllib.parse import quote, urlencode

from inbox.secrets import Secret
from inbox.uploads import declared_type

PATH = "/twilio/media/{sha256}"
_SHA = re.compile(r"^[0-9a-f]{64}$")
_CONTEXT = b"parity twilio mms media url v1"


def media_key(auth_token: Secret) -> bytes:
    """The URL-signing key: the auth token under a fixed context (an HMAC as a KDF), so a
    signature made here can be nothing else Twilio's token signs."""
    return hmac.new(auth_token.reveal().encode(), _CONTEXT, hashlib.sha256).digest()


def _signature(key: bytes, sha256: str, content_type: str, expires: int) -> str:
    message = f"{sha256}\n{content_type}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_url(
    base: str, key: bytes, sha256: str, content_type: str, now: datetime, ttl_s: int
) -> str:
    """The public URL of one blob, good for `ttl_s` seconds from `now`."""
    kind = declared_type(content_type)
    expires = int(now.timestamp()) + ttl_s
    query = urlencode(
        {"type": kind, "expires": expires, "sig": _signature(key, sha256, kind, expires)}
    )
    return f"{base.rstrip('/')}{PATH.format(sha256=quote(sha256))}?{query}"


def check(
    key: bytes, sha256: str, content_type: str, expires: str, signature: str, now: datetime
) -> str | None:
    """Why a request for a blob is refused, or None when its URL is ours and still good.
    The reason is for the log only: every refusal answers the same 404."""
    if not _SHA.match(sha256):
        return "not a sha256"
    if declared_type(content_type) != content_type:
        return "not a content type"
    if not expires.isdigit() or len(expires) > 12:
        return "no expiry"
    expected = _signature(key, sha256, content_type, int(expires))
    # Compared in constant time: a signature is never found a byte at a time.
    if not hmac.compare_digest(expected.encode(), signature.encode()[:128]):
        return "bad signature"
    if int(expires) < now.timestamp():
        return "expired"
    return None
