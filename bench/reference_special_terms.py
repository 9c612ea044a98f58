"""Milliseconds of the reference model's special-function block per step: ATen eager against a compiled candidate.

    .venv/bin/python bench/reference_special_terms.py                 # 2,578 genes (the reference benchmark's)

The block is ``models/reference_elbo._grouped_terms``: Σ n_gv [lgamma(v + α_g) − lgamma(α_g)] over genes × the
63 shared count values, run eagerly with autograd (ATen's one-element-at-a-time lgamma, digamma backward). The
candidate takes log Γ and ψ together from ``models/special_functions`` in one compiled function, as the
mapping's count terms do, returning the value and ∂/∂α at once. Both run on the same random multiplicities
(0–49 per gene and value) and α (1–21), with no counts above the shared values; the script prints both
timings, the candidate's compile time, and how far apart their values and gradients are.
"""

from __future__ import annotations

import argparse
import time

import torch

from cell2location_nf.models.reference_elbo import SHARED_VALUES, _grouped_terms
from cell2location_nf.models.special_functions import log_gamma_and_digamma


def shared_terms_and_gradient(multiplicity: torch.Tensor, alpha_g: torch.Tensor):
    """The candidate: (Σ n [lgamma(v + α) − lgamma(α)], its gradient in α_g) over the shared values."""
    grid = torch.arange(1, SHARED_VALUES, dtype=alpha_g.dtype, device=alpha_g.device)
    n = multiplicity[:, 1:].to(alpha_g.dtype)
    log_gamma, digamma = log_gamma_and_digamma(grid + alpha_g[:, None])
    log_gamma_0, digamma_0 = log_gamma_and_digamma(alpha_g)
    n_g = n.sum(1)
    return (n * log_gamma).sum() - (n_g * log_gamma_0).sum(), (n * digamma).sum(1) - n_g * digamma_0


def mean_ms(fn, steps: int) -> float:
    for _ in range(5):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genes", type=int, default=2578)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    alpha = torch.rand(args.genes) * 20 + 1
    multiplicity = torch.randint(0, 50, (args.genes, SHARED_VALUES))
    no_genes, no_values = torch.zeros(0, dtype=torch.long), torch.zeros(0)

    leaf = alpha.clone().requires_grad_()

    def aten() -> torch.Tensor:
        leaf.grad = None
        value = _grouped_terms(multiplicity, no_genes, no_values, leaf)
        value.backward()
        return value.detach()

    candidate = torch.compile(shared_terms_and_gradient)
    start = time.perf_counter()
    candidate(multiplicity, alpha)
    compile_s = time.perf_counter() - start
    aten_ms = mean_ms(aten, args.steps)
    candidate_ms = mean_ms(lambda: candidate(multiplicity, alpha), args.steps)
    value, gradient = candidate(multiplicity, alpha)
    aten_value = aten()
    relative = ((gradient - leaf.grad).abs() / leaf.grad.abs().clamp_min(1e-3)).max()
    print(f"{args.genes} genes x {SHARED_VALUES - 1} values, {args.threads} thread(s), mean of {args.steps} steps\n")
    print("| form | ms per step | compile s |\n|---|---|---|")
    print(f"| ATen lgamma, eager, forward and backward | {aten_ms:.2f} | |")
    print(f"| log Γ and ψ together, compiled (value and gradient) | {candidate_ms:.2f} | {compile_s:.1f} |")
    print(f"\nvalue {float(aten_value):.6g} (ATen) against {float(value):.6g}: "
          f"difference {float(value - aten_value):.3g}; largest relative difference in ∂/∂α {float(relative):.2g}")


if __name__ == "__main__":
    main()
