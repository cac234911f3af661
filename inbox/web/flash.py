"""One-shot page messages ("flash") carried across a POST/redirect/GET in a cookie.

The message rides in a cookie rather than the redirect's query string, so a link someone
sends an agent cannot make our page say something we did not say. The cookie is bound to
the session by an HMAC keyed with the session's CSRF token: a cookie planted by anyone who
does not know the token (a sibling subdomain, say) is dropped, not shown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Literal

from aiohttp import web

from inbox.web.app import PRINCIPAL, context

FLASH_COOKIE = "parity_flash"
Kind = Literal["ok", "error"]
# A cookie holds about 4 KB; store messages are one sentence.
_MAX_TEXT = 1000


def _sign(key: str, payload: str) -> str:
    return hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()[:32]


def _key(request: web.Request) -> str | None:
    found = request.get(PRINCIPAL)
    return found.csrf_token if found is not None else None


def encode(key: str, kind: Kind, text: str) -> str:
    raw = json.dumps({"kind": kind, "text": text[:_MAX_TEXT]}, ensure_ascii=False)
    payload = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    return f"{payload}.{_sign(key, payload)}"


def decode(key: str, value: str) -> dict[str, str] | None:
    """The message in a cookie value, or None when it is not ours or not this session's."""
    payload, _, signature = value.partition(".")
    if not signature or not hmac.compare_digest(signature, _sign(key, payload)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("kind") not in ("ok", "error"):
        return None
    return {"kind": str(data["kind"]), "text": str(data.get("text", ""))}


def redirect(request: web.Request, location: str, kind: Kind, text: str) -> web.HTTPSeeOther:
    """A 303 to `location` that shows `text` once on the page it lands on."""
    response = web.HTTPSeeOther(location)
    key = _key(request)
    if key:
        settings = context(request).settings
        response.set_cookie(
            FLASH_COOKIE,
            encode(key, kind, text),
            path="/",
            httponly=True,
            secure=settings.cookie_secure,
            samesite=settings.cookie_samesite,
        )
    return response


def take(request: web.Request) -> dict[str, str] | None:
    """The message waiting for this page, if any (the caller clears it with `clear`)."""
    value = request.cookies.get(FLASH_COOKIE)
    key = _key(request)
    if not value or not key:
        return None
    return decode(key, value)


def clear(request: web.Request, response: web.StreamResponse) -> None:
    if FLASH_COOKIE in request.cookies:
        settings = context(request).settings
        response.del_cookie(
            FLASH_COOKIE,
            path="/",
            secure=settings.cookie_secure,
            httponly=True,
            samesite=settings.cookie_samesite,
        )
