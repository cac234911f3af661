"""Signed, expiring URLs for the files of an agent's reply, for a platform that fetches a
file from a URL we give it instead of taking the bytes from us: Twilio (an MMS's
`MediaUrl`) and Instagram Direct (an attachment's `payload.url`). The platform cannot log
in, so the URL itself is the permission. One mechanism, one route handler; each connector
mounts it at its own path, with its own key.

A URL names one blob by its sha256, the content type it is served with, and when it stops
working, and carries an HMAC-SHA256 over exactly those: changing any of them, or using it
after its time, gets the same 404 as a blob that does not exist (nothing to tell a guesser
which it was). The key is derived from a secret that both the sender (that makes the URL)
and the listener (that checks it) already hold (Twilio's auth token, Meta's app secret),
under a fixed context per connector, so the secret itself never signs a URL and a URL made
for one connector's path is refused at another's. Only a file of one of our outbound
messages is ever served: a signed URL is never a way to any other blob.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from datetime import datetime
from urllib.parse import quote, urlencode

from aiohttp import web
from sqlalchemy import Engine, select

from inbox.db import read
from inbox.models import Attachment, Blob, Message, utcnow
from inbox.secrets import Secret
from inbox.uploads import declared_type
from inbox.web.routes import Route

log = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{64}$")


def media_key(secret: Secret, context: bytes) -> bytes:
    """The URL-signing key: `secret` under a fixed `context` (an HMAC as a KDF), so a
    signature made here can be nothing else the secret signs."""
    return hmac.new(secret.reveal().encode(), context, hashlib.sha256).digest()


def _signature(key: bytes, sha256: str, content_type: str, expires: int) -> str:
    message = f"{sha256}\n{content_type}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_url(
    base: str,
    path: str,
    key: bytes,
    sha256: str,
    content_type: str,
    now: datetime,
    ttl_s: int,
) -> str:
    """The public URL of one blob under `base` + `path` (which has a `{sha256}` field),
    good for `ttl_s` seconds from `now`."""
    kind = declared_type(content_type)
    expires = int(now.timestamp()) + ttl_s
    query = urlencode(
        {"type": kind, "expires": expires, "sig": _signature(key, sha256, kind, expires)}
    )
    return f"{base.rstrip('/')}{path.format(sha256=quote(sha256))}?{query}"


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


def reply_file(engine: Engine, sha: str) -> bytes | None:
    """The bytes of `sha` if it is a file of one of our outbound messages (an agent's
    reply), else None."""
    with read(engine) as conn:
        found = conn.execute(
            select(Blob.data)
            .join(Attachment, Attachment.sha256 == Blob.sha256)
            .join(Message, Message.id == Attachment.message_id)
            .where(Blob.sha256 == sha, Message.direction == "outbound")
            .limit(1)
        ).scalar_one_or_none()
        conn.rollback()
    return bytes(found) if found is not None else None


class ReplyFiles:
    """The GET route that serves a reply's files at signed URLs, for one connector."""

    def __init__(self, engine: Engine, key: bytes, path: str, tag: str, summary: str) -> None:
        self.engine = engine
        self.key = key
        self.path = path
        self.tag = tag
        self.summary = summary

    def route(self) -> Route:
        return Route(
            "GET",
            self.path,
            self.serve,
            self.summary,
            self.tag,
            auth="signature",
            kind="file",
            responses={200: "the file", 404: "no such file, or the URL is bad or expired"},
            in_openapi=False,
        )

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """One file, for the platform to fetch: no login, the URL's HMAC is the permission."""
        sha = request.match_info["sha256"]
        kind = request.query.get("type", "")
        why = check(
            self.key,
            sha,
            kind,
            request.query.get("expires", ""),
            request.query.get("sig", ""),
            utcnow(),
        )
        data = None if why else await asyncio.to_thread(reply_file, self.engine, sha)
        if data is None:
            log.warning(
                "%s media %s: refused (%s)", self.tag, sha[:12], why or "not a reply's file"
            )
            raise web.HTTPNotFound(text="not found")
        return web.Response(
            body=data,
            content_type=kind,
            headers={
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "private, no-store",
                "Content-Disposition": "attachment",
            },
        )
