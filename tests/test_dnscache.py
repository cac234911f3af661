"""The sender check's DNS cache: TTLs, RFC 2308 negative caching, bounds; and the resolver
using it against a real DNS server (tests/dns_server.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from normalizer.dnscache import NO_SOA_NEGATIVE_TTL_S, DnsCache, negative_ttl
from normalizer.mailauth import Dns, DnsTempError, MailAuthSettings
from tests.support.dns_server import DnsServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# (SOA TTL, SOA MINIMUM, seconds a negative answer lives): RFC 2308 section 5 takes the
# smaller of the two.
NEGATIVE = [
    (3600, 300, 300),
    (60, 86400, 60),
    (0, 3600, 0),
    (900, 900, 900),
]


@pytest.mark.parametrize(("soa_ttl", "minimum", "expected"), NEGATIVE)
def test_negative_ttl_is_the_smaller_of_the_soa_ttl_and_minimum(
    soa_ttl: int, minimum: int, expected: int
) -> None:
    assert negative_ttl(soa_ttl, minimum) == expected


def test_an_answer_lives_its_ttl_and_no_longer() -> None:
    clock = Clock()
    cache = DnsCache(clock=clock)
    cache.put("k", ["a", "b"], ttl=30, size=10)
    clock.now += 29.9
    assert cache.get("k") == ("a", "b")
    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0 and cache.bytes == 0


def test_ttl_zero_is_never_cached() -> None:
    cache = DnsCache(clock=Clock())
    cache.put("k", ["a"], ttl=0, size=1)
    cache.put_negative("n", 0)
    assert cache.get("k") is None and cache.get("n") is None


def test_ttls_are_capped() -> None:
    clock = Clock()
    cache = DnsCache(clock=clock, max_ttl=100, max_negative_ttl=10)
    cache.put("k", ["a"], ttl=2**31 - 1, size=1)
    cache.put_negative("n", 2**31 - 1)
    clock.now += 10
    assert cache.get("k") == ("a",)
    assert cache.get("n") is None  # the negative cap, 10 s, is over
    clock.now += 90
    assert cache.get("k") is None


def test_a_negative_answer_is_an_empty_hit_not_a_miss() -> None:
    clock = Clock()
    cache = DnsCache(clock=clock)
    cache.put_negative("n", 60)
    assert cache.get("n") == ()
    assert (cache.hits, cache.misses) == (1, 0)


def test_least_recently_used_goes_first_when_full() -> None:
    cache = DnsCache(max_entries=3, clock=Clock())
    for key in "abc":
        cache.put(key, [key], ttl=60, size=1)
    assert cache.get("a") == ("a",)  # a is now the most recent
    cache.put("d", ["d"], ttl=60, size=1)
    assert [k for k in "abcd" if cache.get(k) is not None] == ["a", "c", "d"]


def test_bytes_are_bounded_whatever_the_answers_sizes() -> None:
    # A hostile sender's name servers answer with big records under many names.
    limit = 10_000
    cache = DnsCache(max_entries=1_000_000, max_bytes=limit, clock=Clock())
    for i in range(1000):
        cache.put(f"name{i}", ["x" * 900], ttl=3600, size=900)
        assert cache.bytes <= limit
    # One answer larger than the whole cache is not kept, and evicts nothing.
    kept = len(cache)
    cache.put("huge", ["y"], ttl=3600, size=limit + 1)
    assert cache.get("huge") is None and len(cache) == kept
    # The newest answers survived, the oldest went.
    assert cache.get("name999") is not None and cache.get("name0") is None


def test_replacing_an_entry_keeps_the_byte_count_right() -> None:
    cache = DnsCache(clock=Clock())
    cache.put("k", ["a"], ttl=60, size=500)
    cache.put("k", ["b"], ttl=60, size=100)
    cache.put_negative("k", 60)
    assert len(cache) == 1
    cache.clear()
    assert cache.bytes == 0


# --- against a real server ---------------------------------------------------------------------


ZONE = """$TTL 60
spf-pass.example.     IN TXT "v=spf1 ip4:127.0.0.1 -all"
spf-fail.example.     IN TXT "v=spf1 ip4:192.0.2.30 -all"
spf-softfail.example. IN TXT "v=spf1 ip4:192.0.2.31 ~all"
spf-none.example.     IN A   192.0.2.32
"""


@pytest.fixture
def cached_server(tmp_path: Path) -> Iterator[DnsServer]:
    """Answers with the zone's TTLs (60 s) and an SOA (TTL 300, MINIMUM 30) on negatives.
    Its own zone, without the shared fixture's catch-all wildcard, so NXDOMAIN happens."""
    (tmp_path / "cache.zone").write_text(ZONE)
    (tmp_path / "failures.txt").write_text("servfail spf-temperror.example\n")
    server = DnsServer(tmp_path, ttl=None, negative_soa=(300, 30))
    yield server
    server.close()


def _asked(server: DnsServer, name: str) -> int:
    return sum(1 for asked, _ in server.asked if asked == name)


def test_a_positive_answer_is_asked_once_per_process(cached_server: DnsServer) -> None:
    settings = cached_server.settings()
    first = Dns(settings).txt("spf-pass.example")
    second = Dns(settings).txt("SPF-PASS.example.")  # another mail, the same name
    assert first == second == [b"v=spf1 ip4:127.0.0.1 -all"]
    assert _asked(cached_server, "spf-pass.example") == 1


def test_nxdomain_with_an_soa_is_cached(cached_server: DnsServer) -> None:
    settings = cached_server.settings()
    assert Dns(settings).txt("_dmarc.nowhere-at-all.invalid") == []
    assert Dns(settings).txt("_dmarc.nowhere-at-all.invalid") == []
    assert _asked(cached_server, "_dmarc.nowhere-at-all.invalid") == 1


def test_no_data_with_an_soa_is_cached(cached_server: DnsServer) -> None:
    # spf-none.example has an A record and no TXT.
    settings = cached_server.settings()
    assert Dns(settings).txt("spf-none.example") == []
    assert Dns(settings).txt("spf-none.example") == []
    assert _asked(cached_server, "spf-none.example") == 1


def test_ttl_zero_answers_are_asked_again(tmp_path: Path) -> None:
    (tmp_path / "cache.zone").write_text(ZONE)
    (tmp_path / "failures.txt").write_text("")
    server = DnsServer(tmp_path)  # the shared server's way: TTL 0, negatives with SOA TTL 0
    try:
        settings = server.settings()
        for _ in range(2):
            assert Dns(settings).txt("_dmarc.nowhere-at-all.invalid") == []
            assert Dns(settings).txt("spf-pass.example") == [b"v=spf1 ip4:127.0.0.1 -all"]
        assert _asked(server, "_dmarc.nowhere-at-all.invalid") == 2
        assert _asked(server, "spf-pass.example") == 2
    finally:
        server.close()


def test_a_negative_without_soa_is_kept_a_minute(tmp_path: Path) -> None:
    # A stub resolver that drops the authority section (this project's machines have one).
    (tmp_path / "cache.zone").write_text(ZONE)
    (tmp_path / "failures.txt").write_text("")
    server = DnsServer(tmp_path, negative_soa=None)
    try:
        settings = server.settings()
        assert Dns(settings).txt("_dmarc.no-soa.invalid") == []
        assert Dns(settings).txt("_dmarc.no-soa.invalid") == []
        assert _asked(server, "_dmarc.no-soa.invalid") == 1
        key = ((f"127.0.0.1:{server.port}",), "_dmarc.no-soa.invalid", "TXT")
        entry = Dns(settings).cache._entries[key]
        assert 0 < entry.expires - time.monotonic() <= NO_SOA_NEGATIVE_TTL_S
    finally:
        server.close()


def test_a_record_added_later_is_seen_by_the_next_mail_on_the_shared_servers_terms(
    tmp_path: Path,
) -> None:
    (tmp_path / "cache.zone").write_text(ZONE)
    (tmp_path / "failures.txt").write_text("")
    server = DnsServer(tmp_path)
    try:
        settings = server.settings()
        assert Dns(settings).txt("late.example") == []
        server.add('late.example. IN TXT "v=spf1 -all"')
        assert Dns(settings).txt("late.example") == [b"v=spf1 -all"]
    finally:
        server.close()


def test_failures_are_never_cached(cached_server: DnsServer) -> None:
    # tests/fixtures/dns/failures.txt: SERVFAIL for this name.
    failing = next(name for how, name in cached_server.failures if how == "servfail")
    settings = cached_server.settings(timeout=0.5)
    for _ in range(2):
        with pytest.raises(DnsTempError):
            Dns(settings).txt(failing)
    assert _asked(cached_server, failing) >= 2


def test_the_cache_can_be_turned_off(cached_server: DnsServer) -> None:
    settings = MailAuthSettings(
        nameservers=[f"127.0.0.1:{cached_server.port}"], timeout_seconds=1.0, cache_entries=0
    )
    Dns(settings).txt("spf-fail.example")
    Dns(settings).txt("spf-fail.example")
    assert _asked(cached_server, "spf-fail.example") == 2
    # Turned on again, the same process caches.
    on = cached_server.settings()
    Dns(on).txt("spf-softfail.example")
    Dns(on).txt("spf-softfail.example")
    assert _asked(cached_server, "spf-softfail.example") == 1
