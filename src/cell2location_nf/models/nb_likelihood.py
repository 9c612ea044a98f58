"""The mapping likelihood Σ log NB(x | μ, α) with hand-written gradients, in one autograd node.

μ_sg = (m_g Σ_f w_sf g_fg + s_{e(s),g}) y_s and α_{e(s),g}. As a single ``torch.autograd.Function`` a step
needs a few (locations x genes) passes instead of autograd's graph of gathers and scatters, which dominated a
step (profile in ``docs/performance.md``). Three exact savings:

* locations are grouped by batch, so α_eg and s_eg broadcast over contiguous row blocks (never (S, G) copies);
* x log μ and x log(α + μ) vanish where x = 0, so they are evaluated on non-zero counts only;
* lgamma(x + α) − lgamma(α) and its derivative depend on (batch, gene, x) only, so they are evaluated once
  per distinct triple and weighted by its multiplicity (most counts are small integers).

Σ log x! is constant and left to the caller. Gradients, with ρ = 1 / (α + μ)::

    ∂/∂μ = x / μ − (x + α) ρ
    ∂/∂α = log α + log ρ + 1 − α ρ + [ψ(x + α) − ψ(α) − x ρ]_{x > 0}
"""

from __future__ import annotations

import torch


class CountBatch:
    """Counts of a (mini)batch whose rows are grouped by batch, pre-digested for :func:`neg_binomial_log_lik`.

    ``x`` is kept dense for pyro's path; ``blocks`` are (batch, row slice) pairs.
    """

    def __init__(self, x: torch.Tensor, batch_index: torch.Tensor, n_batches: int):
        if batch_index.numel() > 1 and bool((batch_index[1:] < batch_index[:-1]).any()):
            raise ValueError("CountBatch needs its rows grouped by batch (sorted batch index)")
        self.x = x
        self.n_rows, n_genes = x.shape
        self.n_batches = n_batches
        sizes = torch.bincount(batch_index, minlength=n_batches).tolist()
        starts = [sum(sizes[:e]) for e in range(n_batches)]
        self.blocks = [(e, slice(starts[e], starts[e] + sizes[e])) for e in range(n_batches) if sizes[e]]
        self.rows_per_batch = torch.tensor(sizes, dtype=x.dtype, device=x.device).reshape(-1, 1)
        flat = x.reshape(-1)
        self.flat_index = torch.nonzero(flat, as_tuple=True)[0]
        self.values = flat[self.flat_index]
        self.log_factorial = torch.lgamma(self.values + 1).sum()  # Σ log x!: constant, computed once
        rows, cols = self.flat_index // n_genes, self.flat_index % n_genes
        self.batch_gene = batch_index[rows] * n_genes + cols  # position of each non-zero in (E, G)
        self.nonzeros_per_batch_gene = torch.bincount(self.batch_gene, minlength=n_batches * n_genes).to(x.dtype)
        stride = int(self.values.max().item()) + 1 if self.values.numel() else 1
        distinct, self.distinct_counts = torch.unique(self.batch_gene * stride + self.values.long(), return_counts=True)
        self.distinct_batch_gene, self.distinct_values = distinct // stride, (distinct % stride).to(x.dtype)
        self.distinct_counts = self.distinct_counts.to(x.dtype)


class _NegBinomialLogLik(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w_sf, m_g, s_eg, y_s, alpha_eg, cell_state, counts: CountBatch):
        nz, x = counts.flat_index, counts.values
        base = w_sf @ cell_state  # (S, G)
        linear = base * m_g
        rho = torch.empty_like(linear)  # α + μ, then 1 / (α + μ)
        for e, rows in counts.blocks:
            linear[rows] += s_eg[e]
        mu = linear * y_s
        for e, rows in counts.blocks:
            torch.add(mu[rows], alpha_eg[e], out=rho[rows])
        log_rho = torch.log(rho).neg_()
        rho.reciprocal_()
        mu_nz, rho_nz, log_rho_nz = (t.view(-1).index_select(0, nz) for t in (mu, rho, log_rho))
        del mu
        col_log_rho = torch.zeros_like(alpha_eg)
        col_rho = torch.zeros_like(alpha_eg)
        for e, rows in counts.blocks:
            col_log_rho[e] = log_rho[rows].sum(dim=0)
            col_rho[e] = rho[rows].sum(dim=0)
        del log_rho
        log_alpha = torch.log(alpha_eg)
        # distinct (batch, gene, x) triples: lgamma(x + α) − lgamma(α) and ψ(x + α)
        alpha_u = alpha_eg.reshape(-1).index_select(0, counts.distinct_batch_gene)
        x_u, n_u = counts.distinct_values, counts.distinct_counts
        n_nz = counts.nonzeros_per_batch_gene.reshape(alpha_eg.shape)
        log_lik = ((alpha_eg * (counts.rows_per_batch * log_alpha + col_log_rho)).sum()
                   + (n_u * torch.lgamma(x_u + alpha_u)).sum() - (n_nz * torch.lgamma(alpha_eg)).sum()
                   + (x * (torch.log(mu_nz) + log_rho_nz)).sum())
        if not ctx.needs_input_grad[0]:
            return log_lik
        x_rho = x * rho_nz
        grad_mu = rho
        for e, rows in counts.blocks:
            grad_mu[rows] *= -alpha_eg[e]
        grad_mu.view(-1).index_add_(0, nz, x / mu_nz - x_rho)
        grad_alpha = (counts.rows_per_batch * (log_alpha + 1) + col_log_rho - alpha_eg * col_rho
                      - n_nz * torch.digamma(alpha_eg)).reshape(-1)
        grad_alpha.index_add_(0, counts.distinct_batch_gene, n_u * torch.digamma(x_u + alpha_u))
        grad_alpha.index_add_(0, counts.batch_gene, -x_rho)
        ctx.blocks = counts.blocks
        ctx.save_for_backward(m_g, y_s, cell_state, base, linear, grad_mu, grad_alpha.reshape(alpha_eg.shape))
        return log_lik

    @staticmethod
    def backward(ctx, grad_out):
        m_g, y_s, cell_state, base, linear, grad_mu, grad_alpha = ctx.saved_tensors
        grad_y = (grad_mu * linear).sum(dim=1, keepdim=True) * grad_out
        grad_linear = grad_mu * (y_s * grad_out)
        grad_s = torch.zeros_like(grad_alpha)
        for e, rows in ctx.blocks:
            grad_s[e] = grad_linear[rows].sum(dim=0)
        grad_m = (grad_linear * base).sum(dim=0, keepdim=True)
        grad_w = (grad_linear * m_g) @ cell_state.T
        return grad_w, grad_m, grad_s, grad_y, grad_alpha * grad_out, None, None


def neg_binomial_log_lik(w_sf: torch.Tensor, m_g: torch.Tensor, s_eg: torch.Tensor, y_s: torch.Tensor,
                         alpha_eg: torch.Tensor, cell_state: torch.Tensor, counts: CountBatch) -> torch.Tensor:
    """Σ_sg log NB(x_sg | μ_sg, α_{e(s)g}) + Σ log x! (subtract counts.log_factorial for the full density)."""
    return _NegBinomialLogLik.apply(w_sf, m_g, s_eg, y_s, alpha_eg, cell_state, counts)
