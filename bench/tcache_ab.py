"""Does glibc's per-thread cache (tcache) change the speed of a Visium-HD-sized slide's training or warm start?

    .venv/bin/python bench/tcache_ab.py                                  # training steps, 4 runs per setting
    .venv/bin/python bench/tcache_ab.py --perf                           # and the steps' time in glibc's allocator
    .venv/bin/python bench/tcache_ab.py --part warm_start --rounds 3     # the Poisson-NMF warm start instead

The pipeline starts its tasks with the cache off (``inference/allocator.py``, ``TCACHE_OFF``); glibc's default
keeps it on (7 blocks per size). One whole 200,000-bin run takes over 20 minutes and the machines here drift by
more than the difference sought, so this runs the part in question many times, alternating the two settings in
the order off, on, on, off, ... (each round reverses the last), after one run that is not counted (the first run
of a series was the slowest in both settings), and prints each run's figure, the median per setting and their
ratio. ``--part steps`` runs ``minibatch_step.py`` (ms per step after ``--warmup`` steps),
``--part warm_start`` runs ``warm_start_cost.py`` (ms per update). With ``--perf`` (Linux ``perf`` on PATH) each
run also records the timed part and prints the share of samples that fell in glibc's allocator (``malloc``,
``free`` and their helpers in ``libc.so.6``) and in libc as a whole. The slide comes from ``run_scale.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = {"off": "glibc.malloc.tcache_count=0", "on": "glibc.malloc.tcache_count=7"}
ALLOCATOR = re.compile(r"^(_?_?libc_)?(malloc|free|cfree|calloc|realloc|memalign|posix_memalign)\b"
                       r"|^_int_|^_mid_memalign|^malloc_consolidate|^unlink_chunk|^sysmalloc|^systrim|^tcache_|^arena_")
FIGURES = {"steps": re.compile(r"^\s+total\s+([\d.]+)", re.M),
           "warm_start": re.compile(r"iterations: [\d.]+ s \((\d+) ms each\)")}


def order(rounds: int, first: str = "off", second: str = "on") -> list[str]:
    """off, on, on, off, off, on, ...: every round reverses the one before, so a steady drift cancels."""
    return [name for r in range(rounds) for name in ((first, second) if r % 2 == 0 else (second, first))]


def print_summary(figures: dict[str, list[float]], unit: str, prefix: str = "") -> None:
    """The median of each of the two settings, their ratio and their ranges."""
    (first, low), (second, high) = figures.items()
    a, b = statistics.median(low), statistics.median(high)
    print(f"median: {prefix}{first} {a:.1f}, {second} {b:.1f} ({unit}); {first}/{second} {a / b:.3f}")
    print(f"range: {prefix}{first} {min(low):.1f}-{max(low):.1f}, {second} {min(high):.1f}-{max(high):.1f}")


def perf_shares(record: Path) -> tuple[float, float]:
    """Percent of the recorded samples in glibc's allocator functions, and in libc.so.6 as a whole."""
    report = subprocess.run(["perf", "report", "-i", str(record), "--stdio", "--no-children", "--sort", "dso,sym"],
                            capture_output=True, text=True, check=True).stdout
    allocator = libc = 0.0
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[\.\]\s+(\S+)", line)
        if match and match.group(2).startswith("libc.so"):
            libc += float(match.group(1))
            allocator += float(match.group(1)) if ALLOCATOR.search(match.group(3)) else 0.0
    return allocator, libc


def part_command(args: argparse.Namespace) -> list[str]:
    """The command that runs the part once (shared with ``env_ab.py``)."""
    if args.part == "steps":
        cmd = [sys.executable, str(HERE / "minibatch_step.py"), "--warmup", str(args.warmup)]
        cmd += ["--steps", str(args.steps)]
    else:
        cmd = [sys.executable, str(HERE / "warm_start_cost.py"), "--iterations", str(args.iterations)]
    return cmd + ["--dataset", args.dataset, "--threads", str(args.threads)]


def run_once(args: argparse.Namespace, setting: str, record: Path | None) -> tuple[float, str]:
    """One run of the part under the setting; returns its figure (ms per step or per update) and the perf shares."""
    cmd = part_command(args) + (["--perf-record", str(record)] if record else [])
    env = {**os.environ, "GLIBC_TUNABLES": SETTINGS[setting]}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    figure = float(FIGURES[args.part].search(out).group(1))
    if not record:
        return figure, ""
    allocator, libc = perf_shares(record)
    return figure, f"  allocator {allocator:5.2f} %  libc {libc:5.2f} %"


def add_part_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose and size the part run (shared with ``env_ab.py``)."""
    parser.add_argument("--part", choices=sorted(FIGURES), default="steps")
    parser.add_argument("--dataset", default="hd_200000x5000x30")
    parser.add_argument("--rounds", type=int, default=4, help="runs per setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=30, help="steps: untimed steps first (they compile)")
    parser.add_argument("--steps", type=int, default=100, help="steps: timed steps")
    parser.add_argument("--iterations", type=int, default=20, help="warm_start: updates")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_part_options(parser)
    parser.add_argument("--perf", action="store_true", help="the share of the part's time in glibc's allocator")
    parser.add_argument("--no-settle", dest="settle", action="store_false", help="count the first run too")
    args = parser.parse_args()

    unit = "ms per step" if args.part == "steps" else "ms per update"
    print(f"{args.dataset}, {args.part}, {args.threads} threads; {unit}", flush=True)
    figures: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="tcache_ab_") as tmp:
        if args.settle:
            figure, _ = run_once(args, "off", None)
            print(f"not counted: cache off {figure:8.1f}", flush=True)
        for i, setting in enumerate(order(args.rounds)):
            record = Path(tmp) / f"run{i}.data" if args.perf else None
            figure, shares = run_once(args, setting, record)
            figures[setting].append(figure)
            print(f"run {i + 1:2d}  cache {setting:3s}  {figure:8.1f}{shares}", flush=True)
    print_summary(figures, unit, prefix="cache ")


if __name__ == "__main__":
    main()
