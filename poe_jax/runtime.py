"""Process-level settings that make XLA:CPU programs faster. Opt-in: call them from a
``main`` (the CLI and benchmarks do); importing poe_jax changes nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_large_allocations(threshold: int = 1 << 30) -> bool:
    """Stop glibc from returning large buffers to the OS on every free.

    By default glibc serves allocations over 32 MiB with ``mmap`` and unmaps them
    on ``free``, so every XLA output buffer of that size is page-faulted in again
    on each call (measured: half the time of a 10^7-element composition kernel).
    Raising the mmap and trim thresholds keeps freed memory for reuse. No effect
    (returns False) off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, threshold)
        ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, 2 * threshold)
    except (OSError, AttributeError):
        return False
    return bool(ok_mmap and ok_trim)
