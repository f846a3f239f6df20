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


# ResNet-50-shaped conv layers (and a MobileNet depthwise one) that the
# interpreter benchmarks time one by one:
# (name, H=W, in channels, out channels, kernel, stride, groups)
RESNET50_LAYERS = [
    ("stem 7x7/2", 224, 3, 64, 7, 2, 1),
    ("layer1 1x1", 56, 64, 64, 1, 1, 1),
    ("layer1 3x3", 56, 64, 64, 3, 1, 1),
    ("layer1 1x1 expand", 56, 64, 256, 1, 1, 1),
    ("layer2 3x3/2", 56, 128, 128, 3, 2, 1),
    ("layer3 3x3", 14, 256, 256, 3, 1, 1),
    ("layer4 3x3", 7, 512, 512, 3, 1, 1),
    ("layer4 1x1 expand", 7, 512, 2048, 1, 1, 1),
    ("depthwise 3x3 (MobileNet)", 56, 144, 144, 3, 1, 144),
]
