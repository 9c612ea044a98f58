"""A mean-field LogNormal guide, equivalent to pyro's AutoNormal on positive sites, with module-owned state.

Every element of every latent site gets an independent Normal in log space (AutoNormal's
``biject_to(positive)`` is ``exp``), i.e. q = LogNormal(loc, scale). ``scale`` is softplus-
parameterised and starts at 0.1 (pyro's default ``init_scale``); ``loc`` starts at the log of the
initial value. Parameters live on this ``torch.nn.Module``, not in pyro's global param store, so
several models can coexist and saving/reloading is a plain state dict.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus


def softplus_inverse(y: float) -> float:
    """x such that softplus(x) = y."""
    return y + math.log(-math.expm1(-y))


class MeanFieldGuide(nn.Module):
    """q(z) = Π LogNormal(loc, softplus(raw_scale)) over the sites given at construction.

    ``local_sites`` are plated over observations (their first dimension is the observation axis): the
    guide holds full (n_obs, ...) parameters and samples the rows of the current minibatch inside the
    same ``obs_plate`` as the model, so pyro scales their log-density like the model's. The models pass
    the minibatch indices as their last positional argument.
    """

    def __init__(self, init_values: dict[str, torch.Tensor], init_scale: float = 0.1,
                 local_sites: tuple[str, ...] = (), plate_name: str = "obs_plate", plate_dim: int = -2):
        super().__init__()
        self.site_names = list(init_values)
        self.local_sites = tuple(local_sites)
        self.plate_name, self.plate_dim = plate_name, plate_dim
        self.locs = nn.ParameterDict({n: nn.Parameter(torch.log(v.detach().clone())) for n, v in init_values.items()})
        raw = softplus_inverse(init_scale)
        self.raw_scales = nn.ParameterDict(
            {n: nn.Parameter(torch.full_like(v, raw)) for n, v in init_values.items()}
        )

    def scale(self, name: str) -> torch.Tensor:
        return softplus(self.raw_scales[name])

    def distribution(self, name: str) -> dist.Distribution:
        loc = self.locs[name]
        return dist.LogNormal(loc, self.scale(name)).to_event(loc.dim())

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        values = {}
        if self.local_sites:
            idx = args[-1]
            n_obs = self.locs[self.local_sites[0]].shape[0]
            with pyro.plate(self.plate_name, size=n_obs, dim=self.plate_dim, subsample=idx):
                for name in self.local_sites:
                    values[name] = pyro.sample(name, dist.LogNormal(self.locs[name][idx], self.scale(name)[idx]))
        for name in self.site_names:
            if name not in values:
                values[name] = pyro.sample(name, self.distribution(name))
        return values

    def median(self, name: str) -> torch.Tensor:
        return torch.exp(self.locs[name]).detach()

    def quantile(self, name: str, q: float) -> torch.Tensor:
        """Analytic quantile exp(loc + scale · Φ⁻¹(q)); exactly the median at q = 0.5."""
        if q == 0.5:
            return self.median(name)
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(q, dtype=self.locs[name].dtype))
        return torch.exp(self.locs[name] + self.scale(name) * z).detach()

    def sample_site(self, name: str, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``num_samples`` independent samples of one site (num_samples x site shape)."""
        loc, scale = self.locs[name].detach(), self.scale(name).detach()
        noise = torch.randn((num_samples, *loc.shape), generator=generator, device=loc.device, dtype=loc.dtype)
        return torch.exp(loc + scale * noise)
