"""Where a running mapping's resident memory sits, by kind of mapping, every few seconds.

    .venv/bin/python bench/heap_monitor.py --out /tmp/heap.tsv &     # then start run_benchmark.py runs

For each running ``cell2location_nf map-spatial`` process (found by its command line; the harness's spawner
is skipped) it appends one row per sample: the run's output folder, seconds since the monitor first saw it,
its thread count and the resident MiB of glibc's main heap (``[heap]``: the main thread's allocations),
of its other arenas' heaps (anonymous mappings of at most 64 MiB aligned to 64 MiB), of other anonymous
mappings (larger ones and small ones apart) and of mapped files. ``run_benchmark.py``'s samples give the
process's total only; this says which allocator's memory a difference between runs is in.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Iterator
from pathlib import Path

ARENA_HEAP = 64 * 2**20  # glibc's largest heap of a thread arena (HEAP_MAX_SIZE on 64-bit), and its alignment
MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+ *(.*)$")
KINDS = ("main_heap", "arena_heaps", "anon_large", "anon_small", "files")


def mapping_processes() -> Iterator[tuple[int, str]]:
    """(pid, output folder name) of every running map-spatial process with more than one thread."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            threads = len(list((entry / "task").iterdir()))
        except OSError:
            continue
        if b"cell2location_nf" in argv and b"map-spatial" in argv and threads > 1:
            outdir = argv[argv.index(b"--outdir") + 1].decode() if b"--outdir" in argv else "?"
            yield int(entry.name), Path(outdir).name


def resident_by_kind(pid: int) -> dict[str, int] | None:
    """Resident KiB per kind of mapping, from /proc/<pid>/smaps (None once the process has gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    kib = dict.fromkeys(KINDS, 0)
    kind = None
    for line in text.splitlines():
        head = MAPPING.match(line)
        if head:
            low, high, name = int(head.group(1), 16), int(head.group(2), 16), head.group(3).strip()
            size = high - low
            if name == "[heap]":
                kind = "main_heap"
            elif name:
                kind = "files"
            elif size <= ARENA_HEAP and (low % ARENA_HEAP == 0 or high % ARENA_HEAP == 0):
                kind = "arena_heaps"
            else:
                kind = "anon_large" if size > ARENA_HEAP else "anon_small"
        elif line.startswith("Rss:") and kind is not None:
            kib[kind] += int(line.split()[1])
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
            for pid, run in mapping_processes():
                kib = resident_by_kind(pid)
                if kib is None:
                    continue
                seconds = max(0.0, time.time() - first_seen.setdefault(pid, time.time()))
                try:
                    threads = len(list(Path(f"/proc/{pid}/task").iterdir()))
                except OSError:
                    continue
                out.write("\t".join((run, f"{seconds:.0f}", str(threads), *(str(kib[k] // 1024) for k in KINDS)))
                          + "\n")
            time.sleep(args.every)


if __name__ == "__main__":
    main()
