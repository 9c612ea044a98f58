"""log Γ and ψ from Stirling's series match ATen's float64 values as closely as ATen's own float32 ones do; the
polynomial log is within 1.2 units in the last place and non-finite wherever torch.log is."""

from __future__ import annotations

import math

import pytest
import torch

from cell2location_nf.inference.compile import CompiledOrEager
from cell2location_nf.models import nb_likelihood
from cell2location_nf.models.special_functions import SHIFT, log_gamma_and_digamma, polynomial_log, vector_log

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


def _normal_float32s(n: int) -> torch.Tensor:
    """Random bit patterns: positive normal float32 numbers across every exponent, and the mantissa's edges."""
    bits = torch.randint(0x00800000, 0x7F800000, (n,), dtype=torch.int32, generator=torch.Generator().manual_seed(1))
    edges = torch.tensor([2.0**-126, 0.70710677, 0.70710683, 1.0, 1.0000001, 1.4142135, 1.4142137, 2.0, 3.4028235e38])
    return torch.cat([bits.view(torch.float32), edges])


def _ulps(ours: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|ours − exact| in units of the last place of float32 at the exact value."""
    spacing = (exact.float().abs().nextafter(torch.tensor(math.inf)) - exact.float().abs()).double()
    return (ours.double() - exact).abs() / spacing


@pytest.mark.parametrize("use_compile", [False, True])
def test_polynomial_log_within_1_2_ulp(use_compile):
    x = _normal_float32s(1_000_000)
    ulps = _ulps(CompiledOrEager(polynomial_log, "polynomial log")(use_compile, x), torch.log(x.double()))
    assert ulps.max() <= 1.2
    assert ulps.mean() < 0.3
    assert polynomial_log(torch.tensor([1.0])).item() == 0.0  # log 1 exactly


@pytest.mark.parametrize("use_compile", [False, True])
def test_polynomial_log_non_finite_wherever_torch_log_is(use_compile):
    """A diverged fit must still show as a non-finite loss: 0, negative and subnormal x give −∞; NaN and ±∞, NaN."""
    x = torch.tensor([0.0, -0.0, -1.0, 2.0**-149, 2.0**-127, math.nan, math.inf, -math.inf])
    log = CompiledOrEager(polynomial_log, "polynomial log")(use_compile, x)
    assert torch.equal(log[:5], torch.full((5,), -math.inf))
    assert log[5:].isnan().all()


def test_vector_log_is_torch_log_outside_compiled_float32_cpu_code():
    """Eagerly (and for float64, which the gradient checks use) it is torch.log itself, bit for bit."""
    for x in (_normal_float32s(1000), _normal_float32s(1000).double()):
        assert torch.equal(vector_log(x), torch.log(x))
    compiled = CompiledOrEager(vector_log, "vector log")(True, _normal_float32s(1000))
    assert not torch.equal(compiled, torch.log(_normal_float32s(1000)))  # the polynomial, last bits apart
    torch.testing.assert_close(compiled, torch.log(_normal_float32s(1000)), rtol=2e-7, atol=0)
