"""The cell2location spatial mapping model (model_spec §2.3).

Upstream's ``LocationModelLinearDependentWMultiExperimentLocationBackgroundNormLevelGeneAlphaPyroModel``
with the same site names, priors, shapes and defaults::

    μ_sg = (m_g · Σ_f w_sf g_fg + s_{e(s),g}) · y_s,    D_sg ~ GammaPoisson(α_{e(s),g}, α/μ_sg),  α_eg = 1/o_eg²

w_sf (cell abundance) has a hierarchical prior through tissue-zone groups: n_s cells per location,
b_s groups per location, z_sr group loadings, x_rf group-to-type weights. The signatures g_fg are
fixed. One extension: ``N_cells_per_location`` may differ per location (per sample in the pipeline);
with one value everywhere this is exactly upstream's model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch

MODEL_NAME = "LocationModelLinearDependentWMultiExperimentLocationBackgroundNormLevelGeneAlphaPyroModel"
LOCAL_SITES = ("n_s_cells_per_location", "b_s_groups_per_location", "z_sr_groups_factors", "w_sf", "detection_y_s")


@dataclass(frozen=True)
class MappingHyperparameters:
    """Module hyper-parameters with upstream's defaults (model_spec §2.2)."""

    A_factors_per_location: float = 7.0  # noqa: N815 (upstream's names)
    B_groups_per_location: float = 7.0  # noqa: N815
    N_cells_mean_var_ratio: float = 1.0  # noqa: N815
    n_groups: int = 50
    m_g_mean: float = 1.0
    m_g_mean_var_ratio: float = 1.0
    m_g_alpha_mean: float = 3.0  # used as an Exponential *rate*, as upstream
    w_sf_mean_var_ratio: float = 5.0
    detection_mean_alpha: float = 10.0
    alpha_g_phi_hyp: tuple[float, float] = (9.0, 3.0)
    gene_add_alpha_hyp: tuple[float, float] = (9.0, 3.0)
    gene_add_mean_hyp: tuple[float, float] = (1.0, 100.0)


def detection_mean_from_data(total_counts: np.ndarray, n_cells_per_location: np.ndarray, signatures: np.ndarray,
                             correction: float = 1.0) -> float:
    """Upstream's data-derived detection mean: (mean_s[total_s / N_s]) / mean_f[Σ_g g_fg] × correction.

    With one N for all locations this is (sp_total / N) / sc_total, exactly upstream's formula.
    """
    sc_total = float(np.asarray(signatures).sum(axis=1).mean())
    return float(np.mean(np.asarray(total_counts) / np.asarray(n_cells_per_location))) / sc_total * correction


class MappingModel:
    """The generative model as a pyro callable over a (mini)batch of locations."""

    def __init__(self, n_obs: int, signatures: torch.Tensor, n_batches: int, n_cells_per_location: torch.Tensor,
                 detection_alpha: torch.Tensor, detection_mean: float,
                 hyper: MappingHyperparameters = MappingHyperparameters()):
        """``signatures`` is (F, G); ``n_cells_per_location`` is (S, 1); ``detection_alpha`` is (E, 1)."""
        self.n_obs = n_obs
        self.cell_state = signatures
        self.n_factors, self.n_vars = signatures.shape
        self.n_batches = n_batches
        self.n_cells = n_cells_per_location
        self.detection_alpha = detection_alpha
        self.detection_mean = float(detection_mean)
        self.hyper = hyper
        self.device = signatures.device
        self._one = torch.ones((), device=self.device)
        self.cell_state_totals = signatures.sum(dim=1)  # Σ_g g_fg, used for u_sf with m_g

    def _c(self, value: float) -> torch.Tensor:
        return self._one * value

    def _gamma(self, shape: float, rate: float, size: list[int]) -> dist.Distribution:
        return dist.Gamma(self._c(shape), self._c(rate)).expand(size).to_event(len(size))

    def plate(self, idx: torch.Tensor):
        return pyro.plate("obs_plate", size=self.n_obs, dim=-2, subsample=idx)

    def __call__(self, x: torch.Tensor, batch_index: torch.Tensor, idx: torch.Tensor) -> None:
        h = self.hyper
        F, G, E, R = self.n_factors, self.n_vars, self.n_batches, h.n_groups
        one = self._one
        m_g_mean = pyro.sample("m_g_mean", self._gamma(h.m_g_mean_var_ratio * h.m_g_mean, h.m_g_mean_var_ratio, [1, 1]))
        m_g_alpha_e_inv = pyro.sample("m_g_alpha_e_inv", dist.Exponential(self._c(h.m_g_alpha_mean))
                                      .expand([1, 1]).to_event(2))
        m_g_alpha_e = one / m_g_alpha_e_inv.pow(2)
        m_g = pyro.sample("m_g", dist.Gamma(m_g_alpha_e, m_g_alpha_e / m_g_mean).expand([1, G]).to_event(2))

        n_cells = self.n_cells[idx]
        obs_plate = self.plate(idx)  # one plate object, re-entered for every local site (as upstream)
        with obs_plate:
            n_s = pyro.sample("n_s_cells_per_location",
                              dist.Gamma(n_cells * h.N_cells_mean_var_ratio, self._c(h.N_cells_mean_var_ratio)
                                         .expand(n_cells.shape)))
            b_s = pyro.sample("b_s_groups_per_location",
                              dist.Gamma(self._c(h.B_groups_per_location), one).expand([len(idx), 1]))
        with obs_plate:
            z_sr = pyro.sample("z_sr_groups_factors",
                               dist.Gamma((b_s / R).expand([len(idx), R]), (b_s / n_s).expand([len(idx), R])))
        k_r = pyro.sample("k_r_factors_per_groups",
                          self._gamma(h.A_factors_per_location / h.B_groups_per_location, 1.0, [R, 1]))
        x_fr = pyro.sample("x_fr_group2fact", dist.Gamma(k_r / F, k_r).expand([R, F]).to_event(2))
        with obs_plate:
            w_mu = z_sr @ x_fr
            w_sf = pyro.sample("w_sf", dist.Gamma(w_mu * h.w_sf_mean_var_ratio, self._c(h.w_sf_mean_var_ratio)))

        y_e = pyro.sample("detection_mean_y_e",
                          self._gamma(h.detection_mean_alpha, h.detection_mean_alpha / self.detection_mean, [E, 1]))
        alpha_y = pyro.deterministic("detection_hyp_prior_alpha", self.detection_alpha.expand([E, 1]))
        alpha_s = alpha_y[batch_index]
        with obs_plate:
            y_s = pyro.sample("detection_y_s", dist.Gamma(alpha_s, alpha_s / y_e[batch_index]))

        a_s = pyro.sample("s_g_gene_add_alpha_hyp", self._gamma(*h.gene_add_alpha_hyp, [1, 1]))
        m_e = pyro.sample("s_g_gene_add_mean", self._gamma(*h.gene_add_mean_hyp, [E, 1]))
        u_e = pyro.sample("s_g_gene_add_alpha_e_inv", dist.Exponential(a_s).expand([E, 1]).to_event(2))
        shape_e = one / u_e.pow(2)
        s_eg = pyro.sample("s_g_gene_add", dist.Gamma(shape_e, shape_e / m_e).expand([E, G]).to_event(2))
        phi = pyro.sample("alpha_g_phi_hyp", self._gamma(*h.alpha_g_phi_hyp, [1, 1]))
        o_eg = pyro.sample("alpha_g_inverse", dist.Exponential(phi).expand([E, G]).to_event(2))

        mu = expected_mean(w_sf, self.cell_state, m_g, s_eg, y_s, batch_index)
        alpha = (one / o_eg.pow(2))[batch_index]
        with obs_plate:
            pyro.sample("data_target", dist.GammaPoisson(alpha, alpha / mu), obs=x)
            pyro.deterministic("u_sf_mRNA_factors", w_sf * (self.cell_state * m_g).sum(-1))

    def initial_values(self, batch_index: np.ndarray) -> dict[str, torch.Tensor]:
        """Every site at its prior mean at upstream's initial values (model_spec §2.4), for all locations."""
        h, S, F, G, E, R = self.hyper, self.n_obs, self.n_factors, self.n_vars, self.n_batches, self.hyper.n_groups
        dev = self.device

        def full(shape, value):
            return torch.full(shape, float(value), device=dev)

        n_s = self.n_cells.to(dev).float().reshape(S, 1)
        return {
            "m_g_mean": full((1, 1), h.m_g_mean),
            "m_g_alpha_e_inv": full((1, 1), 1 / h.m_g_alpha_mean),
            "m_g": full((1, G), h.m_g_mean),
            "n_s_cells_per_location": n_s.clone(),
            "b_s_groups_per_location": full((S, 1), h.B_groups_per_location),
            "z_sr_groups_factors": (n_s / R).expand(S, R).clone(),
            "k_r_factors_per_groups": full((R, 1), h.A_factors_per_location / h.B_groups_per_location),
            "x_fr_group2fact": full((R, F), 1 / F),
            "w_sf": (n_s / F).expand(S, F).clone(),
            "detection_mean_y_e": full((E, 1), self.detection_mean),
            "detection_y_s": full((S, 1), self.detection_mean),
            "s_g_gene_add_alpha_hyp": full((1, 1), h.gene_add_alpha_hyp[0] / h.gene_add_alpha_hyp[1]),
            "s_g_gene_add_mean": full((E, 1), h.gene_add_mean_hyp[0] / h.gene_add_mean_hyp[1]),
            "s_g_gene_add_alpha_e_inv": full((E, 1), h.gene_add_alpha_hyp[1] / h.gene_add_alpha_hyp[0]),
            "s_g_gene_add": full((E, G), h.gene_add_mean_hyp[0] / h.gene_add_mean_hyp[1]),
            "alpha_g_phi_hyp": full((1, 1), h.alpha_g_phi_hyp[0] / h.alpha_g_phi_hyp[1]),
            "alpha_g_inverse": full((E, G), h.alpha_g_phi_hyp[1] / h.alpha_g_phi_hyp[0]),
        }


def expected_mean(w_sf, cell_state, m_g, s_eg, y_s, batch_index) -> torch.Tensor:
    """μ_sg = (m_g Σ_f w_sf g_fg + s_{e(s),g}) y_s for a set of locations."""
    return ((w_sf @ cell_state) * m_g + s_eg[batch_index]) * y_s
