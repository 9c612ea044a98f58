"""Where a running mapping's resident memory sits, by kind of mapping, every few seconds.

    .venv/bin/python bench/heap_monitor.py --out /tmp/heap.tsv &     # then start run_benchmark.py runs

For each running ``cell2location_nf map-spatial`` process, and upstream's ``upstream_map.py`` (found by
their command lines through psutil; the harness's spawner is skipped), it appends one row per sample: the
run's output folder, seconds since the monitor first saw it, its thread count and the resident MiB of
glibc's main heap (``[heap]``: the main thread's allocations), of its other arenas' heaps (anonymous
mappings of at most 64 MiB aligned to 64 MiB), of other anonymous mappings (larger ones and small ones
apart) and of mapped files. Under another allocator (``LD_PRELOAD``) only the total means the same.
``run_benchmark.py``'s samples give the process's total only; this says which allocator's memory a
difference between runs is in.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

ARENA_HEAP = 64 * 2**20  # glibc's largest heap of a thread arena (HEAP_MAX_SIZE on 64-bit), and its alignment
KINDS = ("main_heap", "arena_heaps", "anon_large", "anon_small", "files")


def mapping_processes() -> Iterator[tuple[int, str, int]]:
    """(pid, output folder name, threads) of every running mapping (ours or upstream's), more than one thread."""
    for proc in psutil.process_iter(["cmdline", "num_threads"]):
        argv, threads = proc.info["cmdline"] or [], proc.info["num_threads"] or 0
        ours = "cell2location_nf" in argv and "map-spatial" in argv
        upstream = any(arg.endswith("upstream_map.py") for arg in argv)
        if (ours or upstream) and threads > 1:
            outdir = argv[argv.index("--outdir") + 1] if "--outdir" in argv else "?"
            yield proc.pid, Path(outdir).name, threads


def kind_of_mapping(addr: str, path: str) -> str:
    """Which of KINDS a mapping is, from its address range and path (psutil names anonymous ones ``[anon]``)."""
    low, high = (int(end, 16) for end in addr.split("-"))
    if path == "[heap]":
        return "main_heap"
    if path != "[anon]":
        return "files"  # files, and the kernel's named mappings ([stack], [vdso], ...)
    if high - low <= ARENA_HEAP and (low % ARENA_HEAP == 0 or high % ARENA_HEAP == 0):
        return "arena_heaps"
    return "anon_large" if high - low > ARENA_HEAP else "anon_small"


def resident_by_kind(pid: int) -> dict[str, int] | None:
    """Resident KiB per kind of mapping (None once the process has gone)."""
    try:
        maps = psutil.Process(pid).memory_maps(grouped=False)
    except psutil.Error:
        return None
    kib = dict.fromkeys(KINDS, 0)
    for mapping in maps:
        kib[kind_of_mapping(mapping.addr, mapping.path)] += mapping.rss // 1024
    return kib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="TSV file to append the samples to")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    args = parser.parse_args()
    first_seen: dict[int, float] = {}
    new_file = not args.out.exists()
    with args.out.open("a", buffering=1) as out:
        if new_file:
            out.write("\t".join(("run", "seconds", "threads", *(f"{k}_mib" for k in KINDS))) + "\n")
        while True:
            for pid, run, threads in mapping_processes():
                kib = resident_by_kind(pid)
                if kib is None:
                    continue
                seconds = max(0.0, time.time() - first_seen.setdefault(pid, time.time()))
                out.write("\t".join((run, f"{seconds:.0f}", str(threads), *(str(kib[k] // 1024) for k in KINDS)))
                          + "\n")
            time.sleep(args.every)


if __name__ == "__main__":
    main()
