"""Per-type Pearson and the totals/composition split for finished mapping runs of one benchmark set.

    .venv/bin/python bench/score_runs.py bench/work/800x1000x12 ours_seed0 upstream_seed0_epochs30000
    .venv/bin/python bench/score_runs.py bench/work/2000x3000x20 ours_seed0 ours_seed1 --per-type

Reads the posterior-mean abundance CSVs that ``run_benchmark.py`` left in each run folder (upstream's
folders are those whose name starts with ``upstream``) and prints, per run, Pearson over all entries and
how it splits (``count_split``: Pearson of the total cells per spot, and of the composition rescaled to
the true totals); with ``--per-type``, also Pearson per cell type next to the true mean cells per spot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from cell2location_nf.benchmark.metrics import count_split, pearson_all, pearson_by_type

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmark import markdown_table, read_estimates, read_truth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="A benchmark set made by run_benchmark.py.")
    parser.add_argument("runs", nargs="+", help="Run folders inside it.")
    parser.add_argument("--per-type", action="store_true", help="Also print Pearson per cell type.")
    args = parser.parse_args()

    samples = sorted(p.stem for p in args.data.glob("sample_*.h5ad"))
    truth = read_truth(args.data, samples)
    split, per_type = [], {}
    for run in args.runs:
        means = read_estimates(args.data / run, samples, "means", not run.startswith("upstream"))
        split.append({"run": run, "pearson_all": pearson_all(truth, means), **count_split(truth, means)})
        per_type[run] = pearson_by_type(truth, means)
    print(markdown_table(pd.DataFrame(split)))
    if args.per_type:
        table = pd.DataFrame(per_type)
        table.loc["mean"] = table.mean()
        table.insert(0, "true cells per spot", truth.mean().reindex(table.index))
        print()
        print(markdown_table(table.reset_index(names="type")))


if __name__ == "__main__":
    main()
