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
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def _csr_tensor(x: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    x.sum_duplicates()  # sorted column indices, as torch's sparse CSR kernels expect
    return torch.sparse_csr_tensor(torch.as_tensor(x.indptr, dtype=torch.int64),
                                   torch.as_tensor(x.indices, dtype=torch.int64), torch.as_tensor(x.data),
                                   size=x.shape, device=device)


def poisson_nmf(x: sp.spmatrix | np.ndarray, signatures: torch.Tensor, detection: torch.Tensor, n_cells: torch.Tensor,
                n_iter: int = 300, floor: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Abundances w (S x F) and gene scales m (1 x G); x are the counts, the rest tensors on one device.

    ``detection`` and ``n_cells`` are (S, 1). Memory grows with the non-zeros of x, not with S x G.
    """
    device = signatures.device
    x = sp.csr_matrix(x, dtype=np.float32)
    with warnings.catch_warnings():  # torch flags sparse CSR support as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        counts = _csr_tensor(x, device)
        n_factors = signatures.shape[0]
        w = (n_cells / n_factors).expand(-1, n_factors).clone()
        m = torch.ones(1, signatures.shape[1], device=device)
        totals = torch.as_tensor(np.asarray(x.sum(axis=0)).ravel(), device=device, dtype=torch.float32)
        observed = counts.values()
        for _ in range(n_iter):
            gm = signatures * m
            mean = torch.sparse.sampled_addmm(counts, w * detection, gm, beta=0.0).values() + 1e-8
            ratio = torch.sparse_csr_tensor(counts.crow_indices(), counts.col_indices(), observed / mean,
                                            size=counts.shape)
            w = (w * (ratio @ gm.T) / (gm.sum(dim=1) * detection)).clamp_min(floor)
            expected = (detection * w).sum(dim=0) @ signatures  # Σ_s y_s Σ_f w_sf g_fg per gene
            m = (totals / expected.clamp_min(1e-8)).clamp_min(floor).unsqueeze(0)
            scale = w.sum(dim=1).mean() / n_cells.mean()
            w, m = w / scale, m * scale
    return w, m
