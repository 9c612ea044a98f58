"""Keep freed memory in the process between training steps (glibc malloc settings).

Every CPU step allocates and frees the same few (locations x genes) arrays. glibc serves blocks above its
mmap threshold (128 KiB to 32 MiB, adapting) with fresh ``mmap`` pages and hands them back to the kernel on
free, so each step page-faults and zero-fills all of them again: on the 800 x 1,000 benchmark that was
half of a step's time (``docs/performance.md``). Raising the mmap and trim thresholds lets freed blocks
be reused as they are. The same arrays are alive at the peak, but memory freed stays with the process until
it exits, which a pipeline task soon does, and in some runs the main heap that holds the steps' arrays settles
400-600 MiB larger on a 2,000 x 3,000 set (free space the steps keep reusing: bench/RESULTS.md, "Where the extra
400-600 MiB of some 2,000-spot runs sits").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 512 * 2**20  # blocks up to this size come from the heap, larger ones from mmap
TRIM_THRESHOLD = 2**31 - 1  # (the largest value mallopt takes) keep freed heap memory for reuse

_applied: bool | None = None


def user_tuned_malloc() -> bool:
    """The user set glibc's malloc settings themselves (environment); theirs win."""
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))


def retain_freed_memory() -> bool:
    """Apply the thresholds once per process; returns whether they are in effect (glibc only)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if user_tuned_malloc():
        log.debug("malloc settings from the environment are kept")
        return _applied
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt): nothing to do
        return _applied
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
