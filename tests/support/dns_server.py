"""A real DNS server for the sender-authentication tests, answering from fixture zones.

UDP on 127.0.0.1 and a free port, in a thread of the test process; subprocesses of the
tests (parity run) ask it too. Answers come from tests/fixtures/dns/*.zone (exact names
first, then the longest matching wildcard), records added at run time (a DKIM key the tests
generate), and failures.txt (SERVFAIL, or no answer at all, for temperror).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, SOA, DNSRecord

from normalizer.mailauth import MailAuthSettings

ZONES = Path(__file__).resolve().parents[1] / "fixtures" / "dns"


class DnsServer:
    """`ttl`: the TTL of every answer, 0 by default. The tests add records at run time (a
    DKIM key) and expect the next mail to see them, so the shared server's answers are never
    cached by a parse process (normalizer/dnscache.py); None answers with the zone's TTLs.
    `negative_soa`: (TTL, MINIMUM) of the SOA record sent with NXDOMAIN and no-data answers
    (RFC 2308: a negative answer lives the smaller); by default TTL 0, so negatives are not
    cached either. None sends no SOA, as some stub resolvers do (cached a minute)."""

    def __init__(
        self,
        zones: Path = ZONES,
        *,
        ttl: int | None = 0,
        negative_soa: tuple[int, int] | None = (0, 0),
    ) -> None:
        self.ttl = ttl
        self.negative_soa = negative_soa
        # Every question asked, as (name, type), in order: a cache test counts them.
        self.asked: list[tuple[str, str]] = []
        self.records: dict[str, list[RR]] = {}
        for zone in sorted(zones.glob("*.zone")):
            for rr in RR.fromZone(zone.read_text()):
                self.records.setdefault(str(rr.rname).lower().rstrip("."), []).append(rr)
        self.failures: list[tuple[str, str]] = []
        for line in (zones / "failures.txt").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                how, name = line.split()
                self.failures.append((how, name.lower()))
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self.thread.start()

    def settings(self, timeout: float = 1.0) -> MailAuthSettings:
        return MailAuthSettings(nameservers=[f"127.0.0.1:{self.port}"], timeout_seconds=timeout)

    def close(self) -> None:
        self.sock.close()

    def add(self, zone_line: str) -> None:
        """Add records in zone-file syntax, e.g. a DKIM key made by a test."""
        with self.lock:
            for rr in RR.fromZone(zone_line):
                self.records.setdefault(str(rr.rname).lower().rstrip("."), []).append(rr)

    def _failure(self, name: str) -> str | None:
        for how, failing in self.failures:
            if name == failing or name.endswith("." + failing):
                return how
        return None

    def _owner(self, name: str) -> list[RR] | None:
        """The records of `name`: its own, else the closest wildcard's (renamed to it)."""
        if name in self.records:
            return self.records[name]
        labels = name.split(".")
        for start in range(1, len(labels) + 1):
            wildcard = ".".join(["*", *labels[start:]]).rstrip(".")
            if wildcard in self.records:
                return self.records[wildcard]
        return None

    def answer(self, data: bytes) -> bytes | None:
        request = DNSRecord.parse(data)
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        with self.lock:
            self.asked.append((name, QTYPE[request.q.qtype]))
        failure = self._failure(name)
        if failure == "drop":
            return None
        if failure == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return bytes(reply.pack())
        with self.lock:
            owned = self._owner(name)
        if owned is None:
            reply.header.rcode = RCODE.NXDOMAIN
            self._soa(reply)
            return bytes(reply.pack())
        for rr in owned:
            if rr.rtype == request.q.qtype or request.q.qtype == QTYPE.ANY:
                ttl = rr.ttl if self.ttl is None else self.ttl
                reply.add_answer(RR(request.q.qname, rr.rtype, rdata=rr.rdata, ttl=ttl))
        if not reply.rr:
            self._soa(reply)
        return bytes(reply.pack())

    def _soa(self, reply: DNSRecord) -> None:
        if self.negative_soa is None:
            return
        soa_ttl, minimum = self.negative_soa
        reply.add_auth(
            RR(
                "example.",
                QTYPE.SOA,
                rdata=SOA("ns.example.", "hostmaster.example.", (1, 3600, 600, 86400, minimum)),
                ttl=soa_ttl,
            )
        )

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                answer = self.answer(data)
            except Exception:  # a malformed question gets no answer, as from a real server
                answer = None
            if answer is not None:
                self.sock.sendto(answer, peer)


_shared: DnsServer | None = None
_shared_lock = threading.Lock()


def shared_dns() -> DnsServer:
    """One server for the whole test run, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = DnsServer()
        return _shared


def test_mail_auth() -> MailAuthSettings:
    """[mail_auth] for tests: the fixture DNS server (see tests/fixtures/dns/test.zone)."""
    return shared_dns().settings()


test_mail_auth.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


# --- DKIM keys the tests make ------------------------------------------------------------------

_keys: dict[tuple[str, str], bytes] = {}


def dkim_key(domain: str, selector: str = "sel1") -> bytes:
    """A fresh RSA key for `domain`, its public half published on the shared server."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    with _shared_lock:
        found = _keys.get((domain, selector))
    if found is not None:
        return found
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    record = f"v=DKIM1; k=rsa; p={public}"
    # A TXT record holds strings of at most 255 bytes; the key is split over several.
    strings = " ".join(f'"{record[i : i + 200]}"' for i in range(0, len(record), 200))
    shared_dns().add(f"{selector}._domainkey.{domain}. 60 IN TXT {strings}")
    with _shared_lock:
        _keys[(domain, selector)] = private
    return private


def dkim_sign(raw: bytes, domain: str, selector: str = "sel1") -> bytes:
    """`raw` with a DKIM-Signature by `domain`'s test key on top."""
    import dkim

    signature = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        dkim_key(domain, selector),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return bytes(signature) + raw


def mail_auth_toml() -> str:
    """The [mail_auth] section of a test's settings.toml: the fixture DNS server."""
    return (
        f'\n[mail_auth]\nnameservers = ["127.0.0.1:{shared_dns().port}"]\ntimeout_seconds = 1.0\n'
    )
