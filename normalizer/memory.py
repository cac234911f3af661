"""Giving the heap memory a long-running process has freed back to the system.

The daemon parses and files mail in threads (the worker's trips run in the event loop's
thread pool, the parse feed in a thread of its own), and glibc's malloc gives each thread
an arena of its own. A message's bytes and its parse are freed once it is filed, but an
arena keeps the freed pages for its next allocation, so over a long run the process's RSS
climbs with every arena that held a large batch once: the 20,000-mail soak grew 15.6 % with
the Python heap itself flat (bench/soak.py --trace-heap: 77 MiB in use throughout, 108 MiB
freed and held by malloc at the end; docs/benchmarks/soak.md). `malloc_trim(0)` hands
those pages back, from every arena. It takes a few milliseconds, so `Trimmer` calls it at
most once per interval, from the worker's thread, never from the event loop.

The daemon also caps glibc's arenas at ARENAS (`limit_arenas`, unless the operator set
MALLOC_ARENA_MAX): glibc makes up to eight per core, one per thread that allocates while
another holds an arena, and each keeps its own freed pages. With both, the 20,000-mail soak
grew 4.0 % instead of 15.6 %, and caught up no slower.

Elsewhere than glibc (musl, macOS) there is no malloc_trim nor mallopt, and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from functools import lru_cache

# The least time between two trims: a trim walks every arena's free pages.
TRIM_EVERY_S = 5.0
# malloc arenas for the daemon: two, one for the event loop's thread and one shared by the
# worker's; more threads than arenas take turns, which the soak measured no slower.
ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def limit_arenas(arenas: int = ARENAS, environ: Mapping[str, str] = os.environ) -> bool:
    """Cap glibc's malloc arenas for this process, before its threads start: whether the
    cap was set (False: not glibc, or MALLOC_ARENA_MAX already says what the operator
    wants, which glibc read at start)."""
    if "MALLOC_ARENA_MAX" in environ:
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def release_freed() -> bool | None:
    """Give freed heap pages back to the system: whether any were (glibc's answer), or None
    where the C library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return None
    return bool(trim(0))


class Trimmer:
    """`release_freed` at most once per `every_s`, whichever thread asks."""

    def __init__(
        self,
        every_s: float = TRIM_EVERY_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        trim: Callable[[], object] = release_freed,
    ) -> None:
        self.every_s = every_s
        self._clock = clock
        self._trim = trim
        self._last: float | None = None
        self._lock = threading.Lock()
        self.trims = 0

    def maybe(self, *, force: bool = False) -> bool:
        """Trim if the interval has passed since the last trim (or none was made yet), or
        at once with `force` (the work is done for now: what it freed is all there is)."""
        with self._lock:
            now = self._clock()
            if not force and self._last is not None and now - self._last < self.every_s:
                return False
            self._last = now
        self._trim()
        self.trims += 1
        return True
