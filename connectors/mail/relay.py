"""Email out: outbox rows become RFC 5322 messages, delivered through the configured SMTP relay.

Headers are built with the email package (EmailMessage, policy.SMTP), never by pasting
strings. Every value that came from inbound mail (the display name, the subject, Message-IDs)
is cleaned of control characters first, and the email package refuses CR/LF in any header
value as well, so inbound mail can never add a header to ours (header injection).

Email is at-least-once: each row gets its Message-ID when it is first claimed, before any
attempt, and keeps it, so a resend after a crash is a copy that receivers drop.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import smtplib
import socket
import ssl
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from connectors.config import EmailRelaySettings, OutboxSettings
from connectors.outbox import Permanent, Retriable
from inbox.models import utcnow
from inbox.outbox import Claimed
from inbox.secrets import Secret, from_env
from normalizer.acks import header_text
from normalizer.mail import OWN_HEADER
from normalizer.threads import own_message_id

# A Message-ID we repeat in In-Reply-To/References: printable ASCII, no spaces or brackets.
_SAFE_ID = re.compile(r"^[\x21-\x3b\x3d\x3f-\x7e]{1,250}$")
# 5xx replies that mean our credentials or TLS set-up are wrong, not the message: an operator
# can fix them, so they are retried (within max_attempts) instead of failing every row.
_CONFIG_CODES = frozenset({530, 534, 535, 538})


def relay_availability(outbox: OutboxSettings) -> tuple[bool, str | None]:
    """Whether email can be sent (acknowledgements, replies), and why not."""
    relay = outbox.email
    if not relay.enabled:
        return False, "disabled in settings"
    if not relay.host:
        return False, "no relay configured ([outbox.email] host); email stays queued"
    return True, None


def safe_ids(ids: list[str] | tuple[str, ...]) -> list[str]:
    return [i for i in ids if isinstance(i, str) and _SAFE_ID.match(i)]


def compose_email(
    row: Claimed, relay: EmailRelaySettings, now: datetime | None = None
) -> EmailMessage:
    """The message for one outbox row. Raises Permanent when the recipient can't be addressed."""
    if not row.message_id_header:
        raise Permanent("no Message-ID was assigned to this row")
    from_name, from_addr = parseaddr(relay.from_address)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=header_text(from_name, 80), addr_spec=from_addr)
    try:
        to = Address(
            display_name=header_text(str(row.payload.get("to_name") or ""), 80),
            addr_spec=row.recipient,
        )
        msg["To"] = to
    except Exception as exc:  # the email package raises several types for a bad addr-spec
        raise Permanent(f"cannot address {row.recipient!r}: {exc}") from exc
    msg["Subject"] = header_text(row.subject, 250)
    msg["Date"] = format_datetime(now or utcnow())
    msg["Message-ID"] = f"<{row.message_id_header}>"
    in_reply_to = safe_ids([str(row.payload.get("in_reply_to") or "")])
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to[0]}>"
    references = safe_ids(list(row.payload.get("references") or []))
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if row.case_reference:
        # Marks our own mail: if it ever comes back to us it is never acknowledged in turn.
        msg[OWN_HEADER] = row.case_reference
    if row.kind == "ack":
        # RFC 3834: an automatic response says so, so other responders don't answer it, and
        # Exchange is asked not to send its out-of-office replies to it.
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    elif row.kind in ("confirm", "survey", "alert"):
        # A contact form's confirmation link, a satisfaction survey and a manager's alert
        # are machine-made, not replies to a mail.
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(row.body)
    return msg


def serialize(msg: EmailMessage) -> bytes:
    """The message's bytes, refused if its header block holds any header we did not set.

    A second line of defence against header injection that does not depend on how well the
    running Python's email package guards its own output.
    """
    data = msg.as_bytes(policy=policy.SMTP)
    head = data.split(b"\r\n\r\n", 1)[0]
    written = sorted(
        line.split(b":", 1)[0].decode("ascii", "replace").lower()
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    )
    expected = sorted(name.lower() for name in msg)
    if written != expected:
        extra = sorted(set(written) - set(expected)) or written
        raise Permanent(f"refused: the message would carry headers we did not set: {extra}")
    return data


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "parity.localhost"


class SmtpRelaySender:
    """Sends email rows through one SMTP relay, with STARTTLS and AUTH when configured."""

    channel = "email"
    resend_safe = True

    def __init__(self, relay: EmailRelaySettings, environ: dict[str, str] | None = None) -> None:
        self.relay = relay
        self.password: Secret | None = (
            from_env(relay.password_env, environ) if relay.username else None
        )
        self.domain = _domain(relay.from_address)

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        unique = f"{row_id}.{secrets.token_hex(6)}"
        if reference and token:
            # Carries the case and its token: a reply that keeps only References (or only
            # In-Reply-To) still proves it belongs to the case.
            return own_message_id(reference, token, unique, self.domain)
        return f"parity.{unique}@{self.domain}"

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.relay.ca_file or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _connect(self) -> smtplib.SMTP:
        relay = self.relay
        helo = relay.helo_name or socket.getfqdn()
        if relay.security == "implicit":
            return smtplib.SMTP_SSL(
                relay.host,
                relay.port,
                local_hostname=helo,
                timeout=relay.timeout_s,
                context=self._tls(),
            )
        return smtplib.SMTP(relay.host, relay.port, local_hostname=helo, timeout=relay.timeout_s)

    def send(self, row: Claimed) -> str | None:
        relay = self.relay
        if not relay.host:
            raise Retriable("no relay configured ([outbox.email] host)")
        msg = compose_email(row, relay)
        envelope_from = parseaddr(relay.envelope_from or relay.from_address)[1]
        data = serialize(msg)
        international = not (envelope_from + row.recipient).isascii()
        conn = self._connect()
        try:
            conn.ehlo()
            if relay.security == "starttls":
                if not conn.has_extn("starttls"):
                    # Never fall back to plain text: that is what a downgrade attack wants.
                    raise Retriable("the relay did not offer STARTTLS; not sending in the clear")
                conn.starttls(context=self._tls())
                conn.ehlo()
            if relay.username:
                if self.password is None:
                    raise Retriable(f"no relay password: {relay.password_env} is not set")
                conn.login(relay.username, self.password.reveal())
            options: list[str] = []
            if international:
                if not conn.has_extn("smtputf8"):
                    raise Permanent("the address needs SMTPUTF8 and the relay does not offer it")
                options.append("SMTPUTF8")
            code, reply = conn.mail(envelope_from, options)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, envelope_from)
            code, reply = conn.rcpt(row.recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({row.recipient: (code, reply)})
            code, reply = conn.data(data)
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
        except BaseException:
            conn.close()
            raise
        # Accepted: nothing after this point may turn the row into a failure.
        with contextlib.suppress(Exception):
            conn.quit()
        return reply.decode("utf-8", "replace")[:250] or None

    def classify(self, exc: BaseException) -> tuple[bool, str]:
        return classify_smtp(exc)


def classify_smtp(exc: BaseException) -> tuple[bool, str]:
    """(retriable, description): 4xx, timeouts and lost connections may pass; 5xx will not."""
    if isinstance(exc, Retriable):
        return True, str(exc)
    if isinstance(exc, Permanent):
        return False, str(exc)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()), (0, b""))
        return _by_code(code, reply, "recipient refused")
    if isinstance(exc, smtplib.SMTPConnectError):
        # A greeting refusal is about the relay and us, never about this message.
        return True, f"relay refused the connection: {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return _by_code(exc.smtp_code, exc.smtp_error, type(exc).__name__)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True, f"relay closed the connection: {exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return True, f"timed out: {exc or 'no answer from the relay'}"
    if isinstance(exc, ssl.SSLError):
        return True, f"TLS failed: {exc}"
    if isinstance(exc, OSError):  # refused, unreachable, reset, name resolution
        return True, f"connection failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, smtplib.SMTPException):
        return True, f"{type(exc).__name__}: {exc}"
    return False, f"{type(exc).__name__}: {exc}"


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return header_text(text, 300)


def _by_code(code: int, reply: bytes | str, what: str) -> tuple[bool, str]:
    text = f"{code} {_text(reply)}"
    if 400 <= code < 500:
        return True, f"{what}, temporary: {text}"
    if code in _CONFIG_CODES:
        return True, f"relay refused our credentials or TLS set-up: {text}"
    if 500 <= code < 600:
        return False, f"{what}, permanent: {text}"
    return True, f"{what}, unexpected reply: {text}"
