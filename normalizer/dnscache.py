"""A bounded DNS answer cache for the sender check, honouring TTLs (RFC 1035, RFC 2308).

Every mail's sender check asks DNS a handful of questions (SPF, DMARC, DKIM keys), and most
mail comes from a few domains: without a cache, 1,000 mails from one provider asked the same
three questions 1,000 times, and every lost UDP datagram cost a parse worker a retry. With
it, a parse process asks once per TTL.

What is kept, and for how long:
- an answer with records: until the smallest TTL of its records, capped at `max_ttl`;
- a negative answer (NXDOMAIN, or no data): RFC 2308 section 5, the smaller of the SOA
  record's own TTL and its MINIMUM field from the authority section, capped at
  `max_negative_ttl`. A negative answer without an SOA is kept `NO_SOA_NEGATIVE_TTL_S`:
  RFC 2308 says such answers "SHOULD NOT be cached" because two servers could pass one
  back and forth forever, which cannot happen here (this cache answers nobody but its own
  process), while stub resolvers that drop the authority section are common (this
  project's machines have one): without it every mail from a domain with no DMARC record
  asked again, and one in about 30 of those questions lost a datagram and waited 1 s;
- a failure (timeout, SERVFAIL, no server): never. A lost datagram must not turn into
  minutes of `temperror` for every mail of that domain.

A TTL of 0 means "do not cache", as a resolver treats it. The cache is bounded in entries
and in bytes of answer data (least recently used first out): the sender of a mail controls
its own name servers, and can answer with large records and many names.

Pure apart from the clock, which a test passes in. Thread-safe: the parse pool's children
are single-threaded today, but `parity normalize` and tests call the check from threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

# A day, as common resolvers cap TTLs (unbound's cache-max-ttl): a domain that fixes its
# SPF record is believed again within a day whatever TTL it once published.
MAX_TTL_S = 86_400
# Three hours, the cap RFC 2308 section 5 recommends for negative answers.
MAX_NEGATIVE_TTL_S = 10_800
# A negative answer that came without an SOA record (see the module's docstring): short,
# so a record published meanwhile is seen within a minute.
NO_SOA_NEGATIVE_TTL_S = 60
DEFAULT_ENTRIES = 10_000
DEFAULT_BYTES = 8 * 1024 * 1024
# Bookkeeping per entry (key, tuple, list), so that many empty answers still count.
_ENTRY_OVERHEAD = 128


@dataclass(frozen=True)
class Cached:
    """One cached answer: its records ([] for a negative answer) and when it expires."""

    records: tuple[Any, ...]
    expires: float
    size: int


def negative_ttl(soa_ttl: int, soa_minimum: int) -> int:
    """RFC 2308 section 5: a negative answer lives min(SOA TTL, SOA MINIMUM) seconds."""
    return max(0, min(soa_ttl, soa_minimum))


class DnsCache:
    def __init__(
        self,
        max_entries: int = DEFAULT_ENTRIES,
        max_bytes: int = DEFAULT_BYTES,
        *,
        max_ttl: int = MAX_TTL_S,
        max_negative_ttl: int = MAX_NEGATIVE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self.clock = clock
        self._entries: OrderedDict[Hashable, Cached] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> tuple[Any, ...] | None:
        """The records cached for `key` (possibly empty: a cached negative answer), or None
        when nothing live is cached."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            if entry.expires <= self.clock():
                self._drop(key)
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.records

    def put(self, key: Hashable, records: Sequence[Any], ttl: int, size: int) -> None:
        """Cache a positive answer of `size` bytes for `ttl` seconds (capped)."""
        self._store(key, tuple(records), min(ttl, self.max_ttl), size)

    def put_negative(self, key: Hashable, ttl: int) -> None:
        """Cache "no such name / no such data" for `ttl` seconds (capped); see negative_ttl."""
        self._store(key, (), min(ttl, self.max_negative_ttl), 0)

    def _store(self, key: Hashable, records: tuple[Any, ...], ttl: int, size: int) -> None:
        cost = size + _ENTRY_OVERHEAD
        if ttl <= 0 or self.max_entries <= 0 or cost > self.max_bytes:
            return
        with self._lock:
            self._drop(key)
            self._entries[key] = Cached(records, self.clock() + ttl, cost)
            self._bytes += cost
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
