"""The pure half of sender authentication and of the acknowledgement limits, by tables.

Expected values are written out by hand from RFC 7489 (DMARC), RFC 8601 (Authentication-
Results) and the providers' documented address rules, not computed by the code under test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from normalizer.acks import AckLimits, Bucket, ack_buckets, refill, take_tokens
from normalizer.mailauth import (
    DmarcPolicy,
    Results,
    aligned,
    dmarc_result,
    fold_address,
    greeting_name,
    nameserver_address,
    organizational_domain,
    parse_authentication_results,
    parse_dmarc,
    plain_name,
    results_from_header,
    smtp_facts,
    trusted_results,
    verdict,
)
from normalizer.threads import Candidates, CaseView, decide

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("customer.example", "customer.example"),
        ("mail.customer.example", "customer.example"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("EXAMPLE.COM.", "example.com"),
        ("bounces.esp.example", "esp.example"),
    ],
)
def test_organizational_domain(domain, org):
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("authenticated", "from_domain", "mode", "expected"),
    [
        ("customer.example", "customer.example", "r", True),
        ("mail.customer.example", "customer.example", "r", True),
        ("mail.customer.example", "customer.example", "s", False),
        ("customer.example", "customer.example", "s", True),
        ("evil.example", "customer.example", "r", False),
        ("customer.example.evil.example", "customer.example", "r", False),
        ("example.co.uk", "victim.example.co.uk", "r", True),
        ("co.uk", "victim.co.uk", "r", False),  # a public suffix is nobody's domain
        ("", "customer.example", "r", False),
        ("customer.example", "", "r", False),
    ],
)
def test_alignment(authenticated, from_domain, mode, expected):
    assert aligned(authenticated, from_domain, mode) is expected


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([b"v=DMARC1; p=reject"], DmarcPolicy("reject")),
        (["v=DMARC1; p=quarantine; adkim=s; aspf=s"], DmarcPolicy("quarantine", "s", "s")),
        (["v=DMARC1;p=none;rua=mailto:x@example.org"], DmarcPolicy("none")),
        ([b"v=spf1 -all"], None),
        ([b"v=DMARC1; p=reject", b"v=DMARC1; p=none"], None),  # two records: no policy
        ([b"v=DMARC1; p=bogus"], None),
        ([b"v=DMARC1"], None),
        ([], None),
    ],
)
def test_parse_dmarc(records, expected):
    assert parse_dmarc(records) == expected


REJECT = DmarcPolicy("reject")
R = "customer.example"


@pytest.mark.parametrize(
    ("results", "dmarc", "expected"),
    [
        # Aligned SPF pass, with and without a published policy.
        (Results(R, spf="pass", spf_domain=R, dmarc_policy=REJECT), "pass", "pass"),
        (Results(R, spf="pass", spf_domain=R), "none", "pass"),
        # Aligned DKIM pass alone: SPF failing (a forwarder) does not matter.
        (Results(R, spf="fail", spf_domain=R, dkim="pass", dkim_domains=(R,)), "none", "pass"),
        # SPF passes for someone else's domain: not aligned, DMARC fails under a policy.
        (
            Results(R, spf="pass", spf_domain="esp.example", dmarc_policy=REJECT),
            "fail",
            "fail",
        ),
        (Results(R, spf="pass", spf_domain="esp.example"), "none", "none"),
        # A forged From: nothing passes.
        (Results(R, spf="fail", spf_domain=R, dmarc_policy=REJECT), "fail", "fail"),
        (Results(R, spf="softfail", spf_domain=R), "none", "fail"),
        (Results(R, dkim="fail"), "none", "fail"),
        (Results(R), "none", "none"),
        # DNS trouble: temperror, never pass.
        (Results(R, spf="temperror", spf_domain=R), "none", "temperror"),
        (Results(R, spf="temperror", spf_domain=R, dmarc_policy=REJECT), "temperror", "temperror"),
        (Results(R, dmarc_error=True), "temperror", "temperror"),
        # Strict SPF alignment refuses a subdomain.
        (
            Results(
                R, spf="pass", spf_domain="mail." + R, dmarc_policy=DmarcPolicy("reject", aspf="s")
            ),
            "fail",
            "fail",
        ),
        # A trusted upstream's word is taken as given.
        (Results(R, dmarc_given="pass"), "pass", "pass"),
        (Results(R, spf="pass", spf_domain=R, dmarc_given="fail"), "fail", "fail"),
        (Results(""), "none", "none"),
    ],
)
def test_dmarc_and_verdict(results, dmarc, expected):
    assert dmarc_result(results) == dmarc
    assert verdict(results) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "mx.google.com; dkim=pass header.i=@customer.example header.s=sel1; "
            "spf=pass (google.com: domain of a@customer.example designates 192.0.2.10 as "
            "permitted sender) smtp.mailfrom=a@customer.example; "
            "dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=customer.example",
            (
                "mx.google.com",
                [
                    ("dkim", "pass", {"header.i": "@customer.example", "header.s": "sel1"}),
                    ("spf", "pass", {"smtp.mailfrom": "a@customer.example"}),
                    ("dmarc", "pass", {"header.from": "customer.example"}),
                ],
            ),
        ),
        ("mx.example.org 1; none", ("mx.example.org", [])),
        (
            'MX.Example.org; spf=fail smtp.mailfrom="x;y@evil.example"',
            ("mx.example.org", [("spf", "fail", {"smtp.mailfrom": "x;y@evil.example"})]),
        ),
        ("(a comment only)", None),
        ("mx.example.org; garbage; dkim=", ("mx.example.org", [])),
        ("x" * 20000, None),  # over the bound: not read at all
    ],
)
def test_parse_authentication_results(value, expected):
    parsed = parse_authentication_results(value)
    if expected is None:
        assert parsed is None
        return
    assert parsed is not None
    assert (parsed[0], [(r.method, r.result, r.props) for r in parsed[1]]) == expected


TRUSTED_PASS = "mx.provider.example; dmarc=pass header.from=customer.example"
FORGED_PASS = "mx.provider.example; dmarc=pass header.from=customer.example"
TRUSTED_FAIL = "mx.provider.example; dmarc=fail header.from=customer.example"
OTHER = "mx.attacker.example; dmarc=pass header.from=customer.example"


@pytest.mark.parametrize(
    ("headers", "trusted", "expected"),
    [
        ([TRUSTED_PASS], ["mx.provider.example"], "pass"),
        # Only the topmost instance with the trusted id: the sender's own, lower, forged
        # "pass" under the provider's id is never read.
        ([TRUSTED_FAIL, FORGED_PASS], ["mx.provider.example"], "fail"),
        # An untrusted server's header on top is skipped; the trusted one below is used.
        ([OTHER, TRUSTED_FAIL], ["mx.provider.example"], "fail"),
        ([OTHER], ["mx.provider.example"], None),
        ([TRUSTED_PASS], [], None),
        ([], ["mx.provider.example"], None),
    ],
)
def test_only_the_topmost_trusted_header(headers, trusted, expected):
    found = trusted_results(headers, trusted)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert verdict(results_from_header("customer.example", found[1])) == expected


@pytest.mark.parametrize(
    ("header", "from_domain", "expected"),
    [
        ("mx.p.example; spf=pass smtp.mailfrom=a@customer.example", R, "pass"),
        ("mx.p.example; spf=pass smtp.mailfrom=bounce@esp.example", R, "none"),
        ("mx.p.example; dkim=pass header.d=customer.example", R, "pass"),
        ("mx.p.example; dkim=pass header.i=@mail.customer.example", R, "pass"),
        ("mx.p.example; dkim=pass header.d=evil.example", R, "none"),
        # A dmarc=pass about another From domain says nothing about this one.
        ("mx.p.example; dmarc=pass header.from=evil.example", R, "none"),
        ("mx.p.example; dmarc=temperror header.from=customer.example", R, "temperror"),
        ("mx.p.example; spf=softfail smtp.mailfrom=a@customer.example", R, "fail"),
    ],
)
def test_results_from_a_trusted_header(header, from_domain, expected):
    parsed = parse_authentication_results(header)
    assert parsed is not None
    assert verdict(results_from_header(from_domain, parsed[1])) == expected


@pytest.mark.parametrize(
    ("address", "folded"),
    [
        ("Ann.Lee+support@Gmail.com", "annlee@gmail.com"),
        ("a.n.n.l.e.e@googlemail.com", "annlee@gmail.com"),
        ("ann+x@outlook.com", "ann@outlook.com"),
        ("ann.lee+x@icloud.com", "ann.lee@icloud.com"),  # only Gmail ignores dots
        ("victim+17@victim.example", "victim+17@victim.example"),  # unknown: kept
        ("Ann.Lee@Example.ORG", "ann.lee@example.org"),
    ],
)
def test_fold_address(address, folded):
    assert fold_address(address) == folded


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("Ann Lee", True),
        ("José Álvarez-Núñez", True),
        ("Mary O'Brien", True),
        ("Dr. Ann Lee", True),
        ("Lee, Ann", True),
        ("李小龍", True),
        ("", False),
        ("Ann 2024", False),
        ("ann@example.org", False),
        ("Visit http://evil.example", False),
        ("www.evil.example", False),
        ("Ann\u202eeil", False),  # right-to-left override
        ("Ann\x07Lee", False),
        ("A" * 65, False),
        ("Ann  -- Lee", False),
        ("URGENT!!! Reset now", False),
    ],
)
def test_plain_name(name, plain):
    assert plain_name(name) is plain


def test_the_greeting_names_only_an_authenticated_plain_sender():
    passed, failed = {"verdict": "pass"}, {"verdict": "fail"}
    assert greeting_name("Ann Lee", passed) == "Ann Lee"
    assert greeting_name("Ann Lee", failed) == ""
    assert greeting_name("Ann Lee", None) == ""
    assert greeting_name("Click http://evil.example", passed) == ""


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("2001:db8::1", ("2001:db8::1", 53)),
    ],
)
def test_nameserver_address(server, expected):
    assert nameserver_address(server) == expected


@pytest.mark.parametrize("server", ["", "127.0.0.1:0", "127.0.0.1:dns", "[::1]:99999"])
def test_bad_nameservers_are_refused(server):
    with pytest.raises(ValueError):
        nameserver_address(server)


@pytest.mark.parametrize(
    ("envelope", "ip"),
    [
        ({"peer": "127.0.0.1:40000", "helo": "h", "mail_from": "a@b.example"}, "127.0.0.1"),
        ({"peer": "::1:40000", "helo": "h", "mail_from": ""}, "::1"),
        ({"address": "help@support.example.com"}, None),  # IMAP: no SMTP session
    ],
)
def test_smtp_facts(envelope, ip):
    facts = smtp_facts(envelope)
    assert (facts.client_ip if facts else None) == ip


# --- the acknowledgement buckets ---------------------------------------------------------------

LIMITS = AckLimits(
    recipient_burst=2,
    recipient_per_hour=1.0,
    domain_burst=3,
    domain_per_hour=0.0,
    global_burst=100,
    global_per_hour=0.0,
)


def test_buckets_of_an_email_and_a_number():
    email = ack_buckets("email", "Ann.Lee+x@googlemail.com", LIMITS)
    assert [b.key for b in email] == [
        "recipient:email:annlee@gmail.com",
        "domain:gmail.com",
        "global",
    ]
    sms = ack_buckets("sms", "+447700900123", LIMITS)
    voice = ack_buckets("voice", "+447700900123", LIMITS)
    assert (
        [b.key for b in sms]
        == [b.key for b in voice]
        == ["recipient:phone:+447700900123", "global"]
    )


@pytest.mark.parametrize(
    ("tokens", "hours", "per_hour", "burst", "expected"),
    [
        (0.0, 1.0, 1.0, 2, 1.0),
        (0.0, 10.0, 1.0, 2, 2.0),  # never above the burst
        (1.5, 0.5, 1.0, 2, 2.0),
        (0.25, 0.5, 0.5, 3, 0.5),
        (1.0, -1.0, 1.0, 2, 1.0),  # a clock going back adds nothing
        (0.0, 5.0, 0.0, 2, 0.0),
    ],
)
def test_refill(tokens, hours, per_hour, burst, expected):
    bucket = Bucket("k", burst, per_hour, "r")
    assert refill(tokens, NOW - timedelta(hours=hours), NOW, bucket) == pytest.approx(expected)


def test_take_tokens_is_all_or_nothing():
    buckets = ack_buckets("email", "ann@example.org", LIMITS)
    stored: dict[str, tuple[float, datetime]] = {}
    outcomes = []
    for _ in range(4):
        reason, levels = take_tokens(buckets, stored, NOW)
        stored = {key: (level, NOW) for key, level in levels.items()}
        outcomes.append(reason)
    # recipient_burst = 2: two acknowledgements, then the recipient's bucket is empty.
    assert outcomes == [None, None, "rate limit: recipient", "rate limit: recipient"]
    # The refused ones took nothing from the domain's bucket: 3 - 2 left 1.
    assert stored["domain:example.org"][0] == pytest.approx(1.0)
    # An hour later the recipient has one token again (1.0 an hour), the domain its last.
    reason, levels = take_tokens(buckets, stored, NOW + timedelta(hours=1))
    assert reason is None
    stored = {key: (level, NOW) for key, level in levels.items()}
    other = ack_buckets("email", "bob@example.org", LIMITS)
    assert take_tokens(other, stored, NOW)[0] == "rate limit: recipient domain"


# --- threading: an unverified sender -----------------------------------------------------------


def case(id_: int, contact: int, status: str = "open") -> CaseView:
    return CaseView(id_, f"C-{id_:06d}", contact, status, None, NOW - timedelta(hours=1))


WINDOW = timedelta(days=7)


@pytest.mark.parametrize(
    ("candidates", "action", "case_id", "unverified"),
    [
        # Verified: the follow-up joins the contact's open case, as before.
        (Candidates(7, [], frozenset(), [case(1, 7)]), "join", 1, False),
        # Unverified From of the same contact: its own case, marked.
        (Candidates(7, [], frozenset(), [case(1, 7)], sender_verified=False), "new", None, True),
        # ... even when it cites the case's reference or replies to its mail.
        (
            Candidates(7, [("reference", case(1, 7))], frozenset(), [case(1, 7)], False),
            "new",
            None,
            True,
        ),
        (
            Candidates(7, [("in-reply-to", case(1, 7))], frozenset(), [case(1, 7)], False),
            "new",
            None,
            True,
        ),
        # The case's secret token lets it in.
        (
            Candidates(7, [("token", case(1, 7))], frozenset({1}), [case(1, 7)], False),
            "join",
            1,
            False,
        ),
        # A resolved case is not reopened by an unverified From either.
        (
            Candidates(
                7,
                [("in-reply-to", CaseView(1, "C-000001", 7, "resolved", NOW, NOW))],
                frozenset(),
                [],
                False,
            ),
            "new",
            None,
            True,
        ),
    ],
)
def test_an_unverified_sender_joins_only_with_the_token(candidates, action, case_id, unverified):
    decision = decide(candidates, NOW, WINDOW)
    assert (decision.action, decision.case_id, decision.unverified) == (
        action,
        case_id,
        unverified,
    )
    if unverified:
        assert decision.reason.startswith("unauthenticated sender")


def test_an_smtputf8_from_keeps_its_unicode_domain_for_alignment():
    # 8-bit header bytes are UTF-8 (RFC 6532); read as anything else, `exämple.org` in From
    # would never align with the same domain in MAIL FROM, and DMARC would ask DNS for junk.
    from normalizer.mailauth import _headers, from_domain_of

    raw = "From: Zoë Ünal <zoë@exämple.org>\r\nTo: a@b.example\r\n\r\nx\r\n".encode()
    froms = [v for k, v in _headers(raw) if k == "from"]
    assert from_domain_of(froms, "") == "exämple.org"
