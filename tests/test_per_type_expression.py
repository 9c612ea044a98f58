"""Counts split among cell types (compute_expected_per_cell_type), streamed by chunk to one layer per type."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cell2location_nf.export import per_type_expression
from cell2location_nf.export.per_type_expression import write_per_type_expression


def test_streamed_layers_match_the_dense_formula(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    n_obs, n_genes, n_types = 57, 23, 4
    counts = sp.random(n_obs, n_genes, density=0.4, random_state=1, data_rvs=lambda k: rng.integers(1, 30, k),
                       format="csr", dtype=np.float32)
    w = rng.gamma(1.0, 1.0, (n_obs, n_types))
    g = rng.gamma(1.0, 1.0, (n_types, n_genes))
    m = rng.gamma(2.0, 0.5, (1, n_genes))
    s_eg = rng.gamma(1.0, 0.1, (2, n_genes))  # ambient RNA per batch
    batch = rng.integers(0, 2, n_obs)
    ambient = s_eg[batch]
    monkeypatch.setattr(per_type_expression, "MAX_CHUNK_VALUES", 200)  # many chunks of a few rows each
    monkeypatch.setattr(per_type_expression, "SPLIT_BLOCK", 7)  # split in blocks that end inside rows
    types = [f"type_{f}" for f in range(n_types)]
    obs = pd.DataFrame({"barcode": [f"b{i}" for i in range(n_obs)]}, index=[f"s_{i}" for i in range(n_obs)])
    path = write_per_type_expression(tmp_path / "x.h5ad", counts, w, g, m, s_eg, batch, obs,
                                     pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]), types)
    out = ad.read_h5ad(path)
    assert list(out.layers) == types and out.shape == (n_obs, n_genes)
    dense = counts.toarray()
    per_type = w[:, :, None] * g[None] * m[None]  # (S, F, G)
    total = per_type.sum(axis=1) + ambient
    for f, name in enumerate(types):
        layer = out.layers[name]
        assert sp.issparse(layer) and layer.nnz <= counts.nnz
        np.testing.assert_allclose(layer.toarray(), dense * per_type[:, f] / total, rtol=1e-5)
    summed = sum(out.layers[name].toarray() for name in types)
    np.testing.assert_allclose(summed + dense * ambient / total, dense, rtol=1e-5)  # types + ambient = counts
    assert not list(tmp_path.glob(".x.h5ad*"))  # no temporary file left behind
    with h5py.File(path, "r") as f:  # the pattern is stored once: the other layers link to the first's
        layers = f["layers"]
        for name in types[1:]:
            assert layers[name]["indices"] == layers[types[0]]["indices"]
            assert layers[name]["indptr"] == layers[types[0]]["indptr"]
            assert layers[name]["data"] != layers[types[0]]["data"]


def test_a_sample_without_counts_gives_empty_layers(tmp_path):
    counts = sp.csr_matrix((3, 4), dtype=np.float32)
    obs, var = pd.DataFrame(index=list("abc")), pd.DataFrame(index=list("wxyz"))
    path = write_per_type_expression(tmp_path / "e.h5ad", counts, np.ones((3, 2)), np.ones((2, 4)),
                                     np.ones((1, 4)), np.zeros((1, 4)), np.zeros(3, int), obs, var, ["t1", "t2"])
    out = ad.read_h5ad(path)
    assert out.shape == (3, 4) and [out.layers[t].nnz for t in ("t1", "t2")] == [0, 0]

