"""Time and memory of the Poisson-NMF warm start (``inference/warm_start.py``) on a synthetic Visium HD slide.

    .venv/bin/python bench/warm_start_cost.py                                    # 200,000 bins, 20 iterations
    .venv/bin/python bench/warm_start_cost.py --dataset hd_20000x5000x30 --iterations 300
    PYTHONPATH=<checkout>/src .venv/bin/python bench/warm_start_cost.py          # another version's code
    .venv/bin/python bench/warm_start_cost.py --perf-record warm.data            # perf's samples of the warm start
    .venv/bin/python bench/warm_start_cost.py --dataset hd_20000x5000x30 --iterations 150 --relaxation 1.5

The slide comes from ``bench/run_scale.py`` (run it first); bins without counts are dropped as the mapping
does, and the true profiles are the signatures. It prints the seconds per iteration and how far the process's
resident memory rose above what it held before the call (sampled every 50 ms, and the kernel's high-water mark),
and the updates made with the half Poisson deviance they end at (``--relaxation``, ``--tol``: ``poisson_nmf``'s).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import cell2location_nf
from cell2location_nf.inference import warm_start
from cell2location_nf.inference.warm_start import poisson_nmf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_sampling import perf_record  # noqa: E402
from slide_cost import ResidentMemory, read_slide, slide_parser  # noqa: E402


def main() -> None:
    parser = slide_parser(__doc__)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--relaxation", type=float, default=1.0)
    parser.add_argument("--tol", type=float, default=0.0)
    parser.add_argument("--perf-record", type=Path, help="record the warm start with Linux perf into this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = args.workdir / args.dataset
    x = read_slide(args).X
    signatures = torch.as_tensor(pd.read_csv(data / "signatures.csv", index_col=0).to_numpy(np.float32).T)
    n_bins = x.shape[0]
    detection, n_cells = torch.ones(n_bins, 1), torch.full((n_bins, 1), 1.5)

    extra = {"relaxation": args.relaxation, "tol": args.tol} if args.relaxation != 1.0 or args.tol else {}
    with perf_record(args.perf_record), ResidentMemory() as memory:
        start = time.perf_counter()
        fit = poisson_nmf(x, signatures, detection, n_cells, n_iter=args.iterations, **extra)
        seconds = time.perf_counter() - start
    print(f"code: {Path(cell2location_nf.__file__).parent}")
    print(f"{args.dataset}: {n_bins} bins, {x.nnz} non-zeros, {signatures.shape[0]} types, {args.threads} threads")
    updates = getattr(fit, "iterations", args.iterations)  # versions before commit cff0a6d made every update
    print(f"{updates} iterations: {seconds:.1f} s ({1000 * seconds / updates:.0f} ms each)")
    if hasattr(warm_start, "fit_deviance"):  # versions with the warm start's deviance
        deviance = warm_start.fit_deviance(x, signatures, detection, fit)
        print(f"{updates} updates (relaxation {args.relaxation:g}, tol {args.tol:g}): "
              f"half deviance {deviance:.7e}")
    print(memory.report("the call"))


if __name__ == "__main__":
    main()
