"""Building blocks of the −ELBOs written out in torch: prior log-densities and mean-field LogNormal draws.

Both models' objectives (``mapping_elbo``, ``reference_elbo``) are pyro's 1-particle ``Trace_ELBO`` with
the :class:`~cell2location_nf.models.guide.MeanFieldGuide`, spelled out so that no tracing runs per step.
"""

from __future__ import annotations

import math

import torch
from torch.nn.functional import softplus

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gamma_logp(z: torch.Tensor, log_z: torch.Tensor, shape, rate) -> torch.Tensor:
    """Σ log Gamma(z | shape, rate), given log z as well."""
    return (shape * torch.log(rate) - torch.lgamma(shape) + (shape - 1) * log_z - rate * z).sum()


def exponential_logp(z: torch.Tensor, rate) -> torch.Tensor:
    return (torch.log(rate) - rate * z).sum()


def ambient_and_overdispersion_logp(z: dict, lz: dict, one: torch.Tensor, gene_add_alpha_hyp: tuple[float, float],
                                    gene_add_mean_hyp: tuple[float, float],
                                    alpha_g_phi_hyp: tuple[float, float]) -> torch.Tensor:
    """Σ log prior of the sites both models share: ambient RNA s_eg with its per-batch hierarchy
    (s_g_gene_add_alpha_hyp, _mean, _alpha_e_inv) and the overdispersion α_g (alpha_g_phi_hyp, alpha_g_inverse)."""
    a_s, m_e = z["s_g_gene_add_alpha_hyp"], z["s_g_gene_add_mean"]
    t = gamma_logp(a_s, lz["s_g_gene_add_alpha_hyp"], one * gene_add_alpha_hyp[0], one * gene_add_alpha_hyp[1])
    t = t + gamma_logp(m_e, lz["s_g_gene_add_mean"], one * gene_add_mean_hyp[0], one * gene_add_mean_hyp[1])
    t = t + exponential_logp(z["s_g_gene_add_alpha_e_inv"], a_s)
    shape_e = 1 / z["s_g_gene_add_alpha_e_inv"].pow(2)
    t = t + gamma_logp(z["s_g_gene_add"], lz["s_g_gene_add"], shape_e, shape_e / m_e)
    phi = z["alpha_g_phi_hyp"]
    t = t + gamma_logp(phi, lz["alpha_g_phi_hyp"], one * alpha_g_phi_hyp[0], one * alpha_g_phi_hyp[1])
    return t + exponential_logp(z["alpha_g_inverse"], phi)


def rows_of(values: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """Rows ``idx`` of a location-plated tensor; None means every row, in order, taken whole: gathering them by
    ``arange(n)`` copies them and its backward scatters the gradients back through a deterministic index_put."""
    return values if idx is None else values[idx]


def lognormal_draws(locs: dict, raw_scales: dict, noise: dict, idx: torch.Tensor | None = None,
                    local_sites: tuple[str, ...] = ()) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Reparameterised draws {site: (z, log z, −Σ log q(z))}; ``local_sites`` take rows ``idx`` only (``rows_of``)."""
    out = {}
    for name, eps in noise.items():
        loc, raw = locs[name], raw_scales[name]
        if name in local_sites:
            loc, raw = rows_of(loc, idx), rows_of(raw, idx)
        scale = softplus(raw)
        log_z = loc + scale * eps
        entropy = (log_z + torch.log(scale) + HALF_LOG_2PI + 0.5 * eps * eps).sum()  # = −Σ log q(z)
        out[name] = (torch.exp(log_z), log_z, entropy)
    return out
