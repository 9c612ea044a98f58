"""Time and memory of the Poisson-NMF warm start (``inference/warm_start.py``) on a synthetic Visium HD slide.

    .venv/bin/python bench/warm_start_cost.py                                    # 200,000 bins, 20 iterations
    .venv/bin/python bench/warm_start_cost.py --dataset hd_20000x5000x30 --iterations 300
    PYTHONPATH=<checkout>/src .venv/bin/python bench/warm_start_cost.py          # another version's code
    .venv/bin/python bench/warm_start_cost.py --dataset hd_20000x5000x30 --iterations 150 --relaxation 1.5

The slide comes from ``bench/run_scale.py`` (run it first); bins without counts are dropped as the mapping
does, and the true profiles are the signatures. It prints the seconds per iteration and how far the process's
resident memory rose above what it held before the call (sampled every 50 ms, and the kernel's high-water mark),
and the updates made with the half Poisson deviance they end at (``--relaxation``, ``--tol``: ``poisson_nmf``'s).
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import psutil
import torch

import cell2location_nf
from cell2location_nf.inference import warm_start
from cell2location_nf.inference.warm_start import poisson_nmf

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--dataset", default="hd_200000x5000x30")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--relaxation", type=float, default=1.0)
    parser.add_argument("--tol", type=float, default=0.0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = args.workdir / args.dataset
    slide = ad.read_h5ad(data / "hd.h5ad")
    x = slide.X[np.asarray(slide.X.sum(axis=1)).ravel() > 0]
    del slide
    signatures = torch.as_tensor(pd.read_csv(data / "signatures.csv", index_col=0).to_numpy(np.float32).T)
    n_bins = x.shape[0]
    detection, n_cells = torch.ones(n_bins, 1), torch.full((n_bins, 1), 1.5)

    process = psutil.Process()
    before = process.memory_info().rss
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    extra = {"relaxation": args.relaxation, "tol": args.tol} if args.relaxation != 1.0 or args.tol else {}
    fit = poisson_nmf(x, signatures, detection, n_cells, n_iter=args.iterations, **extra)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    mib = 2**20
    print(f"code: {Path(cell2location_nf.__file__).parent}")
    print(f"{args.dataset}: {n_bins} bins, {x.nnz} non-zeros, {signatures.shape[0]} types, {args.threads} threads")
    updates = getattr(fit, "iterations", args.iterations)  # versions before commit cff0a6d made every update
    print(f"{updates} iterations: {seconds:.1f} s ({1000 * seconds / updates:.0f} ms each)")
    if hasattr(warm_start, "fit_deviance"):  # versions with the warm start's deviance
        deviance = warm_start.fit_deviance(x, signatures, detection, fit)
        print(f"{updates} updates (relaxation {args.relaxation:g}, tol {args.tol:g}): "
              f"half deviance {deviance:.7e}")
    print(f"resident memory: {before / mib:.0f} MiB before the call, peak {peak[0] / mib:.0f} MiB "
          f"(+{(peak[0] - before) / mib:.0f}); kernel high-water mark {high_water / mib:.0f} MiB")


if __name__ == "__main__":
    main()
