"""The reference model's −ELBO written out in torch: no pyro tracing per step.

The same objective as pyro's ``Trace_ELBO`` with the mean-field guide (one reparameterised draw), so logged
−ELBO histories match the pyro path's. The negative-binomial likelihood is split as in ``nb_likelihood``:
lgamma(x + α_g) − lgamma(α_g) vanishes for x = 0, so the special functions run on the non-zero counts
only (and lgamma(α_g) once per gene); the μ-dependent rest is plain elementwise code::

    log NB(x | μ, α) = lgamma(x + α) − lgamma(α) − log x! + α log α − (α + x) log(α + μ) + x log μ

``tests/test_reference_elbo.py`` checks value and gradients against pyro's model and guide log-densities.
"""

from __future__ import annotations

import numpy as np
import torch

from ..inference.compile import CompiledOrEager
from .elbo_terms import ambient_and_overdispersion_logp, gamma_logp, lognormal_draws
from .guide import MeanFieldGuide
from .reference import ReferenceModel, ReferencePriors, expected_mean


def draw_noise(guide: MeanFieldGuide) -> dict[str, torch.Tensor]:
    """Standard normal noise for every site, in site order (one random stream)."""
    return {name: torch.randn_like(guide.locs[name]) for name in guide.site_names}


def site_terms(locs: dict, raw_scales: dict, noise: dict, one: torch.Tensor, p: ReferencePriors, n_tech: int):
    """Draws, and Σ log prior + entropy over every site (all sites are global)."""
    d = lognormal_draws(locs, raw_scales, noise)
    z = {k: v[0] for k, v in d.items()}
    lz = {k: v[1] for k, v in d.items()}
    t = gamma_logp(z["per_cluster_mu_fg"], lz["per_cluster_mu_fg"], one, one)
    if n_tech:
        t = t + gamma_logp(z["detection_tech_gene_tg"], lz["detection_tech_gene_tg"], one * p.gene_tech_alpha,
                           one * (p.gene_tech_alpha / p.gene_tech_mean))
    t = t + gamma_logp(z["detection_mean_y_e"], lz["detection_mean_y_e"], one * p.detection_mean_alpha,
                       one * p.detection_mean_beta)
    t = t + ambient_and_overdispersion_logp(z, lz, one, p.gene_add_alpha_hyp, p.gene_add_mean_hyp, p.alpha_g_phi_hyp)
    return z, t + sum(v[2] for v in d.values())


def dense_terms(x, g_fg, s_eg, y_e, t_tg, labels, batches, covariates, alpha) -> torch.Tensor:
    """Σ α log α − (α + x) log(α + μ) + x log μ over cells x genes (α: 1 x genes); μ > 0 always."""
    mu = expected_mean(g_fg, s_eg, y_e, t_tg, labels, batches, covariates)
    return (x.shape[0] * (alpha * torch.log(alpha)).sum() - ((alpha + x) * torch.log(alpha + mu)).sum()
            + (x * torch.log(mu)).sum())


SHARED_VALUES = 64  # counts below this share one lgamma/digamma per (gene, value)


def _grouped_terms(multiplicity, large_genes, large_values, alpha_g) -> torch.Tensor:
    """Σ n_gv [lgamma(v + α_g) − lgamma(α_g)] over small values v, plus the large counts one by one."""
    grid = torch.arange(1, SHARED_VALUES, device=alpha_g.device, dtype=alpha_g.dtype)  # value 0 never occurs
    n = multiplicity[:, 1:].to(alpha_g.dtype)
    shared = (n * (torch.lgamma(grid + alpha_g[:, None]) - torch.lgamma(alpha_g)[:, None])).sum()
    large = torch.lgamma(large_values + alpha_g[large_genes]) - torch.lgamma(alpha_g[large_genes])
    return shared + large.sum()


def nonzero_terms(genes: torch.Tensor, values: torch.Tensor, alpha_g: torch.Tensor) -> torch.Tensor:
    """Σ over the given non-zero counts of lgamma(x + α_g) − lgamma(α_g) − log x!, exactly.

    Small counts are grouped by (gene, value) with a bincount (no sort), so the special functions run on
    at most genes x SHARED_VALUES entries; larger counts are evaluated one by one.
    """
    small = values < SHARED_VALUES
    multiplicity = torch.bincount(genes[small] * SHARED_VALUES + values[small].long(),
                                  minlength=alpha_g.shape[0] * SHARED_VALUES).reshape(-1, SHARED_VALUES)
    return _grouped_terms(multiplicity, genes[~small], values[~small], alpha_g) - torch.lgamma(values + 1).sum()


class RowNonzeros:
    """The non-zero counts of a cells x genes matrix, split once into small counts, stored as a
    (gene, value) key, and the few large ones: a minibatch's non-zeros are then gathers, with no scan of
    the dense rows and no mask per step. ``log_factorial`` holds Σ log x! per cell."""

    def __init__(self, x, device: torch.device | str = "cpu"):
        import scipy.sparse as sp

        csr = sp.csr_matrix(x, dtype=np.float32)
        csr.eliminate_zeros()
        small = csr.data < SHARED_VALUES
        self.n_genes = csr.shape[1]
        self.small = self._store(csr, small, csr.indices.astype(np.int64) * SHARED_VALUES + csr.data.astype(np.int64),
                                 device)
        self.large_genes = self._store(csr, ~small, csr.indices.astype(np.int64), device)
        self.large_values = self._store(csr, ~small, csr.data, device)
        log_x = sp.csr_matrix((torch.lgamma(torch.as_tensor(csr.data) + 1).numpy(), csr.indices, csr.indptr),
                              shape=csr.shape)
        self.log_factorial = torch.as_tensor(np.asarray(log_x.sum(axis=1), dtype=np.float32).ravel(), device=device)

    @staticmethod
    def _store(csr, keep: np.ndarray, values: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=csr.shape[0]))])
        return torch.as_tensor(indptr, device=device), torch.as_tensor(values[keep], device=device)

    @staticmethod
    def _gather(store: tuple[torch.Tensor, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        indptr, values = store
        starts, lengths = indptr[idx], indptr[idx + 1] - indptr[idx]
        offsets = torch.cumsum(lengths, 0) - lengths
        within = torch.arange(int(lengths.sum()), device=idx.device) - torch.repeat_interleave(offsets, lengths)
        return values[torch.repeat_interleave(starts, lengths) + within]

    def terms(self, idx: torch.Tensor, alpha_g: torch.Tensor) -> torch.Tensor:
        """:func:`nonzero_terms` of rows ``idx``."""
        multiplicity = torch.bincount(self._gather(self.small, idx), minlength=self.n_genes * SHARED_VALUES)
        genes, values = self._gather(self.large_genes, idx), self._gather(self.large_values, idx)
        return (_grouped_terms(multiplicity.reshape(self.n_genes, SHARED_VALUES), genes, values, alpha_g)
                - self.log_factorial[idx].sum())


_site_terms = CompiledOrEager(site_terms, "the reference prior terms")
_dense_terms = CompiledOrEager(dense_terms, "the reference likelihood pass")


def negative_elbo(model: ReferenceModel, guide: MeanFieldGuide, x: torch.Tensor, labels: torch.Tensor,
                  batches: torch.Tensor, covariates: torch.Tensor, idx: torch.Tensor,
                  noise: dict[str, torch.Tensor] | None = None, use_compile: bool = False,
                  nonzeros: RowNonzeros | None = None) -> torch.Tensor:
    """−ELBO estimate (likelihood scaled to all cells) for one minibatch of cells; the arguments of the
    pyro model, so it drops in as ``run_svi``'s ``loss_fn``. ``nonzeros`` of all cells saves a scan of
    ``x`` per step."""
    noise = noise if noise is not None else draw_noise(guide)
    z, prior_and_entropy = _site_terms(use_compile, dict(guide.locs), dict(guide.raw_scales), noise, model._one,
                                       model.priors, model.n_tech)
    alpha = 1 / z["alpha_g_inverse"].pow(2)  # (1, G)
    if nonzeros is not None:
        special = nonzeros.terms(idx, alpha[0])
    else:
        rows, cols = torch.nonzero(x, as_tuple=True)
        special = nonzero_terms(cols, x[rows, cols], alpha[0])
    dense = _dense_terms(use_compile, x, z["per_cluster_mu_fg"], z["s_g_gene_add"], z["detection_mean_y_e"],
                         z.get("detection_tech_gene_tg"), labels, batches, covariates, alpha)
    likelihood = dense + special
    return -(prior_and_entropy + model.n_obs / x.shape[0] * likelihood)
