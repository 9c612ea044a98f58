"""Does an environment setting change the speed of a Visium-HD-sized slide's training step or warm start?

    .venv/bin/python bench/env_ab.py --b THP_MEM_ALLOC_ENABLE=1                 # torch's huge pages, off then on
    .venv/bin/python bench/env_ab.py --b THP_MEM_ALLOC_ENABLE=1 --part warm_start --rounds 3

``tcache_ab.py`` compares glibc's cache off and on; this compares any two sets of environment variables, ``--a``
and ``--b`` (``NAME=VALUE`` each; both start from the pipeline's environment, glibc's cache off, unless they set
``GLIBC_TUNABLES`` themselves), in the same alternating order (a, b, b, a, ...) after one run that is not counted,
and prints each run's figure, the median per setting and their ratio. ``--part steps`` runs
``minibatch_step.py`` (ms per step after ``--warmup`` steps), ``--part warm_start`` ``warm_start_cost.py``
(ms per update).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from cell2location_nf.inference.allocator import TCACHE_OFF

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tcache_ab import FIGURES, add_part_options, order, part_command, print_summary  # noqa: E402

PIPELINE_ENV = {"GLIBC_TUNABLES": TCACHE_OFF}  # nextflow.config's env for every task


def parse_env(pairs: list[str]) -> dict[str, str]:
    """NAME=VALUE strings as a dict; an error names the malformed one."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"expected NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


def run_once(args: argparse.Namespace, extra: dict[str, str]) -> float:
    """One run of the part with the extra variables; returns its figure."""
    env = {**os.environ, **PIPELINE_ENV, **extra}
    out = subprocess.run(part_command(args), env=env, capture_output=True, text=True, check=True).stdout
    return float(FIGURES[args.part].search(out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="*", default=[], help="NAME=VALUE settings of arm a (none: the pipeline's)")
    parser.add_argument("--b", nargs="+", required=True, help="NAME=VALUE settings of the second arm")
    add_part_options(parser)
    args = parser.parse_args()

    arms = {"a": parse_env(args.a), "b": parse_env(args.b)}
    unit = "ms per step" if args.part == "steps" else "ms per update"
    print(f"{args.dataset}, {args.part}, {args.threads} threads; {unit}; a: {arms['a'] or 'the pipeline'}, "
          f"b: {arms['b']}", flush=True)
    figures: dict[str, list[float]] = {"a": [], "b": []}
    figure = run_once(args, arms["a"])
    print(f"not counted: a {figure:8.1f}", flush=True)
    for i, arm in enumerate(order(args.rounds, "a", "b")):
        figure = run_once(args, arms[arm])
        figures[arm].append(figure)
        print(f"run {i + 1:2d}  {arm}  {figure:8.1f}", flush=True)
    print_summary(figures, unit)


if __name__ == "__main__":
    main()
