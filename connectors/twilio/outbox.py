"""Twilio: SMS out through the shared outbox (acknowledgements of calls go out as SMS too).

A number that texted STOP gets nothing: the sender reads the opt-out state the webhooks
keep (connectors/twilio/intake.py) before every send.

A reply with files goes as one MMS: Twilio fetches each file from a `MediaUrl` we give it,
which is a signed URL on our own listener (`public_url` + /twilio/media/..., see
connectors/media_url.py), good for `media_url_ttl_s`. Twilio takes at most 10 media and
5 MB in all per message; a reply over that is refused with the reason, never sent without
its files.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from connectors.media_url import media_key, signed_url
from connectors.outbox import Lookup, OutboxDrainer, Permanent, Retriable, http_retriable
from connectors.twilio.intake import MEDIA_CONTEXT, MEDIA_PATH, opted_out
from connectors.twilio.parse import normalise_number
from connectors.twilio.settings import TwilioSettings
from inbox.models import utcnow
from inbox.outbox import Claimed
from inbox.secrets import Secret

# Twilio's bounds on one MMS: 10 media, 5 MB together.
MAX_MEDIA = 10
MAX_MEDIA_BYTES = 5 * 1024 * 1024


def make_client(settings: TwilioSettings, sid: str, token: Secret) -> Client:
    client = Client(sid, token.reveal())
    base = settings.api_base_url.rstrip("/")
    if base and base != "https://api.twilio.com":
        # Every domain's base URL points at the configured API (a fake, in tests).
        client.api.base_url = base
    return client


class TwilioSmsSender:
    """Sends outbox rows of one channel (sms, or voice: a caller is answered by text)."""

    resend_safe = False  # an SMS has no id a handset could drop a copy by

    def __init__(
        self,
        channel: str,
        settings: TwilioSettings,
        client: Client,
        engine: Engine,
        *,
        status_callback: bool = True,
        auth_token: Secret | None = None,
    ) -> None:
        self.channel = channel
        # Signs the MediaUrl of an MMS reply's files; None: files cannot be sent.
        self.media_key = media_key(auth_token, MEDIA_CONTEXT) if auth_token is not None else None
        self.settings = settings
        self.client = client
        self.engine = engine
        self.status_callback = (
            settings.public_url.rstrip("/") + "/twilio/status"
            if status_callback and settings.public_url
            else None
        )

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        return None

    def send(self, row: Claimed) -> str | None:
        number = normalise_number(row.recipient)
        if number is None:
            raise Permanent(f"{row.recipient!r} is not an E.164 number")
        if opted_out(self.engine, number):
            raise Permanent("the number opted out (STOP); nothing is sent to it")
        kwargs: dict[str, Any] = {
            "to": number,
            "from_": self.settings.from_number,
            "body": row.body,
        }
        if self.status_callback:
            kwargs["status_callback"] = self.status_callback
        if row.files:
            kwargs["media_url"] = self.media_urls(row)
        message = self.client.messages.create(**kwargs)
        return str(message.sid)

    def media_urls(self, row: Claimed) -> list[str]:
        """The signed URLs Twilio fetches the row's files from; Permanent where it cannot."""
        if self.media_key is None or not self.settings.public_url:
            raise Permanent(
                "an MMS needs connectors.twilio.public_url: Twilio fetches the files from it"
            )
        if len(row.files) > MAX_MEDIA:
            raise Permanent(f"an MMS takes at most {MAX_MEDIA} files")
        total = sum(len(f.data) for f in row.files)
        if total > MAX_MEDIA_BYTES:
            raise Permanent(f"the files come to {total} bytes; an MMS takes {MAX_MEDIA_BYTES}")
        now = utcnow()
        return [
            signed_url(
                self.settings.public_url,
                MEDIA_PATH,
                self.media_key,
                hashlib.sha256(f.data).hexdigest(),
                f.content_type,
                now,
                self.settings.media_url_ttl_s,
            )
            for f in row.files
        ]

    def classify(self, exc: BaseException) -> tuple[bool, str]:
        if isinstance(exc, Permanent):
            return False, str(exc)
        if isinstance(exc, Retriable):
            return True, str(exc)
        if isinstance(exc, TwilioRestException):
            return http_retriable(exc.status), f"Twilio {exc.status} {exc.code}: {exc.msg}"
        return True, f"{type(exc).__name__}: {exc}"

    # Twilio's message list shows every message we sent: absent there means never sent.
    resend_if_absent = True

    def reconcile(self, row: Claimed) -> Lookup:
        """A message to the row's number with its body, sent around its attempt, if Twilio
        has one: a row left "sending" by a crash is looked up before any retry."""
        since = (row.created_at or utcnow()) - timedelta(minutes=5)
        for message in self.client.messages.list(
            to=row.recipient, from_=self.settings.from_number, date_sent_after=since, limit=50
        ):
            if (message.body or "") == row.body:
                return Lookup(str(message.sid))
        return Lookup(None)


# The shared drainer now looks unknown rows up through `TwilioSmsSender.reconcile`; the name
# stays for the daemon's wiring.
TwilioDrainer = OutboxDrainer
