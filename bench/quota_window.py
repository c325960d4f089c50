"""`python -m bench.quota_window`: how many images the quota's sliding-window counter really admits.

`RATE_LIMIT` is counted by `limits`' sliding-window counter (service/http/metering.py). It admits at
most the limit's amount N in each clock-aligned window, so an interval of one window's length that
straddles two windows may see more than N. This drives the counter the service uses, with a clock
the script moves, for two callers that take every image they are allowed every 0.1 s: one from the
start of a window, and one that first waits until 1.5 s before a window ends (the worst case: a
full window's images just before the counter turns, then the previous window's weight fading while
it spends again). Prints the most each got in any interval of
the window's length, and in all. No service, no sleeping: the clock is the script's.
"""

from __future__ import annotations

import argparse
import bisect
import time
from collections.abc import Callable

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

STEP_S = 0.1


def admitted_times(limit: str, windows: int, spends: Callable[[float], bool]) -> list[float]:
    """When each admitted image was charged, over `windows` windows, for a caller that tries at every
    step where `spends(seconds since the start)` is true, as long as the counter admits."""
    item = parse(limit)
    now = [1_000_000.0 - 1_000_000.0 % item.get_expiry()]  # starts at a window's start
    real_time = time.time
    time.time = lambda: now[0]  # the counter and its memory storage read the clock here
    try:
        limiter = SlidingWindowCounterRateLimiter(storage_from_string("memory://"))
        times, start = [], now[0]
        for step in range(int(windows * item.get_expiry() / STEP_S)):
            now[0] = start + step * STEP_S
            if spends(now[0] - start):
                while limiter.hit(item, "caller"):
                    times.append(now[0])
        return times
    finally:
        time.time = real_time


def most_in_one_window(times: list[float], window_s: float) -> int:
    return max((bisect.bisect_left(times, start + window_s) - index for index, start in enumerate(times)), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", default="100/minute", help="a RATE_LIMIT item (default: 100/minute)")
    parser.add_argument("--windows", type=int, default=10, help="how many windows to run (default: 10)")
    args = parser.parse_args()
    window_s = parse(args.limit).get_expiry()
    for name, spends in (("from a window's start", lambda _: True),
                         ("from its last 1.5 s", lambda elapsed: elapsed >= window_s - 1.5)):
        times = admitted_times(args.limit, args.windows, spends)
        print(f"{name:>22}: at most {most_in_one_window(times, window_s)} in any {window_s} s; "
              f"{len(times)} in {args.windows} windows ({args.limit})")


if __name__ == "__main__":
    main()
