"""The reference gene filter keeps exactly the genes model_spec §3.1 says it keeps."""

from __future__ import annotations

import numpy as np
import pytest

from cell2location_nf.preprocessing.gene_filter import GeneFilterCutoffs, plot_gene_filter, select_genes

from .conftest import make_adata


def _column(n_cells_total: int, n_expressing: int, nonzero_value: int) -> np.ndarray:
    col = np.zeros(n_cells_total)
    col[:n_expressing] = nonzero_value
    return col


@pytest.mark.parametrize(
    ("n_expressing", "value", "kept"),
    [
        (31, 1, True),    # 31 > 1000 * 0.03 = 30 cells: widely expressed
        (30, 1, False),   # exactly 3 %: strict comparison
        (6, 2, True),     # > 5 cells and non-zero mean 2 > 1.12
        (5, 2, False),    # exactly 5 cells: strict
        (20, 1, False),   # non-zero mean 1 <= 1.12 and only 2 %
        (0, 0, False),    # never detected
    ],
)
def test_keep_rule_is_strict_and_matches_the_spec(n_expressing, value, kept):
    counts = np.column_stack([_column(1000, n_expressing, value), _column(1000, 500, 3)])
    adata = make_adata(counts, ["probe", "housekeeping"])
    keep = select_genes(adata, GeneFilterCutoffs(5, 0.03, 1.12))
    assert keep.tolist() == [kept, True]
    assert adata.var.loc["probe", "n_cells"] == n_expressing


def test_statistics_written_to_var():
    counts = np.array([[0, 4], [2, 0], [4, 0]])
    adata = make_adata(counts, ["a", "b"])
    select_genes(adata, GeneFilterCutoffs())
    assert adata.var["n_cells"].tolist() == [2, 1]
    assert adata.var["nonz_mean"].tolist() == [3.0, 4.0]


def test_random_data_agrees_with_a_direct_reading_of_the_rule():
    rng = np.random.default_rng(3)
    counts = rng.negative_binomial(1, 0.9, size=(400, 300)) * rng.integers(0, 2, size=(1, 300))
    adata = make_adata(counts, [f"g{i}" for i in range(300)])
    cutoffs = GeneFilterCutoffs(5, 0.03, 1.12)
    keep = select_genes(adata, cutoffs)
    n = (counts > 0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        nonz_mean = counts.sum(0) / n
    expected = (n > 400 * 0.03) | ((n > 5) & (nonz_mean > 1.12))
    np.testing.assert_array_equal(keep, expected)
    assert 0 < keep.sum() < 300


def test_plot_is_written(tmp_path):
    rng = np.random.default_rng(0)
    adata = make_adata(rng.poisson(0.5, size=(200, 50)), [f"g{i}" for i in range(50)])
    cutoffs = GeneFilterCutoffs()
    select_genes(adata, cutoffs)
    plot_gene_filter(adata.var, adata.n_obs, cutoffs, tmp_path / "filter.png")
    assert (tmp_path / "filter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
