"""What the `fast` preset's composition start costs: seconds of its Poisson NMF on a benchmark set.

    .venv/bin/python bench/composition_start_cost.py bench/work/800x1000x12 bench/work/2000x3000x20

For each set that ``run_benchmark.py`` made, loads the data and signatures as ``map-spatial`` does,
builds the model and times ``start_composition`` (300 multiplicative updates on the sparse counts)
``--repeats`` times in this process, after one untimed call; prints the median and the range.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cell2location_nf.stages.mapping import batch_codes, build_model, settings_for_schedule, start_composition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_training import load_benchmark_set  # noqa: E402


def time_start(data: Path, repeats: int) -> list[float]:
    """Seconds of each timed composition start on the benchmark set in ``data``."""
    _, adata, table, _ = load_benchmark_set(data)
    settings = settings_for_schedule("fast", n_obs=adata.n_obs)
    model = build_model(adata, table, settings, torch.device("cpu"))
    batch = batch_codes(adata)
    seconds = []
    for attempt in range(repeats + 1):
        init = model.initial_values(batch)
        start = time.perf_counter()
        start_composition(init, adata.X, model, settings.composition_start)
        if attempt:  # the first call warms up torch's sparse kernels
            seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="+", help="benchmark set folders (bench/work/<set>)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| set | median s | range s |")
    print("|---|---|---|")
    for data in args.data:
        seconds = time_start(data, args.repeats)
        print(f"| {data.name} | {np.median(seconds):.2f} | {min(seconds):.2f}–{max(seconds):.2f} |")


if __name__ == "__main__":
    main()
