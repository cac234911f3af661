"""The alert webhook's way out: a signed JSON POST per outbox row (inbox/alerts.py queues them).

A `ChannelSender` like every channel's, so alerts get the outbox's states, attempts, retry
curve and crash recovery: 408, 425, 429 and 5xx and network errors are retried with backoff,
any other 4xx fails the row at once. The body is sent exactly as stored and signed with
HMAC-SHA256 under the secret from the environment (`X-Parity-Signature: sha256=<hex>`);
`X-Parity-Delivery` carries the row's id, so a receiver can drop the copy a resend after a
crash may bring (the row is then `resend_safe`, like email's Message-ID).
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from connectors.outbox import Failure, Permanent, http_retriable
from inbox.alerts import SIGNATURE_HEADER, WEBHOOK_CHANNEL, signature
from inbox.outbox import Claimed
from inbox.secrets import Secret

TIMEOUT_S = 10.0
# The most of a receiver's answer we read (only to describe an error).
MAX_ANSWER = 2048


class HttpStatus(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


def url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be used, or None. http only for this machine's receivers."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "the webhook URL must be http(s)://host/..."
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme == "http" and not local:
        return "the webhook URL must be https (http only on this machine)"
    return None


class WebhookSender:
    channel = WEBHOOK_CHANNEL
    # Receivers deduplicate on X-Parity-Delivery: a resend after a crash is safe.
    resend_safe = True

    def __init__(self, secret: Secret, timeout_s: float = TIMEOUT_S) -> None:
        self.secret = secret
        self.timeout_s = timeout_s

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        return None

    def send(self, row: Claimed) -> str | None:
        problem = url_problem(row.recipient)
        if problem:
            raise Permanent(problem)
        body = row.body.encode()
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
            row.recipient,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "Parity-Alerts",
                SIGNATURE_HEADER: signature(self.secret.reveal().encode(), body),
                "X-Parity-Delivery": str(row.id),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310
                answer.read(MAX_ANSWER)
                return f"webhook:{row.id}:{answer.status}"
        except urllib.error.HTTPError as exc:
            text = exc.read(MAX_ANSWER).decode("utf-8", "replace")[:200]
            raise HttpStatus(exc.code, text) from exc

    def classify(self, exc: BaseException) -> tuple[bool, str] | Failure:
        if isinstance(exc, HttpStatus):
            return http_retriable(exc.status), str(exc)
        if isinstance(exc, Permanent):
            return False, str(exc)
        if isinstance(exc, urllib.error.URLError | OSError | socket.timeout | TimeoutError):
            return True, f"{type(exc).__name__}: {exc}"
        return False, f"{type(exc).__name__}: {exc}"
