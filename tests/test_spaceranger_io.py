"""Reading real and synthetic Space Ranger layouts: spot counts, coordinates, scale factors, images."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from cell2location_nf.errors import InputError
from cell2location_nf.io.spaceranger import (
    POSITION_COLUMNS,
    locate_spaceranger,
    read_spaceranger,
    read_spatial_h5ad,
)
from cell2location_nf.simulate.spaceranger_writer import write_matrix_folder, write_visium_hd_outs

from .conftest import SCANPY_VISIUM


def test_real_v1_fixture_matches_the_files(fixture_positions):
    adata = read_spaceranger(SCANPY_VISIUM, "lib")
    with h5py.File(SCANPY_VISIUM / "filtered_feature_bc_matrix.h5") as f:
        barcodes = [b.decode() for b in f["matrix/barcodes"][:]]
        n_genes = int(f["matrix/shape"][0])
    assert adata.n_obs == len(barcodes) == 100
    assert adata.n_vars == n_genes
    expected = fixture_positions.loc[adata.obs_names, ["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
    np.testing.assert_array_equal(adata.obsm["spatial"], expected)
    np.testing.assert_array_equal(adata.obs["array_row"], fixture_positions.loc[adata.obs_names, "array_row"])
    library = adata.uns["spatial"]["lib"]
    assert library["scalefactors"] == json.loads((SCANPY_VISIUM / "spatial/scalefactors_json.json").read_text())
    assert library["images"]["hires"].shape == (2000, 2000, 4)
    assert library["images"]["lowres"].shape == (600, 600, 3)


def test_real_v1_fixture_agrees_with_scanpy():
    ours = read_spaceranger(SCANPY_VISIUM, "lib")
    with pytest.warns(FutureWarning):
        theirs = sc.read_visium(SCANPY_VISIUM, library_id="lib")
    theirs = theirs[ours.obs_names]
    np.testing.assert_array_equal(np.asarray(ours.obsm["spatial"], float), np.asarray(theirs.obsm["spatial"], float))
    np.testing.assert_array_equal(ours.X.toarray(), theirs.X.toarray())
    for key in ("hires", "lowres"):
        np.testing.assert_array_equal(ours.uns["spatial"]["lib"]["images"][key],
                                      theirs.uns["spatial"]["lib"]["images"][key])


def test_v2_positions_and_mtx_folder_read_the_same(visium_v1, fixture_positions):
    """Space Ranger >= 2: headered tissue_positions.csv and a (gzipped or plain) matrix folder."""
    v1 = read_spaceranger(visium_v1, "lib")
    (visium_v1 / "spatial" / "tissue_positions_list.csv").unlink()
    fixture_positions.reset_index()[POSITION_COLUMNS].to_csv(visium_v1 / "spatial/tissue_positions.csv", index=False)
    for gzipped in (True, False):
        folder = visium_v1 / "filtered_feature_bc_matrix"
        shutil.rmtree(folder, ignore_errors=True)
        write_matrix_folder(folder, v1.X, list(v1.obs_names), list(v1.var["gene_ids"]), list(v1.var_names), gzipped)
        (visium_v1 / "filtered_feature_bc_matrix.h5").unlink(missing_ok=True)
        v2 = read_spaceranger(visium_v1, "lib")
        assert locate_spaceranger(visium_v1).positions.name == "tissue_positions.csv"
        np.testing.assert_array_equal(v2.obs_names, v1.obs_names)
        np.testing.assert_array_equal(v2.obsm["spatial"], v1.obsm["spatial"])
        np.testing.assert_array_equal(v2.X.toarray(), v1.X.toarray())
        assert v2.uns["spatial"]["lib"]["scalefactors"] == v1.uns["spatial"]["lib"]["scalefactors"]


def _hd_bins(rng, size_um: int, n_side: int) -> dict:
    n = n_side * n_side
    rows, cols = np.divmod(np.arange(n), n_side)
    barcodes = [f"s_{size_um:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)]
    positions = pd.DataFrame({
        "barcode": barcodes, "in_tissue": 1, "array_row": rows, "array_col": cols,
        "pxl_row_in_fullres": rows * size_um * 3.6 + 0.5, "pxl_col_in_fullres": cols * size_um * 3.6 + 0.25,
    })
    counts = sp.csr_matrix(rng.poisson(1.0, size=(n, 20)))
    scalefactors = {"bin_size_um": float(size_um), "microns_per_pixel": 0.2737, "spot_diameter_fullres": size_um * 3.6,
                    "tissue_hires_scalef": 0.1, "tissue_lowres_scalef": 0.01}
    return dict(counts=counts, barcodes=barcodes, gene_ids=[f"ENSG{i:011d}" for i in range(20)],
                gene_names=[f"G{i}" for i in range(20)], positions=positions, scalefactors=scalefactors,
                images={"hires": np.full((50, 50, 3), 0.5), "lowres": np.full((10, 10, 3), 0.5)})


def test_visium_hd_layout_reads_the_chosen_bin_size(tmp_path):
    rng = np.random.default_rng(1)
    bins = {8: _hd_bins(rng, 8, 10), 16: _hd_bins(rng, 16, 5)}
    outs = write_visium_hd_outs(tmp_path / "outs", bins)
    for size, n_side in ((8, 10), (16, 5)):
        adata = read_spaceranger(outs, "hd", hd_bin_size=size)
        expected = bins[size]["positions"].set_index("barcode").loc[adata.obs_names]
        assert adata.n_obs == n_side * n_side
        np.testing.assert_allclose(adata.obsm["spatial"], expected[["pxl_col_in_fullres", "pxl_row_in_fullres"]])
        np.testing.assert_array_equal(adata.X.toarray(), bins[size]["counts"].toarray())
        library = adata.uns["spatial"]["hd"]
        assert library["scalefactors"]["bin_size_um"] == size
        assert library["images"]["hires"].shape == (50, 50, 3)
        assert library["metadata"]["layout"] == "visium_hd"
    with pytest.raises(InputError, match=r"no bin size 2 µm.*square_008um, square_016um"):
        read_spaceranger(outs, "hd", hd_bin_size=2)


def test_folder_without_positions_is_rejected(visium_v1):
    (visium_v1 / "spatial" / "tissue_positions_list.csv").unlink()
    with pytest.raises(InputError, match=r"has no spot positions.*tissue_positions") as err:
        locate_spaceranger(visium_v1)
    assert str(visium_v1) in str(err.value)


def test_folder_without_matrix_is_rejected(visium_v1):
    (visium_v1 / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(InputError, match="has no count matrix"):
        locate_spaceranger(visium_v1)


def test_barcodes_missing_from_positions_are_rejected(visium_v1, fixture_positions):
    kept = fixture_positions.reset_index()[POSITION_COLUMNS].iloc[:10]
    kept.to_csv(visium_v1 / "spatial/tissue_positions_list.csv", header=False, index=False)
    with pytest.raises(InputError, match=r"barcodes of .* are not in .*tissue_positions_list.csv"):
        read_spaceranger(visium_v1, "lib")


def test_spatial_h5ad_needs_coordinates(tmp_path):
    adata = read_spaceranger(SCANPY_VISIUM, "lib")
    with_coords = tmp_path / "with.h5ad"
    adata.write_h5ad(with_coords)
    assert read_spatial_h5ad(with_coords, "lib").obsm["spatial"].shape == (100, 2)
    del adata.obsm["spatial"]
    adata.write_h5ad(tmp_path / "without.h5ad")
    with pytest.raises(InputError, match=r"without.h5ad' has no obsm\['spatial'\]"):
        read_spatial_h5ad(tmp_path / "without.h5ad", "lib")
