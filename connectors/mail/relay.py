"""Email out: outbox rows become RFC 5322 messages, delivered through the configured SMTP relay.

Headers are built with the email package (EmailMessage, policy.SMTP), never by pasting
strings. Every value that came from inbound mail (the display name, the subject, Message-IDs)
is cleaned of control characters first, and the email package refuses CR/LF in any header
value as well, so inbound mail can never add a header to ours (header injection).

Email is at-least-once: each row gets its Message-ID when it is first claimed, before any
attempt, and keeps it, so a resend after a crash is a copy that receivers drop.
"""

from __future__ import annotations

import base64
import contextlib
import json
import mailbox
import re
import secrets
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

from connectors import oauth
from connectors.config import EmailRelaySettings, OutboxSettings
from connectors.outbox import Failure, Permanent, Retriable, http_retriable
from inbox import tokens
from inbox.delivery import CAPTURED_PREFIX
from inbox.models import utcnow
from inbox.outbox import Claimed
from inbox.references import bare_message_id
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
    if relay.capture_dir:
        # A trial: mail is written to a Maildir, and the pages say nobody receives it.
        return True, None
    if relay.transport == "smtp" and not relay.host:
        return False, "no relay configured ([outbox.email] host); email stays queued"
    return True, None


def safe_ids(ids: list[str] | tuple[str, ...]) -> list[str]:
    # An agent's reply keeps its ids in angle brackets (inbox.casework), an acknowledgement
    # without: both are the same id, and the brackets are ours to write.
    bare = (bare_message_id(i) for i in ids if isinstance(i, str))
    return [i for i in bare if _SAFE_ID.match(i)]


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
    cc = _copies(row.payload.get("cc"))
    if cc:
        msg["Cc"] = [Address(addr_spec=a) for a in cc]
    # BCC addresses are envelope recipients only (send): never a header anyone receives.
    msg["Subject"] = header_text(row.subject, 250)
    msg["Date"] = format_datetime(now or utcnow())
    msg["Message-ID"] = f"<{bare_message_id(row.message_id_header)}>"
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
    elif row.kind in ("confirm", "survey", "alert", "digest"):
        # A contact form's confirmation link, a satisfaction survey, a manager's alert and an
        # agent's notification digest are machine-made, not replies to a mail.
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(row.body)
    html = row.payload.get("html")
    if isinstance(html, str) and html:
        # The agent's Markdown as sanitized HTML (inbox.compose), the text above its
        # alternative for clients that show plain text.
        msg.add_alternative(html, subtype="html")
    for file in row.files:
        maintype, _, subtype = file.content_type.partition("/")
        if not maintype or not subtype:
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(
            file.data, maintype=maintype, subtype=subtype, filename=header_text(file.filename, 120)
        )
    return msg


def _copies(value: object) -> list[str]:
    """Addresses from a row's payload, each one a header can carry (checked when queued by
    inbox.compose; checked again here, since a header is the last line of defence)."""
    if not isinstance(value, list):
        return []
    found: list[str] = []
    for item in value:
        if isinstance(item, str) and "@" in item and not any(c in item for c in "\r\n,<>"):
            found.append(item)
    return found


def recipients(row: Claimed) -> list[str]:
    """Every envelope recipient of a row: To, then CC, then BCC, each once."""
    found = [row.recipient, *_copies(row.payload.get("cc")), *_copies(row.payload.get("bcc"))]
    return list(dict.fromkeys(found))


def capture(directory: str, data: bytes) -> str:
    """Write one message to a Maildir (created if missing) instead of sending it: its key."""
    box = mailbox.Maildir(directory, create=True)
    return str(box.add(data))


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

    def __init__(
        self,
        relay: EmailRelaySettings,
        environ: dict[str, str] | None = None,
        token_source: oauth.TokenSource | None = None,
    ) -> None:
        self.relay = relay
        self.password: Secret | None = (
            from_env(relay.password_env, environ)
            if relay.username and not relay.oauth_account
            else None
        )
        self.domain = _domain(relay.from_address)
        # The grant of [outbox.email] oauth_account (None: password AUTH, or none).
        self.token_source = token_source

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

    def _token(self) -> Secret:
        if self.token_source is None:
            raise NoGrant(f"no [[oauth.accounts]] entry named {self.relay.oauth_account!r}")
        try:
            return self.token_source.token()
        except (oauth.AuthFailed, tokens.KeyMissing, tokens.Undecryptable) as exc:
            # Someone has to act (authorize, set the key): hold the mail, don't fail it.
            raise NoGrant(str(exc)) from exc
        except oauth.Unreachable as exc:
            raise Retriable(f"token refresh: {exc}") from exc

    def send(self, row: Claimed) -> str | None:
        relay = self.relay
        if relay.capture_dir:
            key = capture(relay.capture_dir, serialize(compose_email(row, relay)))
            return f"{CAPTURED_PREFIX}, not sent: {key}"[:250]
        if relay.transport != "smtp":
            msg = compose_email(row, relay)
            return send_by_api(relay, serialize(msg), self._token, self.token_source)
        if not relay.host:
            raise Retriable("no relay configured ([outbox.email] host)")
        msg = compose_email(row, relay)
        envelope_from = parseaddr(relay.envelope_from or relay.from_address)[1]
        data = serialize(msg)
        to = recipients(row)
        international = not (envelope_from + "".join(to)).isascii()
        conn = self._connect()
        try:
            conn.ehlo()
            if relay.security == "starttls":
                if not conn.has_extn("starttls"):
                    # Never fall back to plain text: that is what a downgrade attack wants.
                    raise Retriable("the relay did not offer STARTTLS; not sending in the clear")
                conn.starttls(context=self._tls())
                conn.ehlo()
            if relay.oauth_account:
                self._xoauth2(conn)
            elif relay.username:
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
            for address in to:
                # Every copy must be taken: a reply that reached the customer but not the
                # colleague in CC is retried or failed as a whole, never half-sent quietly.
                code, reply = conn.rcpt(address)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({address: (code, reply)})
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

    def _xoauth2(self, conn: smtplib.SMTP) -> None:
        """AUTH XOAUTH2 with the grant's access token; a refused one is not offered again."""
        user = self.relay.username or parseaddr(self.relay.from_address)[1]
        token = self._token()

        def answer(challenge: bytes | None = None) -> str:
            # On failure the server sends a 334 with a JSON error and expects an empty line.
            return oauth.xoauth2(user, token) if challenge is None else ""

        try:
            conn.auth("XOAUTH2", answer, initial_response_ok=True)
        except smtplib.SMTPAuthenticationError:
            if self.token_source is not None:
                self.token_source.invalidate(token)
            raise

    def classify(self, exc: BaseException) -> tuple[bool, str] | Failure:
        return classify_send(exc)


def classify_send(exc: BaseException) -> tuple[bool, str] | Failure:
    """classify_smtp, and what the OAuth2 sign-in and the providers' APIs add to it."""
    if isinstance(exc, NoGrant):
        return Failure(True, f"mailbox sign-in failed: {exc}", pause_s=NO_GRANT_PAUSE_S)
    if isinstance(exc, ApiStatus):
        if http_retriable(exc.status) or exc.status in (401, 403):
            # 401: the token expired early (refreshed on the next try); 403: a scope or
            # permission an operator can grant. Retried within max_attempts, like SMTP 535.
            return True, str(exc)
        return False, str(exc)
    if isinstance(exc, urllib.error.URLError):
        return True, f"connection failed: {exc.reason}"
    return classify_smtp(exc)


class NoGrant(Exception):
    """The OAuth2 grant is dead or missing: nothing is sent until someone authorizes again."""


# How long the relay waits before trying a row again when its grant is dead: the row is
# not attempted (not counted); `parity mailbox authorize` fixes it meanwhile.
NO_GRANT_PAUSE_S = 300.0
MAX_API_ANSWER_BYTES = 64 * 1024


class ApiStatus(Exception):
    def __init__(self, status: int, text: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {text}")


def api_request(relay: EmailRelaySettings, data: bytes) -> tuple[str, bytes, str]:
    """(URL, body, content type) of one send through the provider's API. Pure."""
    base = relay.api_base
    if relay.transport == "gmail_api":
        raw = base64.urlsafe_b64encode(data).decode("ascii")
        body = json.dumps({"raw": raw}).encode()
        return f"{base}/gmail/v1/users/me/messages/send", body, "application/json"
    # Graph takes the MIME message base64-encoded as text/plain (sendMail, MIME format).
    return f"{base}/v1.0/me/sendMail", base64.b64encode(data), "text/plain"


def api_result(transport: str, status: int, body: bytes) -> str | None:
    """The provider's id of the sent message (Gmail), None (Graph says 202 and no id);
    raises ApiStatus for a refusal. Pure."""
    if status >= 300:
        text = body[:300].decode("utf-8", "replace")
        try:
            error = json.loads(body.decode("utf-8")).get("error")
            if isinstance(error, dict):
                text = str(error.get("message") or error.get("code") or text)
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass
        raise ApiStatus(status, header_text(text, 300))
    if transport == "gmail_api":
        try:
            found = json.loads(body.decode("utf-8")).get("id")
        except (ValueError, UnicodeDecodeError, AttributeError):
            return None
        return str(found)[:250] if found else None
    return None


def send_by_api(
    relay: EmailRelaySettings,
    data: bytes,
    token: Callable[[], Secret],
    source: oauth.TokenSource | None,
) -> str | None:
    url, body, content_type = api_request(relay, data)
    bearer = token()
    request = urllib.request.Request(  # noqa: S310 - api_url is checked to be http(s)
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {bearer.reveal()}", "Content-Type": content_type},
    )
    try:
        with _api_opener.open(request, timeout=relay.timeout_s) as response:
            return api_result(relay.transport, response.status, response.read(MAX_API_ANSWER_BYTES))
    except urllib.error.HTTPError as exc:
        if exc.code == 401 and source is not None:
            source.invalidate(bearer)  # expired or revoked early: the next try refreshes
        return api_result(relay.transport, exc.code, exc.read(MAX_API_ANSWER_BYTES))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # never carry the bearer token to wherever a redirect points


_api_opener = urllib.request.build_opener(_NoRedirect)


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
