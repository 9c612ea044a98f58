"""Keep freed memory in the process between training steps (glibc malloc settings).

Every CPU step allocates and frees the same few (locations x genes) arrays. glibc serves blocks above its
mmap threshold (128 KiB to 32 MiB, adapting) with fresh ``mmap`` pages and hands them back to the kernel on
free, so each step page-faults and zero-fills all of them again: on the 800 x 1,000 benchmark that was
half of a step's time (``docs/performance.md``). Raising the mmap and trim thresholds lets freed blocks
be reused as they are. The same arrays are alive at the peak, but memory freed stays with the process until
it exits, which a pipeline task soon does.

With glibc's per-thread cache (tcache) on, the main heap that holds the steps' arrays settled 360-600 MiB
larger in 7 of 11 2,000 x 3,000 runs, and in none of 7 with the cache off. The cache can
only be switched off before the process starts, so the pipeline starts its tasks with ``TCACHE_OFF`` in
``GLIBC_TUNABLES`` (``nextflow.config``, ``env``) and the thresholds still come from here (bench/RESULTS.md,
"glibc's per-thread cache off in the pipeline's tasks").

Transparent huge pages: on Linux's default ``madvise`` policy a process gets 2 MiB pages only where it asks
for them. torch's CPU allocator asks (``madvise(MADV_HUGEPAGE)`` on blocks of 2 MiB and more) when
``THP_MEM_ALLOC_ENABLE=1`` is in the environment when it first allocates, so the CLI sets it before torch is
imported (:func:`request_huge_pages`); a user's own value wins. At 200,000 bins this made training with the
cache off as fast as with it on (bench/RESULTS.md, "Transparent huge pages").
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
TCACHE_OFF = "glibc.malloc.tcache_count=0"  # GLIBC_TUNABLES of the pipeline's tasks (nextflow.config, env)
USER_THRESHOLDS = ("glibc.malloc.mmap_threshold=", "glibc.malloc.trim_threshold=")
TORCH_HUGE_PAGES = "THP_MEM_ALLOC_ENABLE"  # read once by torch's CPU allocator, at its first allocation

_applied: bool | None = None


def user_tuned_malloc() -> bool:
    """The user set glibc's mmap or trim threshold themselves (environment); theirs win.

    Other tunables (the pipeline's ``TCACHE_OFF``, an arena limit) keep our thresholds.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(setting in tunables for setting in USER_THRESHOLDS) or any(
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


def request_huge_pages() -> bool:
    """Have torch's CPU allocator ask for transparent huge pages; returns whether they will be asked for.

    Must run before torch is imported (it reads the variable once); a value already in the environment is kept.
    """
    os.environ.setdefault(TORCH_HUGE_PAGES, "1")
    return os.environ[TORCH_HUGE_PAGES].strip() not in ("", "0")
