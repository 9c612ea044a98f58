"""log Γ and ψ from Stirling's series match ATen's float64 values as closely as ATen's own float32 ones do."""

from __future__ import annotations

import pytest
import torch

from cell2location_nf.inference.compile import CompiledOrEager
from cell2location_nf.models import nb_likelihood
from cell2location_nf.models.special_functions import SHIFT, log_gamma_and_digamma

# α alone can be tiny; α + x (x ≥ 1) spans one to large counts; both sides of the shift included
ARGUMENTS = torch.cat([torch.logspace(-5, 0, 2001), torch.linspace(1.0, 2 * SHIFT, 4001),
                       torch.logspace(1, 7, 2001)]).to(torch.float32)


def _errors(ours: torch.Tensor, exact: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    absolute = (ours.double() - exact).abs()
    return absolute, absolute / exact.abs().clamp_min(1.0)


@pytest.mark.parametrize("use_compile", [False, True])
def test_digamma_as_accurate_as_aten_float32(use_compile):
    kernel = CompiledOrEager(log_gamma_and_digamma, "special functions")
    _, digamma = kernel(use_compile, ARGUMENTS)
    exact = torch.digamma(ARGUMENTS.double())
    _, ours = _errors(digamma, exact)
    _, aten = _errors(torch.digamma(ARGUMENTS), exact)
    assert ours.max() <= 1.5 * aten.max()
    assert ours.max() < 1e-6


@pytest.mark.parametrize("use_compile", [False, True])
def test_log_gamma_close_to_exact(use_compile):
    kernel = CompiledOrEager(log_gamma_and_digamma, "special functions")
    log_gamma, _ = kernel(use_compile, ARGUMENTS)
    absolute, relative = _errors(log_gamma, torch.lgamma(ARGUMENTS.double()))
    below = ARGUMENTS < SHIFT
    assert absolute[below].max() < 5e-6
    assert relative[~below].max() < 5e-7


def test_count_terms_equal_aten_special_functions():
    """The likelihood's sums over distinct (batch, gene, count) triples, against ATen's lgamma and digamma."""
    generator = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.rand(60, 40, generator=generator) * 30, generator=generator)
    x[0, 0] = 5000.0  # a large count
    counts = nb_likelihood.CountBatch(x, torch.arange(60) % 2, 2)
    alpha = (torch.rand(2 * 40, generator=generator) * 10 + 1e-3).to(torch.float32)
    args = (alpha, counts.distinct_batch_gene, counts.distinct_values, counts.distinct_counts)
    value, digamma_terms = nb_likelihood.distinct_count_terms(*args)
    y = counts.distinct_values.double() + alpha.double()[counts.distinct_batch_gene]
    n = counts.distinct_counts.double()
    torch.testing.assert_close(value.double(), (n * torch.lgamma(y)).sum(), rtol=1e-6, atol=0)
    torch.testing.assert_close(digamma_terms.double(), n * torch.digamma(y), rtol=2e-6, atol=1e-6)
