"""The mapping model's −ELBO written out in torch: no pyro tracing, one autograd node for the likelihood.

It is the same objective as pyro's ``Trace_ELBO`` with the mean-field guide (one reparameterised draw), so
values (and logged −ELBO histories) are comparable with upstream's. The prior and entropy terms are plain
tensor code (:func:`site_terms`); the negative-binomial likelihood and its exact savings live in
``nb_likelihood``. With ``use_compile`` both are fused by torch.compile.

``tests/test_mapping_elbo.py`` checks the value and gradients against pyro's model and guide log-densities.
"""

from __future__ import annotations

import torch

from ..inference.compile import CompiledOrEager
from .elbo_terms import ambient_and_overdispersion_logp, exponential_logp, gamma_logp, lognormal_draws, rows_of
from .guide import MeanFieldGuide
from .mapping import LOCAL_SITES, MappingHyperparameters, MappingModel
from .nb_likelihood import CountBatch, neg_binomial_log_lik


def draw(guide: MeanFieldGuide, idx: torch.Tensor | None, noise: dict[str, torch.Tensor] | None = None):
    """Reparameterised draws: {site: (z, log z, −log q(z) summed)}; local sites for rows ``idx`` only (None: all)."""
    noise = noise if noise is not None else draw_noise(guide, idx)
    return _draws(dict(guide.locs), dict(guide.raw_scales), noise, idx)


def draw_noise(guide: MeanFieldGuide, idx: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Standard normal noise for every site (local sites: rows ``idx``, or all for None), in site order (one random
    stream)."""
    return {name: torch.randn_like(rows_of(guide.locs[name], idx) if name in LOCAL_SITES else guide.locs[name])
            for name in guide.site_names}


def _draws(locs: dict, raw_scales: dict, noise: dict, idx: torch.Tensor | None):
    return lognormal_draws(locs, raw_scales, noise, idx, LOCAL_SITES)


def site_terms(locs: dict, raw_scales: dict, noise: dict, idx: torch.Tensor | None, batch_index: torch.Tensor,
               n_cells: torch.Tensor, detection_alpha: torch.Tensor, one: torch.Tensor,
               hyper: MappingHyperparameters, detection_mean: float, n_factors: int):
    """Draws, and log prior + entropy of every site: (draws, global sum, location-plated sum for rows idx)."""
    h, R, F = hyper, hyper.n_groups, n_factors
    d = _draws(locs, raw_scales, noise, idx)
    z = {k: v[0] for k, v in d.items()}
    lz = {k: v[1] for k, v in d.items()}

    # global sites
    g = gamma_logp(z["m_g_mean"], lz["m_g_mean"], one * h.m_g_mean_var_ratio * h.m_g_mean,
                    one * h.m_g_mean_var_ratio)
    g = g + exponential_logp(z["m_g_alpha_e_inv"], one * h.m_g_alpha_mean)
    m_alpha = 1 / z["m_g_alpha_e_inv"].pow(2)
    g = g + gamma_logp(z["m_g"], lz["m_g"], m_alpha, m_alpha / z["m_g_mean"])
    k_r = z["k_r_factors_per_groups"]
    g = g + gamma_logp(k_r, lz["k_r_factors_per_groups"], one * (h.A_factors_per_location / h.B_groups_per_location),
                        one)
    g = g + gamma_logp(z["x_fr_group2fact"], lz["x_fr_group2fact"], k_r / F, k_r)
    y_e = z["detection_mean_y_e"]
    g = g + gamma_logp(y_e, lz["detection_mean_y_e"], one * h.detection_mean_alpha,
                        one * (h.detection_mean_alpha / detection_mean))
    g = g + ambient_and_overdispersion_logp(z, lz, one, h.gene_add_alpha_hyp, h.gene_add_mean_hyp, h.alpha_g_phi_hyp)

    # location-plated sites
    n_s, b_s = z["n_s_cells_per_location"], z["b_s_groups_per_location"]
    loc = gamma_logp(n_s, lz["n_s_cells_per_location"], n_cells * h.N_cells_mean_var_ratio,
                      one * h.N_cells_mean_var_ratio)
    loc = loc + gamma_logp(b_s, lz["b_s_groups_per_location"], one * h.B_groups_per_location, one)
    loc = loc + gamma_logp(z["z_sr_groups_factors"], lz["z_sr_groups_factors"], b_s / R, b_s / n_s)
    w_mu = z["z_sr_groups_factors"] @ z["x_fr_group2fact"]
    loc = loc + gamma_logp(z["w_sf"], lz["w_sf"], w_mu * h.w_sf_mean_var_ratio, one * h.w_sf_mean_var_ratio)
    alpha_s = detection_alpha[batch_index]
    loc = loc + gamma_logp(z["detection_y_s"], lz["detection_y_s"], alpha_s, alpha_s / y_e[batch_index])

    g = g + sum(v[2] for k, v in d.items() if k not in LOCAL_SITES)
    loc = loc + sum(v[2] for k, v in d.items() if k in LOCAL_SITES)
    return z, g, loc


_site_terms = CompiledOrEager(site_terms, "the prior terms")


def negative_elbo(model: MappingModel, guide: MeanFieldGuide, counts: CountBatch, batch_index: torch.Tensor,
                  idx: torch.Tensor | None, noise: dict[str, torch.Tensor] | None = None,
                  use_compile: bool | str = False) -> torch.Tensor:
    """−ELBO estimate (scaled to all locations) for one minibatch: the rows ``idx`` of the locations, or all of them
    in order for None (a full-batch step: the same values and gradients, bit for bit, without gathering the local
    parameters and scattering their gradients back: bench/RESULTS.md, "The full batch taken whole").

    ``use_compile``: fuse the prior/entropy terms and the likelihood pass with torch.compile (same values);
    ``inference.compile.DYNAMIC`` compiles them once for every minibatch size (see ``CompiledOrEager``).
    """
    noise = noise if noise is not None else draw_noise(guide, idx)
    args = (dict(guide.locs), dict(guide.raw_scales), noise, idx, batch_index, rows_of(model.n_cells, idx),
            model.detection_alpha, model._one, model.hyper, model.detection_mean, model.n_factors)
    z, global_terms, local_terms = _site_terms(use_compile, *args)
    # likelihood: NB(x | μ, α), one autograd node (models/nb_likelihood.py)
    alpha_eg = 1 / z["alpha_g_inverse"].pow(2)
    likelihood = neg_binomial_log_lik(z["w_sf"], z["m_g"], z["s_g_gene_add"], z["detection_y_s"], alpha_eg,
                                      model.cell_state, counts, use_compile) - counts.log_factorial
    scale_local = model.n_obs / counts.n_rows
    return -(global_terms + scale_local * (local_terms + likelihood))
