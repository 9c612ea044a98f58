"""The reference model's −ELBO written out in torch: no pyro tracing per step.

The same objective as pyro's ``Trace_ELBO`` with the mean-field guide (one reparameterised draw), so logged
−ELBO histories match the pyro path's. The negative-binomial likelihood is split as in ``nb_likelihood``:
lgamma(x + α_g) − lgamma(α_g) vanishes for x = 0, so the special functions run on the non-zero counts
only (and lgamma(α_g) once per gene); the μ-dependent rest is plain elementwise code::

    log NB(x | μ, α) = lgamma(x + α) − lgamma(α) − log x! + α log α − (α + x) log(α + μ) + x log μ

The μ-dependent rest depends on a cell only through its design row (label, batch, covariates), so when a
minibatch has more cells than there are distinct design rows it is summed per row group instead: with n_k
cells and count sums X_kg in group k, Σ_c (α + x_cg) log(α + μ_cg) = Σ_k (n_k α + X_kg) log(α + μ_kg), and
likewise for x log μ. That is the same objective, exactly, at groups x genes instead of cells x genes.

``tests/test_reference_elbo.py`` checks value and gradients against pyro's model and guide log-densities.
"""

from __future__ import annotations

import numpy as np
import torch

from ..inference.compile import CompiledOrEager
from ..preprocessing.counts import canonical_csr, row_log_factorials
from .elbo_terms import ambient_and_overdispersion_logp, gamma_logp, lognormal_draws
from .guide import MeanFieldGuide
from .reference import CellGroups, ReferenceModel, ReferencePriors, expected_mean


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


def grouped_dense_terms(n_k, x_kg, g_fg, s_eg, y_e, t_tg, labels_k, batches_k, covariates_k, alpha) -> torch.Tensor:
    """:func:`dense_terms` from per-group cell numbers ``n_k`` (K,) and count sums ``x_kg`` (K x genes)."""
    mu = expected_mean(g_fg, s_eg, y_e, t_tg, labels_k, batches_k, covariates_k)
    return (n_k.sum() * (alpha * torch.log(alpha)).sum() - ((n_k[:, None] * alpha + x_kg) * torch.log(alpha + mu)).sum()
            + (x_kg * torch.log(mu)).sum())


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
    """The non-zero counts of a cells x genes matrix, laid out once so that a minibatch's are plain gathers
    (``index_select``; no scan of dense rows, no mask per step). Each non-zero holds its (gene, value) key,
    int32, for the multiplicities of :func:`_grouped_terms`; counts of ``SHARED_VALUES`` or more get the
    key of value 0, a bin no term reads, and are kept apart (few) to be evaluated one by one.
    ``log_factorial`` holds Σ log x! per cell.

    With ``groups`` (the cells' design-row groups) each non-zero also holds its (group, gene) key and value,
    so :meth:`group_sums` gives a minibatch's cells and counts per group for :func:`grouped_dense_terms`.
    """

    def __init__(self, x, device: torch.device | str = "cpu", groups: CellGroups | None = None):
        csr = canonical_csr(x)
        small = csr.data < SHARED_VALUES
        genes = csr.indices.astype(np.int32, copy=False)  # int32 throughout: the layout is 4 bytes per array
        self.n_genes = csr.shape[1]
        # int32 positions while they fit: a minibatch's positions are its largest per-step arrays, and with int64
        # ones a step took 6 ms longer (bench/RESULTS.md, "Reference: eager when summed per group")
        position_type = np.int32 if csr.nnz < np.iinfo(np.int32).max else np.int64
        self.indptr = torch.as_tensor(csr.indptr.astype(position_type), device=device)
        self.keys = torch.as_tensor(genes * np.int32(SHARED_VALUES) + np.where(small, csr.data, 0).astype(np.int32),
                                    device=device)
        rows = np.repeat(np.arange(csr.shape[0], dtype=np.int32), np.diff(csr.indptr))
        large_indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[~small], minlength=csr.shape[0]))])
        self.large_indptr = torch.as_tensor(large_indptr.astype(position_type), device=device)
        self.large_genes = torch.as_tensor(genes[~small].astype(np.int64), device=device)
        self.large_values = torch.as_tensor(csr.data[~small], device=device)
        self.log_factorial = torch.as_tensor(row_log_factorials(csr).astype(np.float32), device=device)
        self.groups = groups
        if groups is not None:
            key_type = np.int32 if groups.n_groups * self.n_genes < np.iinfo(np.int32).max else np.int64
            group_keys = groups.group.astype(key_type)[rows]
            group_keys *= self.n_genes
            group_keys += genes
            self.group_keys = torch.as_tensor(group_keys, device=device)
            self.values = torch.as_tensor(csr.data, device=device)
            self.group_of_cell = torch.as_tensor(groups.group, device=device)
            self.group_codes = tuple(torch.as_tensor(c, device=device)
                                     for c in (groups.labels, groups.batches, groups.covariates))

    @staticmethod
    def _positions(indptr: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Where rows ``idx``'s entries lie, row after row, in arrays laid out by ``indptr`` (in its dtype)."""
        starts = indptr.index_select(0, idx)
        lengths = indptr.index_select(0, idx + 1) - starts
        shifts = starts - (torch.cumsum(lengths, 0, dtype=indptr.dtype) - lengths)  # position − place in the batch
        total = int(lengths.sum())
        return (torch.repeat_interleave(shifts, lengths, output_size=total)
                + torch.arange(total, dtype=indptr.dtype, device=idx.device))

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Positions of rows ``idx``'s non-zeros, their (gene, value) keys, and their large counts."""
        positions = self._positions(self.indptr, idx)
        large = self._positions(self.large_indptr, idx)
        return {"positions": positions, "keys": self.keys.index_select(0, positions),
                "large_genes": self.large_genes.index_select(0, large),
                "large_values": self.large_values.index_select(0, large)}

    def terms(self, idx: torch.Tensor, rows: dict, alpha_g: torch.Tensor) -> torch.Tensor:
        """:func:`nonzero_terms` of rows ``idx``, from their :meth:`gather` ``rows``."""
        multiplicity = torch.bincount(rows["keys"], minlength=self.n_genes * SHARED_VALUES)
        return (_grouped_terms(multiplicity.reshape(self.n_genes, SHARED_VALUES), rows["large_genes"],
                               rows["large_values"], alpha_g) - self.log_factorial.index_select(0, idx).sum())

    def group_sums(self, idx: torch.Tensor, rows: dict, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Cells (K,) and count sums (K x genes) per design-row group among rows ``idx``."""
        n_groups = self.groups.n_groups
        sums = torch.bincount(self.group_keys.index_select(0, rows["positions"]),
                              weights=self.values.index_select(0, rows["positions"]),
                              minlength=n_groups * self.n_genes)
        cells = torch.bincount(self.group_of_cell.index_select(0, idx), minlength=n_groups)
        return cells.to(dtype), sums.to(dtype).reshape(n_groups, self.n_genes)


_site_terms = CompiledOrEager(site_terms, "the reference prior terms")
_dense_terms = CompiledOrEager(dense_terms, "the reference likelihood pass")
_grouped_dense_terms = CompiledOrEager(grouped_dense_terms, "the grouped reference likelihood pass")


def negative_elbo(model: ReferenceModel, guide: MeanFieldGuide, x: torch.Tensor, labels: torch.Tensor,
                  batches: torch.Tensor, covariates: torch.Tensor, idx: torch.Tensor,
                  noise: dict[str, torch.Tensor] | None = None, use_compile: bool = False,
                  nonzeros: RowNonzeros | None = None) -> torch.Tensor:
    """−ELBO estimate (likelihood scaled to all cells) for one minibatch of cells; the arguments of the
    pyro model, so it drops in as ``run_svi``'s ``loss_fn``. ``nonzeros`` of all cells saves a scan of
    ``x`` per step; with groups it also replaces the per-cell pass, and ``x`` is not read."""
    noise = noise if noise is not None else draw_noise(guide)
    z, prior_and_entropy = _site_terms(use_compile, dict(guide.locs), dict(guide.raw_scales), noise, model._one,
                                       model.priors, model.n_tech)
    alpha = 1 / z["alpha_g_inverse"].pow(2)  # (1, G)
    t_tg = z.get("detection_tech_gene_tg")
    if nonzeros is not None:
        rows = nonzeros.gather(idx)
        special = nonzeros.terms(idx, rows, alpha[0])
    else:
        r, c = torch.nonzero(x, as_tuple=True)
        special = nonzero_terms(c, x[r, c], alpha[0])
    if nonzeros is not None and nonzeros.groups is not None:
        n_k, x_kg = nonzeros.group_sums(idx, rows, alpha.dtype)
        dense = _grouped_dense_terms(use_compile, n_k, x_kg, z["per_cluster_mu_fg"], z["s_g_gene_add"],
                                     z["detection_mean_y_e"], t_tg, *nonzeros.group_codes, alpha)
    else:
        dense = _dense_terms(use_compile, x, z["per_cluster_mu_fg"], z["s_g_gene_add"], z["detection_mean_y_e"],
                             t_tg, labels, batches, covariates, alpha)
    likelihood = dense + special
    return -(prior_and_entropy + model.n_obs / idx.shape[0] * likelihood)
