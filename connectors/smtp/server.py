"""The SMTP connector: an aiosmtpd server that stores every mail for our domains, then says 250.

Promises kept here:
- 250 only after the raw message is durable (intake commits before the answer);
- never 5xx for storage trouble: a refused write answers 451 so the sender's server retries;
- no quota: the configurable size limit is the only 5xx besides relay denial;
- never a relay: a recipient outside the support domains gets 550 at RCPT, and so does a
  recipient with a source route (`<@relay.example:help@ours>`), whatever its final domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import weakref
from email._header_value_parser import get_angle_addr
from email.errors import HeaderParseError
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from connectors.base import ConnectorHealth
from connectors.smtp.settings import SmtpSettings
from inbox.db import StorageUnavailable
from normalizer.intake import IntakeWriter, RawInput

log = logging.getLogger(__name__)


def recipient_allowed(address: str, domains: list[str]) -> bool:
    """True when `address` is at one of our support domains (exact domain, case-blind).

    Anything else is refused, including source routes (`@relay:user@ours`) and subdomains:
    we are never a relay. An SMTPUTF8 client may name our domain in Unicode (U-label) or
    in its ASCII form (A-label); both count as the same domain.
    """
    address = address.strip().strip("<>")
    if address.count("@") != 1:
        return False
    domain = _domain_key(address.rsplit("@", 1)[1])
    return domain != "" and domain in {_domain_key(d) for d in domains}


def has_source_route(path: str) -> bool:
    """True when an SMTP path (`<@a.example,@b.example:user@domain>`) carries a source route.

    aiosmtpd parses the path as the email package does, which drops an RFC 5321 source route
    and hands the handler only `user@domain`: checked there, `<@evil.example:help@ours>`
    looked like our own address and got 250. Parsed here the same way, the route is kept
    and seen, however it is spelled (several hops, spaces, comments, a leading comma).
    """
    value = path.strip()
    if value.startswith("@"):  # a route without the angle brackets
        return True
    if not value.startswith("<"):
        return False
    try:
        address, _rest = get_angle_addr(value)
    except HeaderParseError:
        return False  # aiosmtpd cannot parse it either, and answers 553
    return address.route is not None


def _domain_key(domain: str) -> str:
    domain = domain.strip().lower().rstrip(".")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:  # not a valid IDN: compare it as it was written
        return domain


def source_key(raw: bytes, recipients: list[str]) -> str:
    """The intake key of one SMTP delivery: the same bytes to the same recipients.

    A sending server that retries after a lost 250 resends identical bytes, so its retry is
    recognised at intake; a different delivery of the same mail (another hop, the IMAP copy)
    has other trace headers and is joined later by the message's dedup key instead.
    """
    digest = hashlib.sha256(raw)
    for rcpt in sorted(r.lower() for r in recipients):
        digest.update(b"\x00" + rcpt.encode("utf-8", "surrogateescape"))
    return "smtp:" + digest.hexdigest()


TOO_BIG = "552 5.3.4 Message too big for this system"
SOURCE_ROUTE_DENIED = "550 5.7.1 Relaying denied: source routes are not accepted"
TRY_LATER = "451 4.3.0 Temporary local problem, please try again later"


class _SMTP(SMTP):
    """aiosmtpd's SMTP with our line limit, and the size limit as the only content 5xx.

    aiosmtpd sizes its stream reader from `line_length_limit` inside `__init__`, so the
    limit must be on the instance before that runs; setting it afterwards changes the check
    but not the reader, which still refuses longer lines.
    """

    def __init__(self, handler: Any, *, line_length_limit: int, **kwargs: Any) -> None:
        self.line_length_limit = line_length_limit
        # With no line limit of our own, only a line longer than the whole size limit can
        # overrun the reader: that message is too big, and is answered as such.
        self._lines_bounded_by_size = line_length_limit > (kwargs.get("data_size_limit") or 0)
        super().__init__(handler, **kwargs)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        # The route is gone by the time the handler sees the address (has_source_route), so
        # it is refused here, once the session is where RCPT is allowed at all (else
        # aiosmtpd's own 503 is the right answer). A MAIL FROM route is accepted and its
        # route dropped, as RFC 5321 (appendix C) asks: nothing is ever sent along it.
        keyword = (arg or "")[:3].upper()
        if (
            keyword == "TO:"
            and has_source_route((arg or "")[3:])
            and self.session is not None
            and self.session.host_name
            and self.envelope is not None
            and self.envelope.mail_from
        ):
            log.info("%r recipient with a source route refused: %.200r", self.session.peer, arg)
            await self.push(SOURCE_ROUTE_DENIED)
            return
        await super().smtp_RCPT(arg)

    async def push(self, status: AnyStr) -> None:
        if (
            self._lines_bounded_by_size
            and isinstance(status, str)
            and status.startswith("500 Line too long")
        ):
            await super().push(TOO_BIG)
            return
        await super().push(status)


class IntakeHandler:
    """aiosmtpd handler: RCPT checks the domain, DATA stores through intake and answers."""

    def __init__(self, settings: SmtpSettings, writer: IntakeWriter, health: ConnectorHealth):
        self.settings = settings
        self.writer = writer
        self.health = health
        self.accepted = 0
        # Transactions between the end of DATA and our answer: shutdown waits for them.
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not recipient_allowed(address, self.settings.support_domains):
            return "550 5.7.1 Relaying denied: we accept mail for our support addresses only"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # Everything is caught: an exception escaping here makes aiosmtpd answer a permanent
        # 500, and the sender would give up on a message we simply failed to store.
        self.inflight += 1
        self.idle.clear()
        try:
            content = envelope.original_content or envelope.content or b""
            raw = (
                content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
            )
            recipients = list(envelope.rcpt_tos)
            item = RawInput(
                connector="smtp",
                channel="email",
                source_key=source_key(raw, recipients),
                payload=raw,
                envelope=_envelope(session, envelope),
            )
            await self.writer.submit(item)
        except StorageUnavailable as exc:
            self.health.error(f"storage unavailable: {exc}")
            log.warning("storage unavailable, answered 451: %s", exc)
            return "451 4.3.0 Temporary storage failure, please try again later"
        except Exception as exc:
            self.health.error(f"{type(exc).__name__}: {exc}")
            log.exception("could not store a message, answered 451")
            return TRY_LATER
        finally:
            self.inflight -= 1
            if not self.inflight:
                self.idle.set()
        self.accepted += 1
        self.health.success()
        return "250 2.0.0 OK: stored"

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd calls this for an exception anywhere in a session (its default answer
        # is a permanent 500). Whatever went wrong is ours, so the sender should retry.
        self.health.error(f"{type(error).__name__}: {error}")
        log.error("SMTP session error, answered 451: %r", error)
        return TRY_LATER


def smtp_session(
    handler: Any, settings: SmtpSettings, tls_context: ssl.SSLContext | None = None
) -> SMTP:
    """One aiosmtpd session with our protocol settings around any handler.

    The benchmark serves aiosmtpd's own Sink handler through this too, so that only the
    handler differs between the baseline and our intake.
    """
    # 0 means no line limit of its own: a line may be as long as a whole message may be.
    line_limit = settings.max_line_length or settings.max_message_bytes + 2
    return _SMTP(
        handler,
        line_length_limit=line_limit,
        hostname=settings.hostname,
        ident="Parity ESMTP",
        data_size_limit=settings.max_message_bytes,
        enable_SMTPUTF8=True,
        decode_data=False,
        tls_context=tls_context,
        require_starttls=False,
    )


def _envelope(session: Session, envelope: Envelope) -> dict[str, Any]:
    peer = session.peer
    return {
        "mail_from": envelope.mail_from or "",
        "rcpt_tos": list(envelope.rcpt_tos),
        "helo": session.host_name or "",
        "peer": f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer),
    }


def is_example_domain(domain: str) -> bool:
    """RFC 2606's reserved names, which no real support address can be under."""
    name = domain.lower().rstrip(".")
    return any(
        name == d or name.endswith("." + d)
        for d in ("example.com", "example.org", "example.net", "example")
    )


class SmtpConnector:
    name = "smtp"
    # Binds a port: `parity run` announces it only once bound.
    listens = True
    # On shutdown, how long transactions already past DATA may take to get their answer.
    drain_seconds = 10.0

    def __init__(self, settings: SmtpSettings, writer: IntakeWriter) -> None:
        self.settings = settings
        self.writer = writer
        self.health = ConnectorHealth()
        self.handler = IntakeHandler(settings, writer, self.health)
        self.server: asyncio.Server | None = None
        self.sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._tls_context = self._tls()

    def _tls(self) -> ssl.SSLContext | None:
        if not (self.settings.tls_cert and self.settings.tls_key):
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        return context

    def factory(self) -> SMTP:
        server = smtp_session(self.handler, self.settings, self._tls_context)
        self.sessions.add(server)
        return server

    async def start(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self.factory, host=self.settings.host, port=self.settings.port
        )
        self.health.details["listening"] = self.address
        self.health.details["starttls"] = self._tls_context is not None
        return self.server

    @property
    def address(self) -> str:
        if self.server is None or not self.server.sockets:
            return ""
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        log.info(
            "SMTP listening on %s for %s", self.address, ", ".join(self.settings.support_domains)
        )
        if all(is_example_domain(d) for d in self.settings.support_domains):
            # The shipped placeholder: every real customer's mail would be refused with 550.
            log.warning(
                "support_domains is still the example (%s): mail to your real address is "
                "refused; set [connectors.smtp] support_domains",
                ", ".join(self.settings.support_domains),
            )
        try:
            await stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening, let answers already owed go out, then say goodbye to the rest."""
        if self.server is None:
            return
        self.server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.handler.idle.wait(), timeout=self.drain_seconds)
        for session in list(self.sessions):
            transport = session.transport
            if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
                # RFC 5321 4.2.2: 421 tells the client to come back later; nothing it sent
                # since its last 250 is lost, because it has not had a 250 for it.
                transport.write(b"421 4.3.2 Service shutting down, please try again later\r\n")
                transport.close()
        await self.server.wait_closed()
        self.server = None
