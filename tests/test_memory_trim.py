"""Freed heap memory handed back to the system after work (normalizer/memory.py)."""

from __future__ import annotations

import sys
import threading

import pytest

from normalizer.memory import Trimmer, limit_arenas, release_freed


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# (seconds since the start at each ask, force at each ask) -> which asks trimmed, worked out
# by hand for an interval of 5 s: the first ask always trims; then only 5 s or more after
# the last trim, or when forced.
@pytest.mark.parametrize(
    ("asks", "expected"),
    [
        ([(0, False)], [True]),
        ([(0, False), (1, False), (4.9, False), (5, False)], [True, False, False, True]),
        ([(0, False), (5, False), (9.9, False), (10, False)], [True, True, False, True]),
        # Forced: at once, and the interval counts from it.
        ([(0, False), (1, True), (5, False), (6, False)], [True, True, False, True]),
        ([(0, True), (0, True)], [True, True]),
    ],
)
def test_a_trim_happens_at_most_once_per_interval_unless_forced(
    asks: list[tuple[float, bool]], expected: list[bool]
) -> None:
    clock = Clock()
    calls: list[float] = []
    trimmer = Trimmer(5.0, clock=clock, trim=lambda: calls.append(clock.now))
    got = []
    for at, force in asks:
        clock.now = 100.0 + at
        got.append(trimmer.maybe(force=force))
    assert got == expected
    assert len(calls) == trimmer.trims == expected.count(True)
    assert calls == [100.0 + at for (at, _), trimmed in zip(asks, expected, strict=True) if trimmed]


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_memory_held_by_a_threads_arena_is_given_back() -> None:
    # What the worker's threads do: a batch's buffers allocated in a thread (its own malloc
    # arena) and freed, with something allocated after them still alive. The freed pages
    # stay in the process until a trim.
    size, count = 8192, 12_000  # above pymalloc's 512 bytes: glibc's malloc, 96 MiB
    held: list[bytes] = []

    def allocate() -> None:
        chunks = [bytes(size) for _ in range(count)]
        # Allocated last, so at the top of the arena's heap: kept, it stops the heap from
        # shrinking by itself when everything below it is freed (what a long-lived object
        # made after a batch does in the daemon).
        held.append(bytes(size))
        del chunks

    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    before = rss_kib()
    assert release_freed() is True  # glibc gave pages back
    after = rss_kib()
    # At least a third of the 96 MiB freed left the process (pages, not every byte).
    assert before - after > size * count // 1024 // 3, (before, after)
    held.clear()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_arena_cap_is_set_unless_the_operator_set_one() -> None:
    # The operator's MALLOC_ARENA_MAX was read by glibc at start: left alone.
    assert limit_arenas(2, environ={"MALLOC_ARENA_MAX": "4"}) is False
    # Otherwise glibc takes the cap (mallopt answers 1).
    assert limit_arenas(2, environ={}) is True
