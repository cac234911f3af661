"""How much the depth cap saves: nh3 on deeply nested HTML, with and without `cap_depth`.

nh3 is quadratic in nesting depth, so the figures are ratios against the capped run of the
same input in the same process. Depths stay small enough to finish in seconds; the curve
says what 100k would cost (measured once at 158 s on this machine, see shared notes).

    python -m bench.mail_depth [--depths 2000,4000,8000]
"""

from __future__ import annotations

import argparse
import time

import nh3

from inbox.web.mailview import cap_depth, sanitize


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depths", default="2000,4000,8000")
    args = parser.parse_args()
    print(f"{'depth':>8} {'nh3 alone s':>12} {'cap+nh3 s':>10} {'cap only s':>10} {'ratio':>7}")
    for depth in (int(d) for d in args.depths.split(",")):
        markup = "<div>" * depth + "deep" + "</div>" * depth
        raw = timed(nh3.clean, markup)
        capped = timed(sanitize, markup)
        cap = timed(cap_depth, markup)
        print(f"{depth:>8} {raw:>12.3f} {capped:>10.3f} {cap:>10.3f} {raw / capped:>7.1f}x")


if __name__ == "__main__":
    main()
