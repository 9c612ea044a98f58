"""The mapping likelihood Σ log NB(x | μ, α) with hand-written gradients, in one autograd node.

μ_sg = (m_g Σ_f w_sf g_fg + s_{e(s),g}) y_s and α_{e(s),g}. As one ``torch.autograd.Function`` a step is a
single elementwise pass over (locations x genes) that yields the value and the gradients at once (those of
w, m_g and s_eg through matrix products of its one (locations x genes) gradient), instead of autograd's graph
of gathers, scatters and saved (locations x genes) intermediates, which dominated a step (profile in
``docs/performance.md``). That pass (:func:`dense_terms`) is plain tensor code, so
``torch.compile`` can fuse it into one loop (CPU: C++/OpenMP; GPU: Triton); it also runs eagerly. Its two
logarithms per element come from ``special_functions.vector_log``: a polynomial in the compiled CPU loop.
With one batch (a single sample; every Visium HD slide) the gene gradients come from the pass too
(:func:`one_batch_terms`).

lgamma(x + α) − lgamma(α) and its derivative depend on (batch, gene, x) only, so they are evaluated once
per distinct triple and weighted by its multiplicity (most counts are small integers); Σ log x! is
constant and left to the caller. With ρ = α + μ the remaining terms and gradients are::

    α log α − (α + x) log ρ + x log μ
    ∂/∂μ = x / μ − (α + x) / ρ,    ∂/∂α = log α + 1 − log ρ − (α + x) / ρ  [+ ψ(x + α) − ψ(α) for x > 0]
"""

from __future__ import annotations

import torch

from ..inference.compile import CompiledOrEager
from .special_functions import log_gamma_and_digamma, vector_log


class CountBatch:
    """Counts of a (mini)batch, pre-digested for :func:`neg_binomial_log_lik` (built once per batch of rows).

    ``nonzeros``: (rows, columns, values) of x's non-zero entries in row-major order, when the caller has them
    (a minibatch cut from a CSR matrix); they replace a scan of the dense rows, 18–34 ms of a 200 ms step on
    5,000 Visium HD bins (bench/RESULTS.md, "Minibatch counts from the CSR rows"). ``log_factorial``: Σ log x!
    when the caller has it (summed from per-location values, ``preprocessing.counts.row_log_factorials``), in
    place of log Γ at every non-zero (``aten::lgamma``, about 5 ms of such a step: bench/RESULTS.md, "Gene
    gradients from one product").
    """

    def __init__(self, x: torch.Tensor, batch_index: torch.Tensor, n_batches: int,
                 nonzeros: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                 log_factorial: torch.Tensor | None = None):
        self.x = x
        self.n_rows, n_genes = x.shape
        self.batch_index = batch_index
        self.batch_one_hot_t = torch.nn.functional.one_hot(batch_index, n_batches).to(x.dtype).T.contiguous()
        if nonzeros is None:
            rows, cols = torch.nonzero(x, as_tuple=True)
            values = x[rows, cols]
        else:
            rows, cols, values = nonzeros
        # Σ log x!: constant, computed once
        self.log_factorial = torch.lgamma(values + 1).sum() if log_factorial is None else log_factorial
        # position of each non-zero in (E, G); with one batch, its column
        batch_gene = cols if n_batches == 1 else batch_index[rows] * n_genes + cols
        stride = int(values.max().item()) + 1 if values.numel() else 1
        distinct, counts = distinct_with_counts(batch_gene * stride + values.long(), n_batches * n_genes * stride)
        self.distinct_batch_gene, self.distinct_values = distinct // stride, (distinct % stride).to(x.dtype)
        self.distinct_counts = counts.to(x.dtype)
        # non-zeros per (batch, gene) from the distinct triples' tallies, not a second count of every non-zero
        self.nonzeros_per_batch_gene = torch.zeros(n_batches * n_genes, dtype=x.dtype, device=x.device).index_add_(
            0, self.distinct_batch_gene, self.distinct_counts)


def distinct_with_counts(keys: torch.Tensor, n_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(keys, return_counts=True)`` for keys in [0, n_keys): a tally when the range is at most four
    times the keys' number (a count instead of a sort of the million keys of a 5,000-bin Visium HD minibatch), else
    the sort. The same tensors either way."""
    if n_keys <= 4 * keys.numel():
        tally = torch.bincount(keys, minlength=n_keys)
        distinct = torch.nonzero(tally).squeeze(1)
        return distinct, tally[distinct]
    return torch.unique(keys, return_counts=True)


def dense_terms(base, x, m_g, s_eg, y_s, alpha_eg, log_alpha_eg, batch_index, one_hot_t):
    """α log α − (α + x) log ρ + x log μ summed, and the gradients of that sum (see the module docstring).

    ``base`` = w_sf @ g (S, G); ``log_alpha_eg`` = log α_eg, taken once per (batch, gene) by the caller rather
    than once per (location, gene) here: one of the pass's three logarithms per element.
    Returns (value, ∂/∂(base · m_g + s_eg) (S, G), ∂/∂y_s, ∂/∂α_eg): the second is ∂/∂(w @ g) without its
    factor m_g, which the caller folds into the signatures for ∂/∂w, so the pass writes one (S, G) array where it
    wrote two; the caller also turns it into ∂/∂m_g and ∂/∂s_eg (:func:`_gene_gradients`).
    """
    linear = base * m_g + s_eg[batch_index]
    mu = linear * y_s
    alpha = alpha_eg[batch_index]
    log_alpha = log_alpha_eg[batch_index]
    total = alpha + mu
    log_total = vector_log(total)
    # Summed per row first, x log μ as a product where x > 0: inductor then adds the value up in the loop that
    # makes the gradients. A whole-array sum (with xlogy) was a second pass over (locations x genes), which
    # stored μ and log ρ for it and took log μ there (bench/pass_step.py); the gradients are unchanged.
    x_log_mu = torch.where(x > 0, x * vector_log(mu), 0)
    value = (alpha * log_alpha - (alpha + x) * log_total + x_log_mu).sum(dim=1).sum()
    ratio = (alpha + x) / total
    grad_mu = x / mu - ratio
    grad_alpha = one_hot_t @ (log_alpha + 1 - log_total - ratio)
    grad_y = (grad_mu * linear).sum(dim=1, keepdim=True)
    grad_linear = grad_mu * y_s
    return value, grad_linear, grad_y, grad_alpha


_likelihood_pass = CompiledOrEager(dense_terms, "the likelihood pass")


def one_batch_terms(base, x, m_g, s_eg, y_s, alpha_eg, log_alpha_eg, batch_index, one_hot_t):
    """:func:`dense_terms` for one batch, with ∂/∂m_g = Σ_s grad_sg (w @ g)_sg and ∂/∂s_g = Σ_s grad_sg appended.

    With one batch the one-hot matrix is a row of ones, and its products with a (locations x genes) array are
    matrix-vector products that read the array once at memory speed; a product with two or more rows, like the
    (types + batches)-row one of :func:`_gene_gradients`, runs at the speed of a matrix product instead, several
    times longer. So here the pass writes grad · (w @ g) as a second (locations x genes) array and sums it and
    grad with such products, in place of :func:`_gene_gradients`: the likelihood and Adam of a 5,000-bin Visium HD
    minibatch 7–14 % shorter, a 200,000-bin mapping 1.5 % (bench/RESULTS.md, "Gene gradients from the pass with
    one batch"). With two batches the one-hot products take as long as the product they would replace.
    """
    value, grad_linear, grad_y, grad_alpha = dense_terms(base, x, m_g, s_eg, y_s, alpha_eg, log_alpha_eg, batch_index,
                                                         one_hot_t)
    return value, grad_linear, grad_y, grad_alpha, one_hot_t @ (grad_linear * base), one_hot_t @ grad_linear


_one_batch_pass = CompiledOrEager(one_batch_terms, "the one-batch likelihood pass")
ONE_BATCH_PASS = True  # bench/pass_step.py turns it off to time the general form on one batch


def distinct_count_terms(alpha_flat, distinct_batch_gene, x_u, n_u):
    """Σ n lgamma(x + α) over distinct (batch, gene, x) triples with multiplicities n, and n ψ(x + α) per triple."""
    log_gamma, digamma = log_gamma_and_digamma(x_u + alpha_flat.index_select(0, distinct_batch_gene))
    return (n_u * log_gamma).sum(), n_u * digamma


_count_terms = CompiledOrEager(distinct_count_terms, "the count terms")


def _weights_gradient(grad_linear: torch.Tensor, cell_state: torch.Tensor, m_g: torch.Tensor) -> torch.Tensor:
    """∂/∂w_sf = (grad · m_g) @ g.T, computed as ((g · m_g) @ grad.T).T: m_g scales the (F, G) signatures rather
    than the (S, G) gradient, and BLAS runs this orientation about twice as fast for a few types against thousands
    of genes (bench/pass_step.py)."""
    return ((cell_state * m_g) @ grad_linear.T).T


def _gene_gradients(grad_linear: torch.Tensor, w_sf: torch.Tensor, cell_state: torch.Tensor,
                    one_hot_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂/∂m_g, ∂/∂s_eg) from one product over the locations: [wᵀ; one-hotᵀ] @ grad gives Σ_s w_sf grad_sg, whose
    sum over f weighted by g_fg is ∂/∂m_g = Σ_s grad_sg (w @ g)_sg, and Σ_{s in e} grad_sg. It reads the (S, G)
    gradient once, where a column sum of grad · (w @ g) read two (S, G) arrays and the batch sums read it again."""
    n_factors = w_sf.shape[1]
    sums = torch.cat((w_sf.T, one_hot_t)) @ grad_linear
    return (sums[:n_factors] * cell_state).sum(dim=0, keepdim=True), sums[n_factors:]


def likelihood_terms(use_compile, w_sf, m_g, s_eg, y_s, alpha_eg, cell_state, counts: CountBatch):
    """(value, ∂/∂(base · m_g + s_eg), ∂/∂y_s, ∂/∂α_eg, ∂/∂m_g, ∂/∂s_eg), without the count terms (the forward's)."""
    one_hot_t = counts.batch_one_hot_t
    inputs = (w_sf @ cell_state, counts.x, m_g, s_eg, y_s, alpha_eg, torch.log(alpha_eg), counts.batch_index,
              one_hot_t)
    if ONE_BATCH_PASS and one_hot_t.shape[0] == 1:
        return _one_batch_pass(use_compile, *inputs)
    value, grad_linear, grad_y, grad_alpha = _likelihood_pass(use_compile, *inputs)
    grad_m, grad_s = _gene_gradients(grad_linear, w_sf, cell_state, one_hot_t)
    return value, grad_linear, grad_y, grad_alpha, grad_m, grad_s


class _NegBinomialLogLik(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w_sf, m_g, s_eg, y_s, alpha_eg, cell_state, counts: CountBatch, use_compile: bool | str):
        value, grad_linear, grad_y, grad_alpha, grad_m, grad_s = likelihood_terms(
            use_compile, w_sf, m_g, s_eg, y_s, alpha_eg, cell_state, counts)
        # lgamma(x + α) − lgamma(α) over distinct (batch, gene, x) triples with their multiplicities
        log_gamma_sum, digamma_terms = _count_terms(use_compile, alpha_eg.reshape(-1), counts.distinct_batch_gene,
                                                    counts.distinct_values, counts.distinct_counts)
        n_nz = counts.nonzeros_per_batch_gene.reshape(alpha_eg.shape)
        value = value + log_gamma_sum - (n_nz * torch.lgamma(alpha_eg)).sum()
        grad_alpha = grad_alpha - n_nz * torch.digamma(alpha_eg)
        grad_alpha.view(-1).index_add_(0, counts.distinct_batch_gene, digamma_terms)
        ctx.save_for_backward(_weights_gradient(grad_linear, cell_state, m_g), grad_m, grad_s, grad_y, grad_alpha)
        return value

    @staticmethod
    def backward(ctx, grad_out):
        return *(g * grad_out for g in ctx.saved_tensors), None, None, None


def neg_binomial_log_lik(w_sf: torch.Tensor, m_g: torch.Tensor, s_eg: torch.Tensor, y_s: torch.Tensor,
                         alpha_eg: torch.Tensor, cell_state: torch.Tensor, counts: CountBatch,
                         use_compile: bool | str = False) -> torch.Tensor:
    """Σ_sg log NB(x_sg | μ_sg, α_{e(s)g}) + Σ log x! (subtract counts.log_factorial for the full density)."""
    return _NegBinomialLogLik.apply(w_sf, m_g, s_eg, y_s, alpha_eg, cell_state, counts, use_compile)
