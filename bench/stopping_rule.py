"""Where would the plateau rule (``map-spatial --tol``) stop a finished run, and how noisy is its −ELBO?

    .venv/bin/python bench/stopping_rule.py bench/work/800x1000x12/ours_seed0 bench/work/800x1000x12/ours_seed1

Reads each run's stored −ELBO history (``mapping.mapping_model.h5``) and replays the rule of
``cell2location_nf.inference.svi.plateaued`` on it, for a grid of tolerances and windows, so one run at
the preset tells where a ``--tol`` run of the same seed stops: the schedule's learning rates depend on
the planned epochs only, so the two runs are the same up to that epoch. Also prints the per-epoch
noise of the one-draw −ELBO over the last 1,000 epochs and what it means for the rule: the standard
error of the relative difference of two window means, which a tolerance must clear not to fire on noise.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cell2location_nf.inference.svi import Schedule, plateaued
from cell2location_nf.io.model_store import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmark import markdown_table  # noqa: E402


def stop_epoch(history: list[float], schedule: Schedule) -> int | None:
    """The first epoch after which ``plateaued`` is true, as training would check it, or None."""
    for n in range(1, len(history) + 1):
        if plateaued(history[:n], schedule):
            return n
    return None


def relative_noise(history: list[float], window: int, tail: int = 1000) -> float:
    """Standard error of (mean of one window − mean of the next) / |−ELBO| over the last ``tail`` epochs.

    The per-epoch noise is taken from differences of consecutive epochs (a slow trend barely moves them).
    """
    h = np.asarray(history[-tail:], dtype=np.float64)
    sd = np.std(np.diff(h), ddof=1) / math.sqrt(2)
    return float(sd * math.sqrt(2 / window) / abs(h.mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="Run folders holding mapping.mapping_model.h5.")
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-4, 3e-5, 1e-5, 3e-6, 1e-6])
    parser.add_argument("--windows", type=int, nargs="+", default=[200, 500, 1000])
    parser.add_argument("--min-epochs", type=int, default=Schedule.min_epochs)
    args = parser.parse_args()

    rows = []
    for run in args.runs:
        history = load_model(run / "mapping.mapping_model.h5").history
        for window in args.windows:
            row = {"run": run.name, "epochs": len(history), "window": window,
                   "noise (SE)": f"{relative_noise(history, window):.1e}"}
            for tol in args.tols:
                stop = stop_epoch(history, Schedule(tol=tol, window=window, min_epochs=args.min_epochs))
                row[f"tol {tol:g}"] = "not before the end" if stop is None else f"{stop:,}"
            rows.append(row)
    print(markdown_table(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
