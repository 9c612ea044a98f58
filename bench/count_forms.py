"""The likelihood's dense form against its zero/non-zero split, per step, at several count densities.

    .venv/bin/python bench/count_forms.py                                 # 5,000 x 5,000 x 30, two threads
    .venv/bin/python bench/count_forms.py --shape 2000 3000 20 --densities 0.05 0.1 0.2 0.4

Counts are Poisson draws kept at the given share of entries (the rest 0); the parameters are random positive
values. Each form runs forward and backward of ``neg_binomial_log_lik`` compiled with dynamic shapes, as a
minibatch mapping runs it, after warm-up steps that compile; the forms take turns for ``--rounds`` rounds.
The loader picks the split below ``SPARSE_COUNTS_BELOW`` (``stages/mapping.py``); this is where that comes from.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cell2location_nf.inference.allocator import retain_freed_memory
from cell2location_nf.inference.compile import DYNAMIC, prepare_compile
from cell2location_nf.models.nb_likelihood import CountBatch, neg_binomial_log_lik


def batches(n_obs: int, n_genes: int, density: float, seed: int) -> dict[str, CountBatch]:
    rng = np.random.default_rng(seed)
    x = rng.poisson(2.0, size=(n_obs, n_genes)).astype(np.float32) * (rng.random((n_obs, n_genes)) < density)
    x = torch.as_tensor(x)
    batch = torch.zeros(n_obs, dtype=torch.int64)
    rows, cols = torch.nonzero(x, as_tuple=True)
    return {"dense": CountBatch(x, batch, 1),
            "split": CountBatch(None, batch, 1, (rows, cols, x[rows, cols]), shape=(n_obs, n_genes))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[5000, 5000, 30], metavar=("LOCATIONS", "GENES", "TYPES"))
    parser.add_argument("--densities", type=float, nargs="+", default=[0.02, 0.04, 0.1, 0.2, 0.4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    prepare_compile(torch.device("cpu"))
    retain_freed_memory()  # as training does: freed (locations x genes) arrays are reused, not page-faulted
    n_obs, n_genes, n_types = args.shape
    rng = np.random.default_rng(0)
    cell_state = torch.as_tensor(rng.gamma(1.0, 1.0, size=(n_types, n_genes)), dtype=torch.float32)
    inputs = [torch.as_tensor(rng.uniform(0.2, 2.0, size=s), dtype=torch.float32).requires_grad_()
              for s in [(n_obs, n_types), (1, n_genes), (1, n_genes), (n_obs, 1), (1, n_genes)]]

    def step(counts: CountBatch) -> None:
        neg_binomial_log_lik(*inputs, cell_state, counts, DYNAMIC).backward()

    print(f"{n_obs} x {n_genes} x {n_types}, {args.threads} threads: ms per forward and backward "
          f"(mean of {args.steps} steps, each round)")
    print("| non-zero share | dense form | split form | split / dense |")
    print("|---|---|---|---|")
    for density in args.densities:
        forms = batches(n_obs, n_genes, density, seed=1)
        times: dict[str, list[float]] = {name: [] for name in forms}
        for counts in forms.values():
            for _ in range(3):
                step(counts)
        for _ in range(args.rounds):
            for name, counts in forms.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(counts)
                times[name].append((time.perf_counter() - start) / args.steps * 1000)
        dense, split = (", ".join(f"{t:.1f}" for t in times[k]) for k in ("dense", "split"))
        ratio = np.mean(times["split"]) / np.mean(times["dense"])
        print(f"| {density:g} | {dense} | {split} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
