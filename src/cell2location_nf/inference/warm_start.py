"""A cheap first guess of cell abundances: Poisson NMF with the signatures held fixed.

Counts x (S x G) ≈ y_s · m_g · Σ_f w_sf g_fg, the mapping model's mean without ambient RNA, fitted by
alternating multiplicative (Lee & Seung) updates of the abundances w and the per-gene technology scale m
(its exact Poisson update given w), starting from the prior mean N/F. The scale shared by w and m is
fixed after every iteration so that the mean total abundance equals the mean expected number of cells
N, as in the model's prior (without this, w and m drift apart in opposite directions). Used to start
the mapping guide near the data instead of at the prior mean.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch


def poisson_nmf(x: sp.csr_matrix, signatures: torch.Tensor, detection: torch.Tensor, n_cells: torch.Tensor,
                n_iter: int = 300, chunk: int = 20000, floor: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Abundances w (S x F) and gene scales m (1 x G); x is CSR, the rest tensors on one device.

    Locations are processed in chunks, so memory grows with the chunk, not with all locations x genes.
    """
    device = signatures.device
    n_obs, n_factors = x.shape[0], signatures.shape[0]
    w = (n_cells / n_factors).expand(-1, n_factors).clone()
    m = torch.ones(1, signatures.shape[1], device=device)
    chunks = [slice(s, s + chunk) for s in range(0, n_obs, chunk)]
    dense = [torch.as_tensor(x[c].toarray(), device=device) for c in chunks] if len(chunks) == 1 else None
    totals = torch.as_tensor(x.sum(axis=0).A1, device=device, dtype=torch.float32)

    def counts(i: int) -> torch.Tensor:
        return dense[i] if dense is not None else torch.as_tensor(x[chunks[i]].toarray(), device=device)

    for _ in range(n_iter):
        gm = signatures * m
        expected = torch.zeros_like(totals)
        for i, c in enumerate(chunks):
            mu = (w[c] @ gm) * detection[c] + 1e-8
            w[c] = (w[c] * ((counts(i) / mu) @ gm.T) / (gm.sum(dim=1) * detection[c])).clamp_min(floor)
            expected += ((w[c] @ signatures) * detection[c]).sum(dim=0)
        m = (totals / expected.clamp_min(1e-8)).clamp_min(floor).unsqueeze(0)
        scale = w.sum(dim=1).mean() / n_cells.mean()
        w, m = w / scale, m * scale
    return w, m
