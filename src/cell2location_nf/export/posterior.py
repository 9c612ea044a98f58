"""Posterior summaries of a mean-field guide: sampled (mean, std, q05, q95) or analytic quantiles.

The sampled path matches upstream's ``export_posterior``: ``num_samples`` draws per element, mean,
``std`` with ddof=0 and linear-interpolation quantiles. Because the guide is mean-field, elements are
independent, so we sample in chunks of elements to bound memory without changing the distribution.
"""

from __future__ import annotations

import logging
import re
import zlib

import numpy as np
import torch

from ..models.guide import MeanFieldGuide

log = logging.getLogger(__name__)

SAMPLED_SUMMARIES = ("means", "stds", "q05", "q95")
MAX_CHUNK_VALUES = 8_000_000  # samples x elements per chunk (torch.quantile has an input size limit)


def parse_quantile_name(name: str) -> float:
    """Upstream's rule: 'qXX' means 0.XX ('q05' -> 0.05, 'q50' -> 0.5, 'q001' -> 0.001, 'q5' -> 0.5)."""
    match = re.fullmatch(r"q(\d+)", name)
    if not match:
        raise ValueError(f"not a quantile summary name: {name!r} (expected qXX, e.g. q05)")
    if len(match.group(1)) == 1:
        log.warning("Quantile name %r is read as 0.%s, as upstream does; write q%s0 or q0%s to be explicit",
                    name, match.group(1), match.group(1), match.group(1))
    return float("0." + match.group(1))


def summarise_draws(samples: torch.Tensor, levels: dict[str, float]) -> dict[str, torch.Tensor]:
    """Mean, std (ddof 0) and linear-interpolation quantiles over the first (draw) axis of ``samples``.

    ``levels`` maps summary names to quantile levels, e.g. {'q05': 0.05} (see :func:`parse_quantile_name`).
    """
    qs = torch.tensor(list(levels.values()), dtype=samples.dtype, device=samples.device)
    flat = samples.reshape(samples.shape[0], -1)
    out = {"means": samples.mean(0), "stds": samples.std(0, correction=0)}
    for name, value in zip(levels, torch.quantile(flat, qs, dim=0), strict=True):
        out[name] = value.reshape(samples.shape[1:])
    return out


def central_summary(summaries: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The point estimate of each site: posterior means, or medians (q50) on the analytic-quantile path."""
    return summaries["means"] if "means" in summaries else summaries["q50"]


def sampled_summaries(
    guide: MeanFieldGuide, sites: list[str], num_samples: int = 1000, seed: int = 0,
    quantiles: tuple[str, ...] = ("q05", "q95"),
) -> dict[str, dict[str, np.ndarray]]:
    """{'means'|'stds'|'qXX': {site: array}} from ``num_samples`` guide draws per element.

    Each site has its own random stream (seeded from ``seed`` and the site name), so results do not depend
    on the order of sites, e.g. after reloading a saved model.
    """
    device = next(guide.parameters()).device
    levels = {q: parse_quantile_name(q) for q in quantiles}
    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in ("means", "stds", *quantiles)}
    for site in sites:
        generator = torch.Generator(device=device).manual_seed(seed + zlib.crc32(site.encode()))
        loc = guide.locs[site].detach().reshape(-1)
        scale = guide.scale(site).detach().reshape(-1)
        chunk = max(1, MAX_CHUNK_VALUES // num_samples)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in out}
        for start in range(0, loc.numel(), chunk):
            sl = slice(start, start + chunk)
            noise = torch.randn((num_samples, loc[sl].numel()), generator=generator, device=loc.device)
            for key, value in summarise_draws(torch.exp(loc[sl] + scale[sl] * noise), levels).items():
                parts[key].append(value)
        shape = guide.locs[site].shape
        for key, values in parts.items():
            out[key][site] = torch.cat(values).reshape(shape).cpu().numpy()
    return out


def analytic_quantiles(
    guide: MeanFieldGuide, sites: list[str], quantiles: tuple[str, ...] = ("q05", "q50", "q95")
) -> dict[str, dict[str, np.ndarray]]:
    """{'qXX': {site: exp(loc + scale · Φ⁻¹(q))}} straight from the guide, no sampling (large data)."""
    return {q: {site: guide.quantile(site, parse_quantile_name(q)).cpu().numpy() for site in sites}
            for q in quantiles}
