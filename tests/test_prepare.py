"""Preparing the reference and spatial samples: outputs, and errors that leave no file behind."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cell2location_nf.errors import InputError
from cell2location_nf.preprocessing.gene_filter import GeneFilterCutoffs, select_genes
from cell2location_nf.preprocessing.prepare import prepare_reference, prepare_spatial
from cell2location_nf.simulate.test_data import SyntheticDataConfig, make_test_data


@pytest.fixture(scope="module")
def prepared(test_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    ref = prepare_reference(test_data / "reference.h5ad", "cell_type", "batch", ["chemistry"], None,
                            GeneFilterCutoffs(), out / "reference.h5ad", out / "filter.png")
    return out, ref


def test_reference_keeps_exactly_the_filtered_genes(test_data, prepared):
    out, ref = prepared
    raw = ad.read_h5ad(test_data / "reference.h5ad")
    expected = raw.var_names[select_genes(raw, GeneFilterCutoffs())]
    assert list(ref.var_names) == list(expected)
    assert 0 < ref.n_vars < raw.n_vars
    written = ad.read_h5ad(out / "reference.h5ad")
    assert written.obs["cell_type"].dtype == "category"
    assert {"n_cells", "nonz_mean", "gene_ids", "SYMBOL"} <= set(written.var.columns)
    assert (out / "filter.png").stat().st_size > 0


def test_spatial_sample_is_prepared_against_the_reference(test_data, prepared, tmp_path):
    out, ref = prepared
    for sample in ("sample_1", "sample_2"):
        adata = prepare_spatial("spaceranger", test_data / sample / "outs", sample, out / "reference.h5ad",
                                tmp_path / f"{sample}.h5ad", batch=sample, n_cells_per_location=9)
        written = ad.read_h5ad(tmp_path / f"{sample}.h5ad")
        assert set(written.var_names) <= set(ref.var_names)
        assert not any(s.upper().startswith("MT-") for s in written.var["SYMBOL"])
        assert list(written.obsm["MT"].columns) == ["MT-CO1", "MT-CO2", "MT-ND1", "MT-ATP6", "MT-CYB"]
        assert written.uns["cell2location_nf"]["gene_match"] == "ensembl"
        assert written.uns["spatial"][sample]["images"]["hires"].shape[:2] == (400, 400)
        assert (written.obs["sample"] == sample).all() and written.n_obs == adata.n_obs == 144
        truth = pd.read_csv(test_data / "truth" / f"{sample}_cell_abundance.csv", index_col=0)
        assert set(truth.index) == set(written.obs_names)


def test_non_integer_reference_counts_fail_and_write_nothing(test_data, tmp_path):
    adata = ad.read_h5ad(test_data / "reference.h5ad")
    adata.X = adata.X * 0.5
    adata.write_h5ad(tmp_path / "normalised.h5ad")
    with pytest.raises(InputError, match=r"normalised.h5ad' X: .* not integers.*--reference_layer"):
        prepare_reference(tmp_path / "normalised.h5ad", "cell_type", None, [], None, GeneFilterCutoffs(),
                          tmp_path / "out.h5ad", tmp_path / "out.png")
    assert not (tmp_path / "out.h5ad").exists() and not (tmp_path / "out.png").exists()
    assert not list(tmp_path.glob(".out*"))  # no temporary file left either


def test_raw_counts_can_come_from_a_layer(test_data, tmp_path):
    adata = ad.read_h5ad(test_data / "reference.h5ad")
    adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X * 0.5
    adata.write_h5ad(tmp_path / "layered.h5ad")
    ref = prepare_reference(tmp_path / "layered.h5ad", "cell_type", None, [], "counts", GeneFilterCutoffs(),
                            tmp_path / "out.h5ad", tmp_path / "out.png")
    assert np.allclose(ref.X.data, np.round(ref.X.data))


def test_missing_label_column_is_rejected(test_data, tmp_path):
    with pytest.raises(InputError, match="obs column 'celltype' \\(from --labels_key\\) does not exist"):
        prepare_reference(test_data / "reference.h5ad", "celltype", None, [], None, GeneFilterCutoffs(),
                          tmp_path / "out.h5ad", tmp_path / "out.png")


def test_negative_spatial_counts_are_rejected(test_data, prepared, tmp_path):
    out, _ = prepared
    from cell2location_nf.io.spaceranger import read_spaceranger

    adata = read_spaceranger(test_data / "sample_1" / "outs", "s")
    adata.X = adata.X.toarray() - 1
    adata.write_h5ad(tmp_path / "neg.h5ad")
    with pytest.raises(InputError, match=r"spatial sample 's' .*neg.h5ad.*negative"):
        prepare_spatial("h5ad", tmp_path / "neg.h5ad", "s", out / "reference.h5ad", tmp_path / "s.h5ad")
    assert not (tmp_path / "s.h5ad").exists()


def test_generator_is_deterministic(tmp_path):
    config = SyntheticDataConfig(n_genes=60, n_cells=200, grid=(4, 4))
    a, b = make_test_data(tmp_path / "a", config), make_test_data(tmp_path / "b", config)
    ra, rb = ad.read_h5ad(a / "reference.h5ad"), ad.read_h5ad(b / "reference.h5ad")
    np.testing.assert_array_equal(ra.X.toarray(), rb.X.toarray())
    for name in ("cell_type_profiles.csv", "sample_1_cell_abundance.csv", "sample_2_cell_abundance.csv"):
        assert (a / "truth" / name).read_text() == (b / "truth" / name).read_text()
    other = make_test_data(tmp_path / "c", SyntheticDataConfig(n_genes=60, n_cells=200, grid=(4, 4), seed=1))
    assert not np.array_equal(ad.read_h5ad(other / "reference.h5ad").X.toarray(), ra.X.toarray())
