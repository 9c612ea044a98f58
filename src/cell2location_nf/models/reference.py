"""The reference signature model: negative-binomial regression (model_spec §1).

Upstream's ``RegressionBackgroundDetectionTechPyroModel``, with the same site names, priors, shapes
and defaults::

    μ_cg = (g_{f(c),g} + s_{e(c),g}) · y_{e(c)} · [Σ_k t_{level_k(c),g}]      (bracket only with covariates)
    D_cg ~ GammaPoisson(α_g, α_g / μ_cg),   α_g = 1 / o_g²

Covariate effects are **summed** across covariate columns, as upstream does (the prior mean of the
multiplier is the number of covariate columns); with one covariate column it is simply t_{level(c),g}.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_mean, init_to_median, init_to_value
from pyro.poutine.util import site_is_subsample

MODEL_NAME = "RegressionBackgroundDetectionTechPyroModel"


@dataclass(frozen=True)
class ReferencePriors:
    """Hyper-priors with upstream's defaults."""

    gene_tech_mean: float = 1.0
    gene_tech_alpha: float = 200.0
    detection_mean_alpha: float = 1.0
    detection_mean_beta: float = 1.0
    gene_add_alpha_hyp: tuple[float, float] = (9.0, 3.0)
    gene_add_mean_hyp: tuple[float, float] = (1.0, 100.0)
    alpha_g_phi_hyp: tuple[float, float] = (9.0, 3.0)


@dataclass
class ReferenceDesign:
    """Integer codes of every cell: label f(c), batch e(c) and covariate columns (one code per column)."""

    labels: np.ndarray  # (C,) int64 in 0..F-1
    batches: np.ndarray  # (C,) int64 in 0..E-1
    covariates: np.ndarray  # (C, K) int64 codes, offset so that column k's levels follow column k-1's
    factor_names: list[str]
    batch_names: list[str]
    covariate_levels: list[list[str]] = field(default_factory=list)

    @property
    def n_factors(self) -> int:
        return len(self.factor_names)

    @property
    def n_batches(self) -> int:
        return len(self.batch_names)

    @property
    def n_covariate_levels(self) -> int:
        return sum(len(levels) for levels in self.covariate_levels)


class ReferenceModel:
    """The generative model as a pyro callable over a minibatch of cells."""

    def __init__(self, n_obs: int, n_vars: int, design: ReferenceDesign, priors: ReferencePriors = ReferencePriors(),
                 device: torch.device | str = "cpu"):
        self.n_obs, self.n_vars, self.design, self.priors = n_obs, n_vars, design, priors
        self.device = torch.device(device)
        self.n_factors, self.n_batches = design.n_factors, design.n_batches
        self.n_tech = design.n_covariate_levels
        self._one = torch.ones((), device=self.device)

    def _const(self, value: float) -> torch.Tensor:
        return self._one * value

    def _gamma(self, shape: float, rate: float, size: list[int]) -> dist.Distribution:
        return dist.Gamma(self._const(shape), self._const(rate)).expand(size).to_event(len(size))

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, batches: torch.Tensor, covariates: torch.Tensor,
                 idx: torch.Tensor) -> None:
        p, F, G, E, T = self.priors, self.n_factors, self.n_vars, self.n_batches, self.n_tech
        one = self._one
        g_fg = pyro.sample("per_cluster_mu_fg", self._gamma(1.0, 1.0, [F, G]))
        if T:
            t_tg = pyro.sample(
                "detection_tech_gene_tg",
                dist.Gamma(self._const(p.gene_tech_alpha), self._const(p.gene_tech_alpha / p.gene_tech_mean))
                .expand([T, G]).to_event(2),
            )
        y_e = pyro.sample(
            "detection_mean_y_e",
            self._gamma(p.detection_mean_alpha, p.detection_mean_beta, [E, 1]),
        )
        a_s = pyro.sample(
            "s_g_gene_add_alpha_hyp",
            self._gamma(*p.gene_add_alpha_hyp, [1, 1]),
        )
        m_e = pyro.sample(
            "s_g_gene_add_mean",
            self._gamma(*p.gene_add_mean_hyp, [E, 1]),
        )
        u_e = pyro.sample("s_g_gene_add_alpha_e_inv", dist.Exponential(a_s).expand([E, 1]).to_event(2))
        shape_e = one / u_e.pow(2)
        s_eg = pyro.sample("s_g_gene_add", dist.Gamma(shape_e, shape_e / m_e).expand([E, G]).to_event(2))
        phi = pyro.sample("alpha_g_phi_hyp", self._gamma(*p.alpha_g_phi_hyp, [1, 1]))
        o_g = pyro.sample("alpha_g_inverse", dist.Exponential(phi).expand([1, G]).to_event(2))
        alpha_g = one / o_g.pow(2)
        mu = expected_mean(g_fg, s_eg, y_e, t_tg if T else None, labels, batches, covariates)
        with pyro.plate("obs_plate", size=self.n_obs, dim=-2, subsample=idx):
            pyro.sample("data_target", dist.GammaPoisson(alpha_g, alpha_g / mu), obs=x)

    def initial_values(self, cluster_averages: torch.Tensor, example_batch: tuple) -> dict[str, torch.Tensor]:
        """Upstream's initialisation: signatures at cluster averages + 1e-4, every other site at its prior mean."""
        init_fn = init_to_value(values={"per_cluster_mu_fg": cluster_averages + 1e-4},
                                fallback=init_to_mean(fallback=init_to_median))
        with poutine.block(), InitMessenger(init_fn):
            trace = poutine.trace(self).get_trace(*example_batch)
        return {
            name: site["value"].detach()
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
        }


def expected_mean(g_fg, s_eg, y_e, t_tg, labels, batches, covariates) -> torch.Tensor:
    """μ for a set of cells (cells x genes) from signatures, ambient RNA, batch detection and covariates."""
    mu = (g_fg[labels] + s_eg[batches]) * y_e[batches]
    if t_tg is not None:
        mu = mu * t_tg[covariates].sum(dim=1)  # summed over covariate columns, as upstream
    return mu


@dataclass
class CellGroups:
    """Cells that share label, batch and covariate codes share μ: ``group`` of each cell, and each group's codes."""

    group: np.ndarray  # (C,) int64 in 0..K-1
    labels: np.ndarray  # (K,)
    batches: np.ndarray  # (K,)
    covariates: np.ndarray  # (K, n covariate columns)

    @property
    def n_groups(self) -> int:
        return len(self.labels)


def cell_groups(design: ReferenceDesign) -> CellGroups:
    """Group the cells by their full design row (label, batch, covariate codes)."""
    rows = np.column_stack([design.labels, design.batches, design.covariates]).astype(np.int64)
    codes, group = np.unique(rows, axis=0, return_inverse=True)
    return CellGroups(group.ravel().astype(np.int64), codes[:, 0], codes[:, 1], codes[:, 2:])


def cluster_averages(x, labels: np.ndarray, n_factors: int) -> np.ndarray:
    """Mean count of each gene over the cells of each label (F x G), in label-code order."""
    import scipy.sparse as sp

    indicator = sp.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(n_factors, len(labels)))
    sums = indicator @ x
    sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums)
    counts = np.bincount(labels, minlength=n_factors)[:, None]
    return sums / counts


def max_epochs_heuristic(n_obs: int, cap: int = 1000) -> int:
    """Upstream's default when no epoch count is given: min(round(20000 / n_cells * 1000), 1000), >= 1."""
    return max(1, min(int(round(20000 / n_obs * 1000)), cap))
