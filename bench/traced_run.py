"""Bench-only: run `parity` with memory probes, for the soak bench's --trace mode.

    python -m bench.traced_run OUT.jsonl [--heap] -- --settings FILE run --only smtp

With --heap it starts tracemalloc before Parity is imported. It runs Parity's CLI in this
process. On
SIGUSR1 it appends one JSON line to OUT.jsonl, telling apart where resident memory went:
- the Python heap (tracemalloc's traced bytes) and its top growth since the first probe,
  by source line;
- SQLite's own allocations (sqlite3_memory_used: page caches, prepared statements), which
  tracemalloc cannot see;
- glibc malloc's view (mallinfo2): bytes in use versus bytes held free in its arenas, which
  is fragmentation or memory not yet returned to the system.
Nothing of this lives in the product; tracemalloc slows the server, so figures measured
with it are for finding growth, not for throughput.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import re
import signal
import sys
import tempfile
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # the ctypes layout of glibc's struct mallinfo2
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_info() -> dict[str, int]:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallinfo2"):
        return {}
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {
        "arena_kib": info.arena // 1024,  # from the main heap (brk) and other arenas' heaps
        "mmapped_kib": info.hblkhd // 1024,  # large blocks mmapped one by one
        "in_use_kib": info.uordblks // 1024,
        "free_held_kib": info.fordblks // 1024,  # free but not returned: fragmentation
    }


def _sqlite_memory() -> dict[str, int]:
    import _sqlite3

    # The module links libsqlite3; its symbols resolve through the module's handle.
    lib = ctypes.CDLL(_sqlite3.__file__)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
    return {
        "used_kib": lib.sqlite3_memory_used() // 1024,
        "highwater_kib": lib.sqlite3_memory_highwater(0) // 1024,
    }


def _smaps() -> dict[str, int]:
    """Resident KiB by kind of mapping: the brk heap, anonymous maps, files, SQLite's -shm."""
    kinds: dict[str, int] = {"heap": 0, "anonymous": 0, "shm": 0, "files": 0}
    kind = "anonymous"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
            kind = (
                "heap"
                if name == "[heap]"
                else "shm"
                if name.endswith("-shm")
                else "files"
                if name.startswith("/")
                else "anonymous"
            )
        elif head[:1] == ["Rss:"]:
            kinds[kind] += int(head[1])
    return kinds


def _obmalloc() -> dict[str, int]:
    """Python's small-object allocator: its arenas (mmapped, outside malloc), their use."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode("ascii", "replace")
    found: dict[str, int] = {}
    for key, pattern in (
        ("objects_kib", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
        ("arenas_mapped_kib", r"arenas \* \d+ bytes/arena\s*=\s*([\d,]+)"),
        ("arenas_in_use", r"# arenas allocated current\s*=\s*([\d,]+)"),
    ):
        match = re.search(pattern, text)
        if match:
            value = int(match.group(1).replace(",", ""))
            found[key] = value if key == "arenas_in_use" else value // 1024
    return found


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Probe:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.first: tracemalloc.Snapshot | None = None
        self.count = 0

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        record: dict[str, Any] = {
            "probe": self.count,
            "rss_kib": _rss_kib(),
            "sqlite": _sqlite_memory(),
            "malloc": _malloc_info(),
            "smaps_kib": _smaps(),
            "obmalloc": _obmalloc(),
            "gc_counts": gc.get_count(),
        }
        self.count += 1
        if tracemalloc.is_tracing():
            self._heap(record)
        with self.out.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def _heap(self, record: dict[str, Any]) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        current, peak = tracemalloc.get_traced_memory()
        record["python_heap_kib"] = current // 1024
        record["python_heap_peak_kib"] = peak // 1024
        if self.first is None:
            self.first = snapshot
        else:
            record["top_growth"] = [
                {"where": str(stat.traceback[0]), "kib": stat.size_diff // 1024, "n": stat.count}
                for stat in snapshot.compare_to(self.first, "lineno")[:15]
            ]


def main() -> int:
    out, *rest = sys.argv[1:]
    heap = rest[:1] == ["--heap"]
    rest = rest[1:] if heap else rest
    args = rest[1:] if rest[:1] == ["--"] else rest
    if heap:
        tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, Probe(Path(out)))
    from parity.cli import main as parity_main

    return parity_main(args)


if __name__ == "__main__":
    sys.exit(main())
