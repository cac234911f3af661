"""The Graph API, as far as Parity uses it, and what its errors mean. Blocking (requests):
senders and the media fetcher run in threads.

Error codes (Graph API and WhatsApp Cloud API references) and what we do:
- 4, 17, 32, 613, 80007, 130429, 131048, 131056: rate limits. Nothing was sent; the row
  goes back uncounted and the channel pauses.
- 190 (and 102, 463, 467): the token expired or was revoked. Nothing can be sent until a
  person renews it: the channel stops, its status says why.
- 131047: WhatsApp refused free text, the customer's last message is over 24 hours old.
- 131026: the message cannot be delivered to this number (no WhatsApp, an old app).
- 10 with subcode 2018278, 551, 2018108: Messenger's window closed, or the person cannot
  be reached. Failed with the reason: sending again would be refused the same way.
- 1, 2 and HTTP 5xx: Meta's own trouble; retried on the outbox curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from connectors.meta.settings import MetaSettings
from inbox.secrets import Secret

RATE_LIMITS = frozenset({4, 17, 32, 613, 80007, 130429, 131048, 131056})
TOKEN_INVALID = frozenset({102, 190, 463, 467})
TRANSIENT = frozenset({1, 2, 131000, 131016})
# Subcodes and codes that say one person cannot be reached this way now.
WINDOW_CLOSED = frozenset({2018278, 2018108, 10})
UNREACHABLE = frozenset({551, 131026, 131047})


@dataclass
class GraphError(Exception):
    """A Graph API error answer (or a transport failure: status 0)."""

    status: int
    code: int | None
    subcode: int | None
    message: str
    # The request may have reached Meta (a read timeout): resending could send twice.
    unsure: bool = False

    def __str__(self) -> str:
        code = f" code {self.code}" if self.code is not None else ""
        sub = f"/{self.subcode}" if self.subcode is not None else ""
        return f"Graph API {self.status or 'unreachable'}{code}{sub}: {self.message}"[:500]


def error_of(status: int, body: Any) -> GraphError:
    """A Graph error answer to a GraphError; anything unreadable keeps its HTTP status."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return GraphError(status, None, None, "no error body")
    code, sub = error.get("code"), error.get("error_subcode")
    data = error.get("error_data")
    detail = data.get("details") if isinstance(data, dict) else None
    text = str(error.get("message") or "")
    if detail and str(detail) not in text:
        text += f" ({detail})"
    return GraphError(
        status,
        code if isinstance(code, int) else None,
        sub if isinstance(sub, int) else None,
        text[:400],
    )


class Graph:
    """A few Graph API calls with one token; `settings` gives the base URL and version."""

    def __init__(self, settings: MetaSettings, token: Secret) -> None:
        self.settings = settings
        self.token = token
        self.session = requests.Session()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = self.settings.graph_url(path)
        headers = {"Authorization": f"Bearer {self.token.reveal()}"}
        try:
            response = self.session.request(
                method, url, headers=headers, timeout=self.settings.timeout_s, **kwargs
            )
        except requests.ConnectTimeout as exc:
            raise GraphError(0, None, None, f"connect timeout: {exc}") from exc
        except requests.ConnectionError as exc:
            # Refused or unreachable: the request never got to Meta.
            raise GraphError(0, None, None, f"connection failed: {exc}") from exc
        except requests.Timeout as exc:
            raise GraphError(0, None, None, f"no answer in time: {exc}", unsure=True) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or (isinstance(body, dict) and "error" in body):
            raise error_of(response.status_code, body)
        if not isinstance(body, dict):
            raise GraphError(response.status_code, None, None, "answer is not a JSON object")
        return body

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, json=payload)

    def post_file(
        self,
        path: str,
        fields: dict[str, str],
        field: str,
        filename: str,
        content_type: str,
        data: bytes,
    ) -> dict[str, Any]:
        """A multipart/form-data POST with one file (WhatsApp's media upload, Messenger's
        attachment upload): the only way the Graph API takes bytes from us."""
        return self._call("POST", path, data=fields, files={field: (filename, data, content_type)})

    def get(self, path: str, **params: str) -> dict[str, Any]:
        return self._call("GET", path, params=params)

    def download(self, url: str, max_bytes: int) -> tuple[str, bytes]:
        """A media file's bytes (the URL from the media id's lookup), bounded."""
        token = self.token.reveal()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = self.session.get(
                url, headers=headers, timeout=self.settings.timeout_s, stream=True
            )
        except requests.RequestException as exc:
            raise GraphError(0, None, None, f"media download failed: {exc}") from exc
        with response:
            if response.status_code >= 400:
                raise GraphError(response.status_code, None, None, "media download refused")
            data = response.raw.read(max_bytes + 1, decode_content=True)
        if len(data) > max_bytes:
            raise GraphError(response.status_code, None, None, f"media over {max_bytes} bytes")
        return response.headers.get("Content-Type", "application/octet-stream"), data
