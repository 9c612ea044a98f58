"""Gene matching, mitochondrial genes and raw-count checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.special import gammaln

from cell2location_nf.errors import InputError
from cell2location_nf.preprocessing.counts import canonical_csr, check_raw_counts, row_log_factorials
from cell2location_nf.preprocessing.genes import match_genes, split_mitochondrial

from .conftest import make_adata


def _var(names, ids=None):
    var = pd.DataFrame(index=names)
    if ids is not None:
        var["gene_ids"] = ids
    return var


def test_match_by_ensembl_when_both_sides_have_ids():
    ref = _var(["ACTB", "CD3E", "GAPDH"], ["ENSG00000075624", "ENSG00000198851", "ENSG00000111640"])
    # the spatial symbol for CD3E differs, its ID (with a version suffix) does not
    spatial = _var(["GAPDH", "CD3e_alias", "XIST"], ["ENSG00000111640.15", "ENSG00000198851.2", "ENSG00000229807"])
    match = match_genes(ref, spatial, "auto", "ref.h5ad", "outs")
    assert match.key == "ensembl"
    assert dict(zip(match.reference_names, match.spatial_index, strict=True)) == {"GAPDH": 0, "CD3E": 1}


def test_match_by_symbol_when_one_side_lacks_ids():
    ref = _var(["ACTB", "CD3E", "GAPDH"])
    spatial = _var(["GAPDH", "CD3E", "XIST"], ["ENSG00000111640", "ENSG00000198851", "ENSG00000229807"])
    match = match_genes(ref, spatial, "auto", "ref.h5ad", "outs")
    assert match.key == "symbol"
    assert sorted(match.reference_names) == ["CD3E", "GAPDH"]
    with pytest.raises(InputError, match="'ref.h5ad' has no Ensembl gene IDs"):
        match_genes(ref, spatial, "ensembl", "ref.h5ad", "outs")


def test_reference_indexed_by_ids_matches_spatial_symbols_through_symbol_column():
    ref = _var(["ENSG00000075624", "ENSG00000111640"])
    ref["SYMBOL"] = ["ACTB", "GAPDH"]
    spatial = _var(["GAPDH", "ACTB"])
    match = match_genes(ref, spatial, "symbol", "ref.h5ad", "outs")
    assert dict(zip(match.reference_names, match.spatial_index, strict=True)) == {
        "ENSG00000111640": 0, "ENSG00000075624": 1}


def test_no_shared_genes_names_both_files():
    with pytest.raises(InputError, match=r"No genes are shared between reference 'ref.h5ad'.*'mouse/outs'"):
        match_genes(_var(["ACTB", "GAPDH"]), _var(["Actb", "Gapdh"]), "auto", "ref.h5ad", "mouse/outs")


def test_mitochondrial_genes_move_to_obsm():
    counts = np.array([[1, 5, 2], [0, 7, 3]])
    adata = make_adata(counts, ["ACTB", "MT-CO1", "mt-Nd1"])
    kept = split_mitochondrial(adata)
    assert list(kept.var_names) == ["ACTB"]
    assert list(kept.obsm["MT"].columns) == ["MT-CO1", "mt-Nd1"]
    np.testing.assert_array_equal(kept.obsm["MT"].to_numpy(), [[5, 2], [7, 3]])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, np.nan], "NaN or infinite"),
        ([1.0, -2.0], "negative"),
        ([1.0, 0.5], "not integers"),
    ],
)
@pytest.mark.parametrize("sparse", [True, False])
def test_bad_counts_are_rejected_with_the_source_named(values, message, sparse):
    x = np.array([values])
    with pytest.raises(InputError, match=rf"^reference 'ref.h5ad' X: .*{message}.*raw integer UMI counts"):
        check_raw_counts(sp.csr_matrix(x) if sparse else x, "reference 'ref.h5ad' X")


def test_integer_valued_floats_are_raw_counts():
    check_raw_counts(sp.csr_matrix(np.array([[0.0, 3.0], [12.0, 0.0]], dtype=np.float32)), "x")


def test_canonical_csr_sums_duplicates_sorts_and_drops_zeros_without_touching_the_input():
    # row 0: column 2 twice (1 + 2), then column 0; row 1: a stored zero at column 1, then column 3
    x = sp.csr_matrix((np.array([1, 2, 4, 0, 5], dtype=np.float32), np.array([2, 2, 0, 1, 3]),
                       np.array([0, 3, 5])), shape=(2, 4))
    before = (x.data.copy(), x.indices.copy(), x.indptr.copy())
    csr = canonical_csr(x)
    np.testing.assert_array_equal(csr.indptr, [0, 2, 3])
    np.testing.assert_array_equal(csr.indices, [0, 2, 3])
    np.testing.assert_array_equal(csr.data, [4, 3, 5])
    np.testing.assert_array_equal(csr.toarray(), x.toarray())
    for kept, now in zip(before, (x.data, x.indices, x.indptr), strict=True):
        np.testing.assert_array_equal(kept, now)
    already = canonical_csr(csr)
    assert np.shares_memory(already.data, csr.data)  # canonical float32 input: no copy


def test_row_log_factorials_match_log_gamma_of_the_dense_rows_across_chunks_and_empty_rows():
    rng = np.random.default_rng(7)
    dense = rng.poisson(3.0, size=(23, 9)) * (rng.random((23, 9)) < 0.4)
    dense[[0, 5, 6, 22]] = 0  # empty rows, also at a chunk's start and the matrix's end
    expected = gammaln(dense.astype(np.float64) + 1).sum(axis=1)
    for rows_per_chunk in (1, 4, 5, 100):
        np.testing.assert_allclose(row_log_factorials(canonical_csr(dense), rows_per_chunk), expected, rtol=1e-12)
