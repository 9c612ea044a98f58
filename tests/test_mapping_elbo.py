"""The fused mapping −ELBO equals pyro's model/guide log-densities at the same draw."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import scipy.sparse as sp
import torch
from pyro import poutine

from cell2location_nf.inference.compile import CompiledOrEager
from cell2location_nf.models.guide import MeanFieldGuide
from cell2location_nf.models.mapping import LOCAL_SITES, MappingHyperparameters, MappingModel
from cell2location_nf.models.mapping_elbo import CountBatch, draw, negative_elbo
from cell2location_nf.models.nb_likelihood import neg_binomial_log_lik

from .objective_checks import assert_same_objective


def _problem(seed: int = 0, n_obs: int = 30, n_genes: int = 25, n_types: int = 4, n_batches: int = 2):
    rng = np.random.default_rng(seed)
    signatures = torch.as_tensor(rng.gamma(1.0, 1.0, size=(n_types, n_genes)), dtype=torch.float32)
    x = torch.as_tensor(sp.random(n_obs, n_genes, density=0.3, random_state=seed, data_rvs=lambda k: rng.integers(
        1, 20, size=k)).toarray(), dtype=torch.float32)
    batch = torch.as_tensor(rng.integers(0, n_batches, size=n_obs))  # rows grouped by batch, as the loader does
    n_cells = torch.as_tensor(rng.uniform(5, 10, size=(n_obs, 1)), dtype=torch.float32)
    model = MappingModel(n_obs, signatures, n_batches, n_cells, torch.tensor([[20.0], [200.0]])[:n_batches], 0.3,
                         MappingHyperparameters(n_groups=6))
    guide = MeanFieldGuide(model.initial_values(batch.numpy()), local_sites=LOCAL_SITES)
    with torch.no_grad():  # move away from the prior means so every term matters
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model, guide, x, batch


@pytest.mark.parametrize("subset", [None, [1, 4, 7, 8, 20]])
def test_fused_elbo_equals_pyro(subset):
    model, guide, x, batch = _problem()
    idx = torch.arange(x.shape[0]) if subset is None else torch.tensor(subset)
    torch.manual_seed(0)
    noise = {name: torch.randn_like(guide.locs[name][idx] if name in LOCAL_SITES else guide.locs[name])
             for name in guide.site_names}
    ours = negative_elbo(model, guide, CountBatch(x[idx], batch[idx], 2), batch[idx], idx, noise)
    values = {name: z for name, (z, _, _) in draw(guide, idx, noise).items()}
    args = (x[idx], batch[idx], idx)
    model_trace = poutine.trace(poutine.condition(model, data=values)).get_trace(*args)
    guide_trace = poutine.trace(poutine.condition(guide, data=values)).get_trace(*args)
    pyro_elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
    torch.testing.assert_close(ours, -pyro_elbo, rtol=2e-5, atol=1e-2)


@pytest.mark.parametrize(("subset", "n_batches"), [(None, 2), ([0, 2, 3, 11, 12, 29], 2), (None, 1),
                                                   ([0, 2, 3, 11, 12, 29], 1)])
def test_fused_gradients_match_pyro(subset, n_batches):
    """Also with one batch, where the likelihood pass returns ∂/∂m_g and ∂/∂s_eg itself (one_batch_terms)."""
    model, guide, x, batch = _problem(seed=1, n_batches=n_batches)
    idx = torch.arange(x.shape[0]) if subset is None else torch.tensor(subset)
    x, batch = x[idx], batch[idx]
    pyro.set_rng_seed(3)
    noise = {name: torch.randn_like(guide.locs[name][idx] if name in LOCAL_SITES else guide.locs[name])
             for name in guide.site_names}
    negative_elbo(model, guide, CountBatch(x, batch, n_batches), batch, idx, noise).backward()
    ours = {k: v.grad.clone() for k, v in guide.named_parameters()}
    guide.zero_grad()
    values = {name: z for name, (z, _, _) in draw(guide, idx, noise).items()}
    model_trace = poutine.trace(poutine.condition(model, data=values)).get_trace(x, batch, idx)
    guide_trace = poutine.trace(poutine.condition(guide, data=values)).get_trace(x, batch, idx)
    (-(model_trace.log_prob_sum() - guide_trace.log_prob_sum())).backward()
    for name, grad in guide.named_parameters():
        torch.testing.assert_close(ours[name], grad.grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("n_batches", [2, 1])
def test_likelihood_gradients_pass_gradcheck(n_batches):
    """The hand-written gradients of the NB likelihood node against finite differences (float64); with one batch
    ∂/∂m_g and ∂/∂s_eg come from the pass (one_batch_terms), with two from _gene_gradients."""
    rng = np.random.default_rng(2)
    n_obs, n_genes, n_types = 7, 9, 3
    x = torch.as_tensor(rng.poisson(2.0, size=(n_obs, n_genes)), dtype=torch.float64)
    batch = torch.as_tensor(rng.integers(0, n_batches, size=n_obs))
    counts = CountBatch(x, batch, n_batches)
    cell_state = torch.as_tensor(rng.gamma(1.0, 1.0, size=(n_types, n_genes)))

    def positive(*shape):
        return torch.as_tensor(rng.uniform(0.2, 2.0, size=shape)).requires_grad_()

    inputs = (positive(n_obs, n_types), positive(1, n_genes), positive(n_batches, n_genes), positive(n_obs, 1),
              positive(n_batches, n_genes))
    assert torch.autograd.gradcheck(lambda *a: neg_binomial_log_lik(*a, cell_state, counts), inputs)


def _pass_inputs(rng: np.random.Generator, n_obs: int, n_genes: int, n_batches: int):
    """Counts (a CountBatch) and the likelihood pass's m_g, s_eg, y_s and α_eg, drawn from ``rng``."""
    x = torch.as_tensor(rng.poisson(3.0, size=(n_obs, n_genes)), dtype=torch.float32)
    counts = CountBatch(x, torch.as_tensor(rng.integers(0, n_batches, size=n_obs)), n_batches)
    m_g, s_eg, y_s, alpha_eg = (torch.as_tensor(rng.uniform(0.2, 2.0, size=s), dtype=torch.float32)
                                for s in [(1, n_genes), (n_batches, n_genes), (n_obs, 1), (n_batches, n_genes)])
    return counts, m_g, s_eg, y_s, alpha_eg


def _pass_args(base, counts, m_g, s_eg, y_s, alpha_eg):
    """The arguments of ``dense_terms`` and ``one_batch_terms``."""
    return (base, counts.x, m_g, s_eg, y_s, alpha_eg, torch.log(alpha_eg), counts.batch_index, counts.batch_one_hot_t)


def test_compiled_likelihood_pass_equals_eager():
    """torch.compile fuses the dense pass; it must give the same value and gradients as eager execution."""
    from cell2location_nf.models import nb_likelihood

    rng = np.random.default_rng(4)
    n_obs, n_genes = 40, 30
    counts, *parameters = _pass_inputs(rng, n_obs, n_genes, 3)
    args = _pass_args(torch.as_tensor(rng.gamma(1.0, 1.0, (n_obs, n_genes)), dtype=torch.float32), counts, *parameters)
    kernel = CompiledOrEager(nb_likelihood.dense_terms, "the likelihood pass")
    compiled = kernel(True, *args)
    if kernel.failed:
        pytest.skip("torch.compile is not available on this machine")
    for ours, eager in zip(compiled, nb_likelihood.dense_terms(*args), strict=True):
        torch.testing.assert_close(ours, eager, rtol=1e-5, atol=1e-4)


def test_one_batch_pass_gene_gradients_equal_the_gene_product():
    """With one batch the pass's ∂/∂m_g and ∂/∂s_eg (matrix-vector products of grad · (w @ g) and grad) equal
    _gene_gradients' from one product over the locations, eagerly and compiled, and the rest is dense_terms'."""
    from cell2location_nf.models import nb_likelihood

    rng = np.random.default_rng(7)
    n_obs, n_genes, n_types = 50, 30, 5
    counts, m_g, s_eg, y_s, alpha_eg = _pass_inputs(rng, n_obs, n_genes, 1)
    w_sf = torch.as_tensor(rng.gamma(1.0, 1.0, (n_obs, n_types)), dtype=torch.float32)
    cell_state = torch.as_tensor(rng.gamma(1.0, 1.0, (n_types, n_genes)), dtype=torch.float32)
    args = _pass_args(w_sf @ cell_state, counts, m_g, s_eg, y_s, alpha_eg)
    value, grad, grad_y, grad_alpha = nb_likelihood.dense_terms(*args)
    grad_m, grad_s = nb_likelihood._gene_gradients(grad, w_sf, cell_state, counts.batch_one_hot_t)
    kernel = CompiledOrEager(nb_likelihood.one_batch_terms, "the one-batch likelihood pass")
    for use_compile in (False, True):
        ours = kernel(use_compile, *args)
        if kernel.failed:
            pytest.skip("torch.compile is not available on this machine")
        for got, expected in zip(ours, (value, grad, grad_y, grad_alpha, grad_m, grad_s), strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    dispatched = nb_likelihood.likelihood_terms(False, w_sf, m_g, s_eg, y_s, alpha_eg, cell_state, counts)
    for got, expected in zip(dispatched, nb_likelihood.one_batch_terms(*args), strict=True):
        assert torch.equal(got, expected)  # the likelihood node takes this pass with one batch


def test_compiled_negative_elbo_equals_eager():
    """The whole objective compiled (prior terms and likelihood pass) gives eager's value and gradients."""
    model, guide, x, batch = _problem(seed=5)
    idx = torch.arange(x.shape[0])
    counts = CountBatch(x, batch, 2)
    torch.manual_seed(1)
    noise = {name: torch.randn_like(guide.locs[name]) for name in guide.site_names}
    assert_same_objective(guide, lambda: negative_elbo(model, guide, counts, batch, idx, noise, use_compile=False),
                          lambda: negative_elbo(model, guide, counts, batch, idx, noise, use_compile=True),
                          value_rtol=1e-5, grad_rtol=1e-3, grad_atol=1e-3)


@pytest.mark.parametrize("use_compile", [False, True])
def test_full_batch_without_an_index_equals_every_location_gathered(use_compile):
    """idx None (the full batch, taken whole) gives the value and gradients of gathering every location by index,
    bit for bit, and draws the same noise from the same seed (so training follows the same path)."""
    model, guide, x, batch = _problem(seed=6)
    counts = CountBatch(x, batch, 2)
    results = []
    for idx in (torch.arange(x.shape[0]), None):
        torch.manual_seed(2)
        loss = negative_elbo(model, guide, counts, batch, idx, use_compile=use_compile)
        guide.zero_grad()
        loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in guide.named_parameters()}))
    (gathered, gathered_grads), (whole, whole_grads) = results
    assert torch.equal(whole, gathered)
    for name, grad in gathered_grads.items():
        assert torch.equal(whole_grads[name], grad), name


def test_full_batch_loader_yields_no_index_and_pyro_takes_it_as_every_location():
    """The full batch's step has no index; pyro's objective (which subsamples by index) reads it as every location."""
    from cell2location_nf.stages.mapping import _LocationBatches, _pyro_loss

    model, guide, x, batch = _problem(seed=8)
    loader = _LocationBatches(sp.csr_matrix(x.numpy()), batch.numpy(), 2, None, torch.device("cpu"), seed=0)
    steps = list(loader(0))
    assert len(steps) == 1
    counts, batch_index, idx = steps[0]
    assert idx is None and torch.equal(counts.x, x) and torch.equal(batch_index, batch)
    losses = []
    for rows in (None, torch.arange(x.shape[0])):
        pyro.set_rng_seed(4)
        losses.append(_pyro_loss(model, guide, counts, batch_index, rows))
    assert torch.equal(losses[0], losses[1])


def test_minibatch_counts_from_csr_rows_equal_a_scan_of_the_dense_rows():
    """A minibatch's non-zeros come from its CSR rows (no dense scan): every field of the batch is the same, bit
    for bit (Σ log x!, summed from per-location float64 values, to float32 rounding), also when the slide's CSR has
    unsorted columns and stored zeros, and the caller's matrix stays as is."""
    from cell2location_nf.stages.mapping import _LocationBatches

    rng = np.random.default_rng(3)
    dense = (rng.negative_binomial(1, 0.2, size=(300, 40)) * (rng.random((300, 40)) < 0.3)).astype(np.float32)
    sorted_csr = sp.csr_matrix(dense)
    order = np.concatenate([start + rng.permutation(end - start)  # columns out of order within each row
                            for start, end in zip(sorted_csr.indptr[:-1], sorted_csr.indptr[1:], strict=True)])
    data = sorted_csr.data[order]
    data[:2] = 0  # and two stored zeros
    slide = sp.csr_matrix((data, sorted_csr.indices[order], sorted_csr.indptr), shape=dense.shape)
    assert not slide.has_sorted_indices
    before = (slide.data.copy(), slide.indices.copy(), slide.indptr.copy())
    expected = slide.toarray()  # the dense rows the loader scanned before
    batch = rng.integers(0, 2, 300)
    loader = _LocationBatches(slide, batch, 2, 64, torch.device("cpu"), seed=0)
    idx = rng.permutation(300)[:64]
    counts, batch_index, _ = loader._step(idx)
    scanned = CountBatch(torch.as_tensor(expected[idx]), batch_index, 2)
    for name in ["x", "nonzeros_per_batch_gene", "distinct_batch_gene", "distinct_values", "distinct_counts",
                 "batch_one_hot_t"]:
        assert torch.equal(getattr(counts, name), getattr(scanned, name)), name
    torch.testing.assert_close(counts.log_factorial, scanned.log_factorial, rtol=1e-6, atol=0)
    assert counts.log_factorial.dtype == torch.float32
    for kept, now in zip(before, (slide.data, slide.indices, slide.indptr), strict=True):
        np.testing.assert_array_equal(kept, now)


def test_dynamic_compile_serves_every_minibatch_size_with_one_graph():
    """DYNAMIC compiles once for all sizes, also when the first size equals another dimension's (torch would make
    the two one symbol and compile again for the next size), and gives eager's values."""
    from torch._dynamo.utils import counters

    from cell2location_nf.inference.compile import DYNAMIC

    def row_sums(x, w):
        return (x * w).sum(dim=1)

    kernel = CompiledOrEager(row_sums, "row sums")
    graphs = counters["stats"]["unique_graphs"]
    for rows in (7, 5, 3):  # 7 rows against 7 columns first
        x, w = torch.rand(rows, 7), torch.rand(7)
        torch.testing.assert_close(kernel(DYNAMIC, x, w), row_sums(x, w))
        if kernel.failed:
            pytest.skip("torch.compile is not available on this machine")
    assert counters["stats"]["unique_graphs"] - graphs == 1


@pytest.mark.parametrize("n_batches", [2, 1])
def test_dynamic_compiled_negative_elbo_equals_eager_at_two_minibatch_sizes(n_batches):
    from cell2location_nf.inference.compile import DYNAMIC

    model, guide, x, batch = _problem(seed=6, n_batches=n_batches)
    for subset in ([0, 3, 4, 9, 12, 17, 25], [1, 2, 8, 20]):
        idx = torch.tensor(subset)
        counts = CountBatch(x[idx], batch[idx], n_batches)
        torch.manual_seed(2)
        noise = {name: torch.randn_like(guide.locs[name][idx] if name in LOCAL_SITES else guide.locs[name])
                 for name in guide.site_names}
        args = (model, guide, counts, batch[idx], idx, noise)
        assert_same_objective(guide, lambda a=args: negative_elbo(*a, use_compile=False),
                              lambda a=args: negative_elbo(*a, use_compile=DYNAMIC),
                              value_rtol=1e-5, grad_rtol=1e-3, grad_atol=1e-3)


def test_minibatch_dense_rows_reuse_one_array_and_equal_scipys_dense_rows():
    """DenseRows writes each minibatch's counts into one array (clearing the last one's non-zeros): every minibatch,
    smaller or larger than the one before, equals scipy's dense rows, and the same array is reused when it fits."""
    from cell2location_nf.stages.mapping import DenseRows

    rng = np.random.default_rng(11)
    slide = sp.random(120, 30, density=0.2, format="csr", random_state=2,
                      data_rvs=lambda k: rng.integers(1, 50, size=k)).astype(np.float32)
    dense_rows = DenseRows()
    buffers = []
    for size in (40, 40, 17, 40, 55):  # the last one is larger than the array made for the first
        idx = rng.permutation(120)[:size]
        cut = slide[idx]
        rows = torch.as_tensor(np.repeat(np.arange(size), np.diff(cut.indptr)))
        dense = dense_rows(cut.shape, rows, torch.as_tensor(cut.indices.astype(np.int64)), torch.as_tensor(cut.data))
        assert torch.equal(dense, torch.as_tensor(cut.toarray()))
        buffers.append(dense_rows.buffer.data_ptr())
    assert len(set(buffers[:4])) == 1 and buffers[4] != buffers[0]


@pytest.mark.parametrize("n_keys", [50, 100_000])  # a tally (range within 4x the keys' number), then the sort
def test_distinct_keys_with_counts_equal_torch_unique(n_keys):
    from cell2location_nf.models.nb_likelihood import distinct_with_counts

    keys = torch.as_tensor(np.random.default_rng(12).integers(0, n_keys, size=400))
    for ours, expected in zip(distinct_with_counts(keys, n_keys), torch.unique(keys, return_counts=True), strict=True):
        assert torch.equal(ours, expected)


def test_minibatches_of_an_epoch_are_equal_in_size_and_cover_every_location_once():
    """Not full minibatches and a short remainder (inductor compiles reductions over 4,096 locations or fewer apart):
    ceil(locations / batch size) minibatches within one location of each other, a new shuffle each epoch."""
    from cell2location_nf.stages.mapping import _LocationBatches

    slide = sp.random(103, 12, density=0.3, format="csr", random_state=3).astype(np.float32)
    loader = _LocationBatches(slide, np.zeros(103, dtype=np.int64), 1, 25, torch.device("cpu"), seed=0)
    epochs = [[rows.numpy() for _, _, rows in loader(epoch)] for epoch in range(2)]
    for parts in epochs:
        assert [len(p) for p in parts] == [21, 21, 21, 20, 20]
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(103))
    assert not np.array_equal(epochs[0][0], epochs[1][0])


@pytest.mark.parametrize("n_batches", [1, 3])
def test_count_batch_tallies_equal_numpy_over_batch_gene_count_triples(n_batches):
    """The distinct (batch, gene, count) triples, their multiplicities and the non-zeros per (batch, gene), with one
    batch (the column is the position) and several, against numpy over the dense rows."""
    rng = np.random.default_rng(11)
    x = rng.poisson(2.0, size=(50, 12)) * (rng.random((50, 12)) < 0.5)
    batch = rng.integers(0, n_batches, 50)
    counts = CountBatch(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(batch), n_batches)
    rows, cols = np.nonzero(x)
    triples, multiplicity = np.unique(np.stack([batch[rows] * 12 + cols, x[rows, cols]]), axis=1, return_counts=True)
    np.testing.assert_array_equal(counts.distinct_batch_gene.numpy(), triples[0])
    np.testing.assert_array_equal(counts.distinct_values.numpy(), triples[1])
    np.testing.assert_array_equal(counts.distinct_counts.numpy(), multiplicity)
    per_batch_gene = np.bincount(batch[rows] * 12 + cols, minlength=n_batches * 12)
    np.testing.assert_array_equal(counts.nonzeros_per_batch_gene.numpy(), per_batch_gene)
