"""Helpers shared by the benchmark scripts (run as `python benchmarks/<script>.py`,
so this directory is on sys.path)."""

from __future__ import annotations

import time


def best_of(fn, repeat: int) -> float:
    """Seconds of the fastest of `repeat` calls of fn, after one warm-up call."""
    fn()  # warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
