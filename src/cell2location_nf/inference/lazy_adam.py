"""Adam that moves a location's parameters only in the steps whose minibatch contains that location.

With minibatches over locations, a per-location parameter gets a gradient in one step of every epoch
and an exact zero in all the others. Plain Adam still moves it in those other steps, along its decaying
momentum (about ten steps' worth after each real gradient), and decays its second moment, so the row
drifts on stale information. Here the rows of ``lazy`` parameters whose gradient is all zero are left
alone, parameters and moments alike, and each row keeps its own step count for the bias correction (as
TensorFlow's LazyAdam does). When every row is in every step, as in full-batch training, the update is
Adam's exactly.
"""

from __future__ import annotations

import torch


class LazyRowAdam(torch.optim.Optimizer):
    """Adam (torch's defaults: betas 0.9/0.999, eps 1e-8); groups with ``lazy=True`` update touched rows only.

    A row of a lazy parameter is its slice along the first dimension (one location).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "lazy": False})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    rows = p.shape[0] if group["lazy"] else 1
                    state["step"] = torch.zeros((rows,) + (1,) * (p.dim() - 1), dtype=p.dtype, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                if group["lazy"]:
                    touched = p.grad.reshape(p.shape[0], -1).ne(0).any(dim=1).nonzero().squeeze(1)
                    _adam_update(p, p.grad, state, touched, lr, beta1, beta2, eps)
                else:
                    _adam_update(p, p.grad, state, None, lr, beta1, beta2, eps)
        return loss


def _adam_update(p: torch.Tensor, grad: torch.Tensor, state: dict, rows: torch.Tensor | None, lr: float,
                 beta1: float, beta2: float, eps: float) -> None:
    """One Adam step on ``p`` (all of it, or only ``rows`` along the first dimension)."""
    step, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
    if rows is not None:
        p_r, g, m_r, v_r, t = p[rows], grad[rows], m[rows], v[rows], step[rows] + 1
    else:
        p_r, g, m_r, v_r, t = p, grad, m, v, step + 1
    m_r = m_r.mul(beta1).add_(g, alpha=1 - beta1)
    v_r = v_r.mul(beta2).addcmul_(g, g, value=1 - beta2)
    update = (m_r / (1 - beta1 ** t)) / ((v_r / (1 - beta2 ** t)).sqrt_().add_(eps))
    if rows is not None:
        p.index_copy_(0, rows, p_r - lr * update)
        m.index_copy_(0, rows, m_r)
        v.index_copy_(0, rows, v_r)
        step.index_copy_(0, rows, t)
    else:
        p.sub_(lr * update)
        m.copy_(m_r)
        v.copy_(v_r)
        step.copy_(t)
