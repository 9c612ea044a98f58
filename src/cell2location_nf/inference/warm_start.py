"""A cheap first guess of cell abundances: Poisson NMF with the signatures held fixed.

Counts x (S x G) ≈ y_s · m_g · Σ_f w_sf g_fg, the mapping model's mean without ambient RNA, fitted by
alternating multiplicative (Lee & Seung) updates of the abundances w and the per-gene technology scale m
(its exact Poisson update given w), starting from the prior mean N/F. The scale shared by w and m is
fixed after every iteration so that the mean total abundance equals the mean expected number of cells
N, as in the model's prior (without this, w and m drift apart in opposite directions). Used to start
the mapping guide near the data instead of at the prior mean.

The update of w needs the ratio x / mean only where x is non-zero, so each iteration works on the sparse
counts (a sampled matrix product for the means at the non-zeros, a sparse-dense product for the update):
its cost grows with the non-zeros × cell types, which keeps it cheap on sparse Visium HD bins.

Those updates converge slowly (by a nearly constant factor per update). ``relaxation`` above 1 multiplies w by
each update's factor raised to that power (with 1.5, 130 updates ended below the deviance of 300 plain ones on a
synthetic Visium HD slide), and ``tol`` stops the updates once the Poisson deviance fell by less than that
fraction over ``CHECK_EVERY`` updates. The deviance is read from the ratios that the update computes anyway (one
logarithm at the non-zeros); should it rise under relaxation, the remaining updates are plain ones. The mapping
keeps 300 plain updates: the shorter fits moved its metrics without a clear gain (bench/RESULTS.md, "Shorter warm
starts: measured, not adopted").
"""

from __future__ import annotations

import logging
import warnings
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from ..preprocessing.counts import canonical_csr

log = logging.getLogger(__name__)

UPDATES = 300  # updates made by default: the mapping's warm start and the composition start of 'fast'
CHECK_EVERY = 10  # updates between two readings of the deviance (for ``tol``, and under ``relaxation``)
DEVIANCE_SLICE = 1 << 22  # non-zeros per slice of the deviance's float64 sum (32 MiB of temporaries each)


class PoissonNmfFit(NamedTuple):
    """Abundances w (S x F), gene scales m (1 x G), and the number of updates made."""

    w: torch.Tensor
    m: torch.Tensor
    iterations: int


def _csr_tensor(x: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """x (canonical CSR: sorted columns, as torch's sparse kernels expect) as a torch sparse CSR tensor.

    On CPU its indices are int32 while they fit, half the index bytes that every iteration's sparse products read,
    with the same values bit for bit (bench/RESULTS.md, "Warm start without copies"). Elsewhere int64, the layout
    that GPU runs were measured with.
    """
    fits = max(x.nnz, *x.shape) < np.iinfo(np.int32).max
    index_type = torch.int32 if fits and torch.device(device).type == "cpu" else torch.int64
    return torch.sparse_csr_tensor(torch.as_tensor(x.indptr).to(index_type), torch.as_tensor(x.indices).to(index_type),
                                   torch.as_tensor(x.data), size=x.shape, device=device)


def ratios_at_nonzeros(counts: torch.Tensor, weights: torch.Tensor, gm: torch.Tensor,
                       buffer: torch.Tensor | None = None) -> torch.Tensor:
    """x / mean at x's non-zeros (mean = weights @ gm there, plus 1e-8), a sparse CSR tensor with x's layout.

    With ``buffer`` (a sparse CSR tensor with that layout and finite values) it is computed in ``buffer``'s values
    and ``buffer`` is returned: ``sampled_addmm`` then neither copies x's indices and values nor allocates the
    arrays of the means and ratios, which halved the warm start's time on a Visium HD slide, the same values bit
    for bit (bench/RESULTS.md, "Warm start without copies"). Without it (used off the CPU, where the in-place
    form has not been measured) each call allocates them anew.
    """
    observed = counts.values()
    if buffer is None:
        mean = torch.sparse.sampled_addmm(counts, weights, gm, beta=0.0).values() + 1e-8
        return torch.sparse_csr_tensor(counts.crow_indices(), counts.col_indices(), observed / mean, size=counts.shape)
    torch.sparse.sampled_addmm(buffer, weights, gm, beta=0.0, out=buffer)
    values = buffer.values()
    values.add_(1e-8)
    torch.div(observed, values, out=values)
    return buffer


def updated_abundances(w: torch.Tensor, ratio: torch.Tensor, gm: torch.Tensor, detection: torch.Tensor,
                       relaxation: float, floor: float,
                       work: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """One multiplicative update of the abundances: w · ((ratio @ gmᵀ) / (Σ_g gm · y))^relaxation, at least ``floor``.

    With ``work`` (two (S x F) tensors, neither of them w) the result is written into the first, the denominator
    into the second, and the first is returned: the same values bit for bit (each product and quotient is the same
    IEEE operation on the same operands), without the five (S x F) arrays that it otherwise allocates, which glibc
    often handed back to the kernel to be mapped and zero-filled again: up to 26,000 page faults per update on a
    200,000-bin slide (bench/RESULTS.md, "glibc's per-thread cache and the warm start").
    """
    if work is None:
        if relaxation == 1.0:  # written as before relaxation existed, so plain updates round the same
            return (w * (ratio @ gm.T) / (gm.sum(dim=1) * detection)).clamp_min(floor)
        return (w * ((ratio @ gm.T) / (gm.sum(dim=1) * detection)).pow(relaxation)).clamp_min(floor)
    new, denominator = work
    torch.mm(ratio, gm.T, out=new)
    torch.mul(gm.sum(dim=1), detection, out=denominator)
    if relaxation == 1.0:
        return new.mul_(w).div_(denominator).clamp_min_(floor)
    return new.div_(denominator).pow_(relaxation).mul_(w).clamp_min_(floor)


def check_relaxation(relaxation: float, name: str = "relaxation") -> None:
    """Over-relaxed updates are defined for exponents in [1, 2) (``name``: the setting's name in the message)."""
    if not 1.0 <= relaxation < 2.0:
        raise ValueError(f"{name} must be at least 1 and below 2, got {relaxation}")


def poisson_nmf(x: sp.spmatrix | np.ndarray, signatures: torch.Tensor, detection: torch.Tensor, n_cells: torch.Tensor,
                n_iter: int = UPDATES, floor: float = 1e-3, in_place: bool | None = None,
                relaxation: float = 1.0, tol: float = 0.0) -> PoissonNmfFit:
    """Abundances w (S x F) and gene scales m (1 x G) after at most ``n_iter`` updates; x are the counts, the rest
    tensors on one device.

    ``detection`` and ``n_cells`` are (S, 1). Memory grows with the non-zeros of x, not with S x G.
    ``in_place``: reuse buffers for the ratios at the non-zeros (:func:`ratios_at_nonzeros`) and for the (S x F)
    arrays of each update (:func:`updated_abundances`); by default on CPU.
    ``relaxation``: the exponent of each update's factor (1: plain Lee & Seung updates, the same as without it).
    ``tol``: stop early once the deviance fell by less than this fraction over ``CHECK_EVERY`` updates (0: never).
    """
    check_relaxation(relaxation)
    device = signatures.device
    x = canonical_csr(x)
    with warnings.catch_warnings():  # torch flags sparse CSR support as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        counts = _csr_tensor(x, device)
        if in_place is None:
            in_place = device.type == "cpu"
        buffer = None
        if in_place:
            zeros = torch.zeros_like(counts.values())
            buffer = torch.sparse_csr_tensor(counts.crow_indices(), counts.col_indices(), zeros, size=counts.shape)
        n_factors = signatures.shape[0]
        w = (n_cells / n_factors).expand(-1, n_factors).clone()
        m = torch.ones(1, signatures.shape[1], device=device)
        # in place: the next w, the update's denominator, and the weights, each (S x F), written over every update
        spare, scratch, weights = (torch.empty_like(w) for _ in range(3)) if in_place else (None, None, None)
        totals = torch.as_tensor(np.asarray(x.sum(axis=0)).ravel(), device=device, dtype=torch.float32)
        total_counts = float(totals.double().sum())
        last_deviance = None
        iteration = 0
        while iteration < n_iter:
            gm = signatures * m
            weights = torch.mul(w, detection, out=weights) if in_place else w * detection
            ratio = ratios_at_nonzeros(counts, weights, gm, buffer)
            if (tol > 0 or relaxation != 1.0) and iteration % CHECK_EVERY == 0:
                deviance = half_deviance(counts.values(), ratio.values(), weights, gm, total_counts)
                if last_deviance is not None and relaxation != 1.0 and deviance > last_deviance:
                    log.info("Poisson NMF: the deviance rose by update %d; plain updates from there", iteration)
                    relaxation = 1.0
                elif last_deviance is not None and last_deviance - deviance < tol * deviance:
                    break
                last_deviance = deviance
            iteration += 1
            if in_place:  # the old w becomes the next update's buffer
                w, spare = updated_abundances(w, ratio, gm, detection, relaxation, floor, (spare, scratch)), w
            else:
                w = updated_abundances(w, ratio, gm, detection, relaxation, floor)
            # Σ_s y_s Σ_f w_sf g_fg per gene; in place y·w goes to the scratch buffer (None: a new tensor)
            expected = torch.mul(detection, w, out=scratch).sum(dim=0) @ signatures
            m = (totals / expected.clamp_min(1e-8)).clamp_min(floor).unsqueeze(0)
            scale = w.sum(dim=1).mean() / n_cells.mean()
            w, m = (w.div_(scale) if in_place else w / scale), m * scale
    log.info("Poisson NMF: %d of at most %d updates%s", iteration, n_iter,
             f" (deviance flat to {tol:g})" if iteration < n_iter else "")
    return PoissonNmfFit(w, m, iteration)


def half_deviance(observed: torch.Tensor, ratios: torch.Tensor, weights: torch.Tensor, gm: torch.Tensor,
                  total: float) -> float:
    """Half the Poisson deviance, Σ x log(x / mean) − Σ x + Σ mean, from the ratios x / mean at the non-zeros.

    Σ mean over every entry is (Σ_s weights_s) · (Σ_g gm_g), without forming the means off the non-zeros. The sum at
    the non-zeros runs in float64 over slices of ``DEVIANCE_SLICE`` values, so its temporaries stay small.
    """
    at_nonzeros = 0.0
    for start in range(0, observed.numel(), DEVIANCE_SLICE):
        part = slice(start, start + DEVIANCE_SLICE)
        at_nonzeros += float(torch.dot(observed[part].double(), ratios[part].double().log()))
    return at_nonzeros - total + float(weights.sum(dim=0).double() @ gm.sum(dim=1).double())


def fit_deviance(x: sp.spmatrix | np.ndarray, signatures: torch.Tensor, detection: torch.Tensor,
                 fit: PoissonNmfFit) -> float:
    """Half the Poisson deviance of a :func:`poisson_nmf` fit to the counts x (to compare fits: bench, tests)."""
    x = canonical_csr(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        counts = _csr_tensor(x, signatures.device)
        gm = signatures * fit.m
        weights = fit.w * detection
        ratios = ratios_at_nonzeros(counts, weights, gm)
        return half_deviance(counts.values(), ratios.values(), weights, gm, float(x.sum(dtype=np.float64)))
