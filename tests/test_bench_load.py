"""The load average a benchmark prints after its run is read after the kernel recomputed it
(bench/webhooks.py): a run shorter than the kernel's 5-second period printed the "before"
figures twice. The clock and the kernel's figures are given to the code as functions."""

from __future__ import annotations

from bench.webhooks import Load, load_after, load_line

BEFORE: Load = (0.73, 0.35, 0.14)
LATER: Load = (1.91, 0.62, 0.24)


def kernel(*figures: Load):
    """The figures os.getloadavg() returns, one per call; the last repeats."""
    left = list(figures)

    def sample() -> Load:
        return left.pop(0) if len(left) > 1 else left[0]

    return sample


def test_after_waits_for_the_kernel_to_recompute() -> None:
    slept: list[float] = []
    after = load_after(BEFORE, kernel(BEFORE, BEFORE, BEFORE, LATER), slept.append)
    assert after == LATER
    assert slept == [0.25, 0.25, 0.25]


def test_after_a_long_run_is_read_at_once() -> None:
    slept: list[float] = []
    assert load_after(BEFORE, kernel(LATER), slept.append) == LATER
    assert slept == []


def test_the_wait_is_bounded_by_one_period() -> None:
    slept: list[float] = []
    assert load_after(BEFORE, kernel(BEFORE), slept.append) == BEFORE
    assert sum(slept) <= 5.5 + 0.25


def test_the_line_says_when_the_figures_did_not_move() -> None:
    assert load_line(BEFORE, LATER) == (
        "  load average before / after: 0.73 0.35 0.14 / 1.91 0.62 0.24"
    )
    assert load_line(BEFORE, BEFORE).endswith("0.73 0.35 0.14 (not recomputed since before)")
