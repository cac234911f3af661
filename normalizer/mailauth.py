"""Sender authentication of inbound email: SPF, DKIM, DMARC and ARC, or a trusted upstream's word.

A desk that restores hijacked accounts must not believe a From header: anyone can write
`From: innocent@customer.example`. What the receiving side can check is whether the domain
in From vouched for this mail, by SPF (the sending IP is allowed for the envelope sender's
domain) or DKIM (a signature made with a key published by a domain), either of them
*aligned* with the From domain (DMARC, RFC 7489). Only such a message is "authenticated";
threading and acknowledgements act on that (normalizer/threads.py, normalizer/acks.py).

The top half is pure: alignment, the verdict from individual results, the DMARC record, the
Authentication-Results parser, address folding; tested by tables. The bottom half does the
DNS and library I/O (pyspf, dkimpy, dnspython) with the configured nameservers and a
timeout. Any DNS failure is `temperror`, and anything unexpected is logged and `temperror`
too: authentication can make a message untrusted, never make it disappear.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any, Literal

from pydantic import Field, field_validator

from inbox.config import Strict
from normalizer.dnscache import DEFAULT_ENTRIES, NO_SOA_NEGATIVE_TTL_S, DnsCache, negative_ttl

log = logging.getLogger(__name__)

Verdict = Literal["pass", "fail", "none", "temperror"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "none", "temperror")


class MailAuthSettings(Strict):
    """[mail_auth]: how inbound mail's sender is authenticated."""

    # DNS servers as "host" or "host:port" ("[v6]:port" for IPv6); empty: the system resolver.
    nameservers: list[str] = Field(default_factory=list)
    # Seconds one DNS question may take; a mail asks a handful (SPF at most 10 lookups).
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Seconds all of one mail's questions may take together. A sender controls its own name
    # servers and can make every answer slow; past this the rest is `temperror`, so one mail
    # never holds a parse worker longer than its parse budget plus this.
    budget_seconds: float = Field(default=10.0, gt=0, le=120)
    # DNS answers each parse process keeps (TTLs honoured, capped at a day; negative answers
    # per RFC 2308, capped at three hours; failures never); 0 turns the cache off.
    cache_entries: int = Field(default=DEFAULT_ENTRIES, ge=0, le=1_000_000)
    # authserv-ids (RFC 8601) whose Authentication-Results are believed for mail fetched by
    # IMAP or imported, where we never saw the sending IP: the mailbox provider's own name,
    # e.g. "mx.google.com". Only the topmost header with such an id counts.
    trusted_authserv_ids: list[str] = Field(default_factory=list)

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for server in value:
            nameserver_address(server)  # raises ValueError for anything unusable
        return value

    @field_validator("trusted_authserv_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value if v.strip()]


# --- pure: domains and alignment -----------------------------------------------------------


def nameserver_address(server: str) -> tuple[str, int]:
    """("127.0.0.1", 5353) from "127.0.0.1:5353"; port 53 when none is given."""
    server = server.strip()
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif server.count(":") == 1:
        host, port = server.split(":")
    else:
        host, port = server, "53"  # a bare IPv6 address has several colons
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{server!r}: a nameserver is host, host:port or [v6]:port")
    return host, int(port)


def domain_of(address: str) -> str:
    """The lower-case domain of an address, without a trailing dot; "" when there is none."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    return domain.strip().rstrip(".").lower() if at and local else ""


@functools.cache
def _suffixes() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registered domain (RFC 7489 3.2): mail.customer.example -> customer.example."""
    domain = domain.rstrip(".").lower()
    found = _suffixes().privatesuffix(domain) if domain else None
    return str(found) if found else domain


def aligned(authenticated: str, from_domain: str, mode: str = "r") -> bool:
    """Whether a domain SPF or DKIM vouched for is aligned with the From domain."""
    a, f = authenticated.rstrip(".").lower(), from_domain.rstrip(".").lower()
    if not a or not f:
        return False
    if mode == "s":
        return a == f
    return organizational_domain(a) == organizational_domain(f)


@dataclass(frozen=True)
class DmarcPolicy:
    policy: str = "none"  # p=: none | quarantine | reject
    adkim: str = "r"
    aspf: str = "r"


def parse_dmarc(records: Sequence[bytes | str]) -> DmarcPolicy | None:
    """The DMARC policy among a name's TXT records (exactly one must start v=DMARC1)."""
    found = []
    for record in records:
        text = record.decode("utf-8", "replace") if isinstance(record, bytes) else record
        if re.match(r"^\s*v\s*=\s*DMARC1\s*(;|$)", text):
            found.append(text)
    if len(found) != 1:
        return None  # none, or several: RFC 7489 6.6.3 says there is no policy then
    tags: dict[str, str] = {}
    for part in found[0].split(";")[1:]:
        key, _, value = part.partition("=")
        tags.setdefault(key.strip().lower(), value.strip().lower())
    policy = tags.get("p", "")
    if policy not in ("none", "quarantine", "reject"):
        return None
    return DmarcPolicy(
        policy=policy,
        adkim="s" if tags.get("adkim") == "s" else "r",
        aspf="s" if tags.get("aspf") == "s" else "r",
    )


@dataclass(frozen=True)
class Results:
    """The individual checks of one mail, whoever ran them."""

    from_domain: str
    spf: str = "none"  # pass | fail | softfail | neutral | none | permerror | temperror
    spf_domain: str = ""  # MAIL FROM's domain (HELO's for a null sender)
    dkim: str = "none"  # pass | fail | none | temperror
    dkim_domains: tuple[str, ...] = ()  # d= of every signature that verified
    arc: str = "none"  # pass | fail | none
    # Our DMARC lookup: the policy found, or None; `dmarc_error` when DNS failed.
    dmarc_policy: DmarcPolicy | None = None
    dmarc_error: bool = False
    # A trusted upstream's dmarc= result, used as given (Authentication-Results).
    dmarc_given: str | None = None


def aligned_pass(results: Results) -> bool:
    """An SPF or DKIM pass for a domain aligned with From: what DMARC passes on."""
    policy = results.dmarc_policy or DmarcPolicy()
    spf = results.spf == "pass" and aligned(results.spf_domain, results.from_domain, policy.aspf)
    dkim = any(aligned(d, results.from_domain, policy.adkim) for d in results.dkim_domains)
    return spf or dkim


def dmarc_result(results: Results) -> str:
    """DMARC's own result: pass / fail / none (no policy published) / temperror."""
    if results.dmarc_given is not None:
        return results.dmarc_given
    if not results.from_domain:
        return "none"
    if results.dmarc_error:
        return "temperror"
    if results.dmarc_policy is None:
        return "none"
    if aligned_pass(results):
        return "pass"
    if "temperror" in (results.spf, results.dkim):
        return "temperror"  # the pass that would have aligned may be the one we could not see
    return "fail"


def verdict(results: Results) -> Verdict:
    """pass only for an authenticated From: DMARC pass, or an aligned SPF or DKIM pass."""
    dmarc = dmarc_result(results)
    if dmarc == "pass" or (dmarc != "fail" and aligned_pass(results)):
        return "pass"
    if dmarc == "fail":
        return "fail"
    if "temperror" in (dmarc, results.spf, results.dkim):
        return "temperror"
    if results.spf in ("fail", "softfail", "permerror") or results.dkim == "fail":
        return "fail"
    return "none"


def summary(results: Results) -> dict[str, str]:
    """What is stored on the message (messages.auth) and shown in `parity case show`."""
    return {
        "spf": results.spf,
        "dkim": results.dkim,
        "dmarc": dmarc_result(results),
        "arc": results.arc,
        "from_domain": results.from_domain,
        "verdict": verdict(results),
    }


def authenticated(auth: Mapping[str, Any] | None) -> bool:
    return auth is not None and auth.get("verdict") == "pass"


# --- pure: Authentication-Results (RFC 8601) -------------------------------------------------

_MAX_AR_CHARS = 16 * 1024
_MAX_RESULTS = 64


@dataclass(frozen=True)
class AuthResult:
    method: str
    result: str
    props: dict[str, str] = field(default_factory=dict)


def _strip_comments(value: str) -> str:
    """`value` without RFC 5322 comments (nested parentheses), quoted strings kept."""
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if quoted:
            quoted = ch != '"'
            out.append(ch)
        elif ch == '"' and depth == 0:
            quoted = True
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_authentication_results(value: str) -> tuple[str, list[AuthResult]] | None:
    """(authserv-id, results) of one Authentication-Results value; None if unreadable."""
    if len(value) > _MAX_AR_CHARS:
        return None
    pieces = _split_outside_quotes(_strip_comments(" ".join(value.split())), ";")
    head = pieces[0].split()
    if not head:
        return None
    authserv_id = head[0].lower()
    results: list[AuthResult] = []
    for piece in pieces[1:][:_MAX_RESULTS]:
        words = piece.split()
        if not words or words[0].lower() == "none":
            continue
        method, eq, result = words[0].partition("=")
        if not eq or not result:
            continue
        props: dict[str, str] = {}
        for word in words[1:]:
            key, eq, prop = word.partition("=")
            if eq and "." in key:
                props.setdefault(key.lower(), prop.strip('"'))
        results.append(AuthResult(method.split("/")[0].lower(), result.lower(), props))
    return authserv_id, results


def trusted_results(
    values: Sequence[str], trusted_ids: Sequence[str]
) -> tuple[str, list[AuthResult]] | None:
    """The topmost Authentication-Results whose authserv-id is trusted, and only that one.

    Headers are listed top first, as they appear in the mail: each relay adds its own on top,
    so anything below the trusted server's header came from before it saw the mail (the
    sender may have written it), and a second header with the same id is no better.
    """
    wanted = {t.lower() for t in trusted_ids}
    if not wanted:
        return None
    for value in values:
        parsed = parse_authentication_results(value)
        if parsed is not None and parsed[0] in wanted:
            return parsed
    return None


def results_from_header(from_domain: str, found: list[AuthResult]) -> Results:
    """Results as a trusted upstream reported them (the first result of each method)."""
    first: dict[str, AuthResult] = {}
    for result in found:
        first.setdefault(result.method, result)
    spf = first.get("spf")
    dkim_passes = tuple(
        domain_of(
            "x@" + (r.props.get("header.d") or r.props.get("header.i", "").rpartition("@")[2])
        )
        for r in found
        if r.method == "dkim" and r.result == "pass"
    )
    dkim = "pass" if dkim_passes else first["dkim"].result if "dkim" in first else "none"
    dmarc = first.get("dmarc")
    spf_domain = ""
    if spf is not None:
        mailfrom = spf.props.get("smtp.mailfrom", "")
        spf_domain = domain_of(mailfrom) or mailfrom.lower() or spf.props.get("smtp.helo", "")
    return Results(
        from_domain=from_domain,
        spf=spf.result if spf else "none",
        spf_domain=spf_domain,
        dkim=_known(dkim, ("pass", "fail", "none", "temperror"), "fail"),
        dkim_domains=tuple(d for d in dkim_passes if d),
        arc=_known(first["arc"].result, ("pass", "fail", "none"), "fail")
        if "arc" in first
        else "none",
        # A dmarc= about another From domain says nothing about this one.
        dmarc_given=_known(dmarc.result, ("pass", "fail", "none", "temperror"), "fail")
        if dmarc is not None
        and (domain_of("x@" + dmarc.props.get("header.from", from_domain)) == from_domain)
        else None,
    )


def _known(value: str, known: tuple[str, ...], otherwise: str) -> str:
    if value in known:
        return value
    return "none" if value in ("neutral", "policy") else otherwise


# --- pure: folding addresses for rate limits -----------------------------------------------

# Mail providers known to deliver a+anything@ to a@; Gmail also ignores dots in the local
# part, and googlemail.com is the same mailboxes.
_GMAIL = frozenset({"gmail.com", "googlemail.com"})
PLUS_PROVIDERS = frozenset(
    {
        *_GMAIL,
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "fastmail.com",
        "fastmail.fm",
        "protonmail.com",
        "proton.me",
        "pm.me",
        "yandex.ru",
        "yandex.com",
        "zoho.com",
    }
)


def fold_address(address: str) -> str:
    """One mailbox's one spelling, where its provider is known to ignore the difference."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower()
    domain = domain.rstrip(".")
    if domain in PLUS_PROVIDERS:
        local = local.split("+", 1)[0]
    if domain in _GMAIL:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


# --- I/O: DNS ------------------------------------------------------------------------------


_TRY_SECONDS = 1.0


@functools.cache
def _resolver(servers: tuple[str, ...], timeout: float) -> Any:
    """One resolver per nameserver list and timeout for the life of the process: building
    one reads /etc/resolv.conf, which per mail was a file read per message for nothing.
    Its own cache is off; answers are cached in `shared_cache`, which knows negative
    answers and stays bounded in bytes."""
    import dns.nameserver
    import dns.resolver

    if servers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(*nameserver_address(s)) for s in servers
        ]
    else:
        try:
            resolver = dns.resolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration:
            resolver = dns.resolver.Resolver(configure=False)  # every question: temperror
    # One try waits at most 1 s, and a question is retried within its `timeout_seconds`:
    # a lost UDP datagram (seen on this project's machines about once in 50 mails) cost
    # the mail the whole timeout, 5 s of a parse worker, when one try had all of it.
    resolver.timeout = min(_TRY_SECONDS, timeout)
    resolver.lifetime = timeout
    resolver.cache = None
    return resolver


_CACHE: DnsCache | None = None
_CACHE_LOCK = threading.Lock()


def shared_cache(entries: int) -> DnsCache:
    """The process's DNS answer cache, holding at most `entries` answers.

    Per process: each parse child of the pool has its own (a forkserver child shares no
    memory with its siblings), so N parse workers ask each question up to N times per TTL.
    """
    global _CACHE
    with _CACHE_LOCK:
        if _CACHE is None:
            _CACHE = DnsCache(entries)
        _CACHE.max_entries = entries
        return _CACHE


def _negative_ttl(responses: Sequence[Any]) -> int:
    """RFC 2308 section 5: how long a negative answer may be cached, from the SOA record in
    its authority section; without one, NO_SOA_NEGATIVE_TTL_S (normalizer/dnscache.py)."""
    import dns.rdatatype

    ttls = [
        negative_ttl(rrset.ttl, rrset[0].minimum)
        for response in responses
        for rrset in response.authority
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset)
    ]
    return min(ttls) if ttls else NO_SOA_NEGATIVE_TTL_S


class DnsTempError(Exception):
    """DNS did not answer (timeout, SERVFAIL, no server): the result is `temperror`."""


class Dns:
    """The resolver every check uses: the configured nameservers and timeout, and the
    process's answer cache (normalizer/dnscache.py)."""

    def __init__(self, settings: MailAuthSettings) -> None:
        self.timeout = settings.timeout_seconds
        self.deadline = time.monotonic() + settings.budget_seconds
        self.servers = tuple(settings.nameservers)
        self.resolver = _resolver(self.servers, self.timeout)
        self.cache = shared_cache(settings.cache_entries)

    def records(self, name: str, qtype: str) -> list[Any]:
        """The answer's records; [] for NXDOMAIN or no data; DnsTempError otherwise."""
        import dns.exception
        import dns.resolver

        key = (self.servers, name.lower().rstrip("."), qtype.upper())
        cached = self.cache.get(key)
        if cached is not None:
            return list(cached)
        lifetime = min(self.timeout, self.deadline - time.monotonic())
        if lifetime <= 0:
            raise DnsTempError(f"{qtype} {name}: the mail's DNS budget is spent")
        try:
            answer = self.resolver.resolve(
                name, qtype, raise_on_no_answer=False, search=False, lifetime=lifetime
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.responses()  # type: ignore[no-untyped-call]
            self.cache.put_negative(
                key, _negative_ttl([r for r in responses.values() if r is not None])
            )
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTempError(f"{qtype} {name}: {type(exc).__name__}") from exc
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{qtype} {name}: {type(exc).__name__}: {exc}") from exc
        if answer.rrset is None:  # no data for this type (RFC 2308: NODATA)
            self.cache.put_negative(key, _negative_ttl([answer.response]))
            return []
        records = list(answer.rrset)
        # The smallest TTL on the way, a CNAME's included (dnspython folds them into the
        # chain's minimum).
        ttl = min(answer.rrset.ttl, answer.chaining_result.minimum_ttl)
        self.cache.put(key, records, ttl, sum(len(r.to_text()) for r in records))
        return records

    def txt(self, name: str) -> list[bytes]:
        return [b"".join(r.strings) for r in self.records(name, "TXT")]


# pyspf looks its DNS up through a module-level function; it is pointed, once, at the
# resolver of the check running in this thread (a context variable), so every check uses
# its own settings and none leaks into another.
_CURRENT_DNS: contextvars.ContextVar[Dns | None] = contextvars.ContextVar("mailauth_dns")


def _install_spf_lookup() -> None:
    import spf

    if getattr(spf.DNSLookup, "_parity", False):
        return
    original = spf.DNSLookup

    def lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
        resolver = _CURRENT_DNS.get(None)
        if resolver is None:
            return list(original(name, qtype, strict, timeout))
        try:
            records = resolver.records(name, qtype)
        except DnsTempError as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        found: list[Any] = []
        for r in records:
            if qtype in ("A", "AAAA"):
                found.append(((name, qtype), r.address))
            elif qtype == "MX":
                found.append(((name, qtype), (r.preference, r.exchange)))
            elif qtype == "PTR":
                found.append(((name, qtype), r.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                found.append(((name, qtype), r.strings))
        return found

    lookup._parity = True  # type: ignore[attr-defined]
    spf.DNSLookup = lookup


# --- I/O: the checks ---------------------------------------------------------------------------

_MAX_DKIM_SIGNATURES = 5  # each costs a DNS question and a hash of the body
_MAX_ARC_SETS = 10


@dataclass(frozen=True)
class SmtpFacts:
    """What the SMTP session told us: SPF needs the client's address and names."""

    client_ip: str
    helo: str
    mail_from: str


def smtp_facts(envelope: Mapping[str, Any]) -> SmtpFacts | None:
    """From the stored envelope of SMTP intake (connectors/smtp/server.py); None for the
    rest."""
    peer = str(envelope.get("peer") or "")
    if not peer or "mail_from" not in envelope:
        return None
    # "127.0.0.1:40000", "::1:40000": the address, then the port after the last colon.
    ip, _, port = peer.rpartition(":")
    return SmtpFacts(
        client_ip=(ip if ip and port.isdigit() else peer).strip("[]"),
        helo=str(envelope.get("helo") or ""),
        mail_from=str(envelope.get("mail_from") or ""),
    )


def _headers(raw: bytes) -> list[tuple[str, str]]:
    msg = BytesHeaderParser(policy=compat32).parsebytes(raw)
    # The parser keeps raw 8-bit bytes (SMTPUTF8 headers) as surrogates; as text they are
    # UTF-8, or `exämple.org` in a From would never align with the same domain in MAIL FROM.
    return [
        (k.lower(), str(v).encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        for k, v in msg.raw_items()
    ]


def from_domain_of(raw_from_values: Sequence[str], fallback: str) -> str:
    """The RFC 5322 From domain: the single address of the single From header, or the
    domain of the handle the message was filed under when the From header is unusable."""
    if len(raw_from_values) == 1:
        found = [a for _, a in getaddresses(list(raw_from_values)) if a]
        if len(found) == 1 and domain_of(found[0]):
            return domain_of(found[0])
    return domain_of(fallback)


def _check_spf(dns: Dns, facts: SmtpFacts) -> tuple[str, str]:
    import spf

    sender = facts.mail_from or f"postmaster@{facts.helo}"
    domain = domain_of(facts.mail_from) or facts.helo.lower().rstrip(".")
    if not domain:
        return "none", ""
    query = spf.query(
        i=facts.client_ip,
        s=sender,
        h=facts.helo or domain,
        timeout=dns.timeout,
        querytime=max(0.001, min(dns.timeout * 4, dns.deadline - time.monotonic())),
    )
    result, _code, _text = query.check()
    return str(result).lower(), domain


def _check_dkim(dns: Dns, raw: bytes, count: int) -> tuple[str, tuple[str, ...]]:
    import dkim

    if count == 0:
        return "none", ()
    failures: list[str] = []

    def txt(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            found = dns.txt(text.rstrip("."))
        except DnsTempError:
            failures.append(text)
            raise dkim.DnsTimeoutError(text) from None
        return found[0] if found else None

    passed: list[str] = []
    for index in range(min(count, _MAX_DKIM_SIGNATURES)):
        verifier = dkim.DKIM(raw, timeout=int(dns.timeout) or 1)
        try:
            ok = verifier.verify(idx=index, dnsfunc=txt)
        except dkim.DKIMException:
            ok = False
        if ok and verifier.domain:
            passed.append(verifier.domain.decode("ascii", "replace").lower())
    if passed:
        return "pass", tuple(dict.fromkeys(passed))
    return ("temperror" if failures else "fail"), ()


def _check_arc(dns: Dns, raw: bytes, count: int) -> str:
    import dkim

    if count == 0:
        return "none"
    if count > _MAX_ARC_SETS:
        return "fail"

    def txt(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            found = dns.txt(text.rstrip("."))
        except DnsTempError:
            raise dkim.DnsTimeoutError(text) from None
        return found[0] if found else None

    cv, _results, _reason = dkim.arc_verify(raw, dnsfunc=txt, timeout=int(dns.timeout) or 1)
    return {dkim.CV_Pass: "pass", dkim.CV_Fail: "fail"}.get(cv, "none")


def _dmarc_policy(dns: Dns, from_domain: str) -> DmarcPolicy | None:
    """The From domain's policy, or its organizational domain's (RFC 7489 6.6.3)."""
    policy = parse_dmarc(dns.txt(f"_dmarc.{from_domain}"))
    org = organizational_domain(from_domain)
    if policy is None and org != from_domain:
        policy = parse_dmarc(dns.txt(f"_dmarc.{org}"))
    return policy


def evaluate(
    raw: bytes,
    envelope: Mapping[str, Any],
    handle: str,
    settings: MailAuthSettings,
    *,
    history: bool = False,
) -> dict[str, str]:
    """messages.auth for one email: our own checks for mail we received by SMTP, or the
    trusted upstream's Authentication-Results for mail fetched by IMAP or imported (with our
    own DKIM and DMARC checks when it has none). Never raises.

    Imported history (`history`) is never checked against today's DNS: keys and policies
    change over the years, so the answer would mean little, and an archive of a million
    mails would wait on a million lookups. Only a trusted header speaks for it.
    """
    headers: list[tuple[str, str]] = []
    from_domain = domain_of(handle)
    try:
        headers = _headers(raw)
        from_domain = from_domain_of([v for k, v in headers if k == "from"], handle)
        facts = smtp_facts(envelope)
        if facts is None:
            trusted = trusted_results(
                [v for k, v in headers if k == "authentication-results"],
                settings.trusted_authserv_ids,
            )
            if trusted is not None:
                return summary(results_from_header(from_domain, trusted[1]))
        if history:
            return summary(Results(from_domain=from_domain))
        return summary(_own_checks(raw, headers, facts, from_domain, Dns(settings)))
    except Exception:  # a library's surprise must not lose the mail; it is merely unproven
        log.exception("sender authentication failed; filed as temperror")
        return summary(Results(from_domain=from_domain, spf="temperror", dkim="temperror"))


def _own_checks(
    raw: bytes,
    headers: list[tuple[str, str]],
    facts: SmtpFacts | None,
    from_domain: str,
    dns: Dns,
) -> Results:
    _install_spf_lookup()
    token = _CURRENT_DNS.set(dns)
    try:
        spf_result, spf_domain = ("none", "")
        if facts is not None:
            spf_result, spf_domain = _check_spf(dns, facts)
        signatures = sum(1 for k, _ in headers if k == "dkim-signature")
        dkim_result, dkim_domains = _check_dkim(dns, raw, signatures)
        arc = _check_arc(dns, raw, sum(1 for k, _ in headers if k == "arc-seal"))
        policy, dmarc_error = None, False
        if from_domain:
            try:
                policy = _dmarc_policy(dns, from_domain)
            except DnsTempError:
                dmarc_error = True
        return Results(
            from_domain=from_domain,
            spf=spf_result,
            spf_domain=spf_domain,
            dkim=dkim_result,
            dkim_domains=dkim_domains,
            arc=arc,
            dmarc_policy=policy,
            dmarc_error=dmarc_error,
        )
    finally:
        _CURRENT_DNS.reset(token)


# --- the acknowledgement greeting ---------------------------------------------------------------

# Words of letters, joined by one space, a hyphen or apostrophe, or ". " / ", " (so
# "Dr. Ann Lee" and "Lee, Ann" pass, and "www.evil.example" does not).
_PLAIN_NAME = re.compile(r"[^\W\d_]+(?:(?:[ '’-]|[.,] )[^\W\d_]+)*\.?")
_MAX_NAME = 64


def plain_name(name: str) -> bool:
    """Whether a display name may be used in a greeting: letters, single spaces and simple
    punctuation between them, bounded length. No digits, @, URLs, control or bidi characters
    (none of those are letters), so it cannot carry a link, an address or hidden text."""
    return 0 < len(name) <= _MAX_NAME and _PLAIN_NAME.fullmatch(name) is not None


def greeting_name(name: str, auth: Mapping[str, Any] | None) -> str:
    """The name an acknowledgement greets: the sender's own only when authenticated and plain."""
    name = " ".join(name.split())
    return name if authenticated(auth) and plain_name(name) else ""
