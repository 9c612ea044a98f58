"""Read 10x Visium and Visium HD Space Ranger outputs into AnnData, keeping images like scanpy does.

Layout (``outs/``)::

    filtered_feature_bc_matrix.h5            or  filtered_feature_bc_matrix/ (mtx, gzipped or not)
    spatial/tissue_positions_list.csv        (Space Ranger 1.x, no header)
      or spatial/tissue_positions.csv        (Space Ranger >= 2.0, header)
    spatial/scalefactors_json.json
    spatial/tissue_hires_image.png, tissue_lowres_image.png

Visium HD: ``outs/binned_outputs/square_008um/`` (or that folder itself), with
``spatial/tissue_positions.parquet``. ``adata.uns['spatial'][library_id]`` holds ``images`` and
``scalefactors`` so scanpy/squidpy plotting works on our outputs.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from matplotlib.image import imread

from ..errors import InputError
from .tenx_h5 import read_10x_h5_features

log = logging.getLogger(__name__)

POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
POSITION_FILES = ("tissue_positions.parquet", "tissue_positions.csv", "tissue_positions_list.csv")
MATRIX_NAMES = ("filtered_feature_bc_matrix.h5", "filtered_feature_bc_matrix")
IMAGE_KEYS = {"hires": "tissue_hires_image.png", "lowres": "tissue_lowres_image.png"}


@dataclass
class SpaceRangerLayout:
    """Where each part of one Space Ranger output lives."""

    root: Path
    kind: str  # "visium" or "visium_hd"
    matrix: Path
    positions: Path
    scalefactors: Path | None
    images: dict[str, Path] = field(default_factory=dict)


def hd_bin_folder(bin_size_um: int) -> str:
    """Folder name of one Visium HD bin size, e.g. 8 -> ``square_008um``."""
    return f"square_{int(bin_size_um):03d}um"


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).exists():
            return folder / name
    return None


def locate_spaceranger(path: str | Path, hd_bin_size: int = 8) -> SpaceRangerLayout:
    """Find matrix, positions, scale factors and images under a Space Ranger folder.

    Raises :class:`InputError` naming the folder and the missing file when the layout is incomplete.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"Space Ranger folder '{root}' does not exist or is not a directory.")
    folder, kind = root, "visium"
    binned = root / "binned_outputs"
    if binned.is_dir():
        folder = binned / hd_bin_folder(hd_bin_size)
        if not folder.is_dir():
            available = sorted(p.name for p in binned.iterdir() if p.is_dir())
            raise InputError(
                f"Visium HD folder '{root}' has no bin size {hd_bin_size} µm ('{folder.name}'); "
                f"available: {', '.join(available) or 'none'}. Set --hd_bin_size (or the samplesheet "
                "column hd_bin_size) to one of them."
            )
        kind = "visium_hd"
    elif (root / "spatial" / "tissue_positions.parquet").exists():
        kind = "visium_hd"
    matrix = _first_existing(folder, MATRIX_NAMES)
    if matrix is None:
        raise InputError(
            f"Space Ranger folder '{folder}' has no count matrix: expected "
            "'filtered_feature_bc_matrix.h5' or a 'filtered_feature_bc_matrix/' folder. "
            "Point the samplesheet at the Space Ranger 'outs/' folder."
        )
    spatial_dirs = [folder / "spatial", root / "spatial"]
    positions = next((p for d in spatial_dirs if (p := _first_existing(d, POSITION_FILES))), None)
    if positions is None:
        raise InputError(
            f"Space Ranger folder '{folder}' has no spot positions: expected 'spatial/"
            f"{' or spatial/'.join(POSITION_FILES)}'. Copy the whole Space Ranger 'outs/' folder, "
            "including 'spatial/'."
        )
    scalefactors = next(
        (d / "scalefactors_json.json" for d in spatial_dirs if (d / "scalefactors_json.json").exists()), None
    )
    images = {}
    for key, name in IMAGE_KEYS.items():
        found = next((d / name for d in spatial_dirs if (d / name).exists()), None)
        if found is not None:
            images[key] = found
    return SpaceRangerLayout(root, kind, matrix, positions, scalefactors, images)


def read_positions(path: str | Path) -> pd.DataFrame:
    """Read spot/bin positions in any Space Ranger format, indexed by barcode."""
    path = Path(path)
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    elif path.name == "tissue_positions_list.csv":
        table = pd.read_csv(path, header=None, names=POSITION_COLUMNS)
    else:
        table = pd.read_csv(path)
    missing = [c for c in POSITION_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"Positions file '{path}' lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(POSITION_COLUMNS)}."
        )
    table["barcode"] = table["barcode"].astype(str)
    return table.set_index("barcode")


def _read_table(folder: Path, stem: str) -> pd.DataFrame | None:
    for name in (f"{stem}.tsv.gz", f"{stem}.tsv"):
        if (folder / name).exists():
            return pd.read_csv(folder / name, sep="\t", header=None, dtype=str)
    return None


def _mtx_features(folder: Path) -> pd.DataFrame:
    features = _read_table(folder, "features")
    if features is None:
        features = _read_table(folder, "genes")  # Cell Ranger 2 naming
    if features is None:
        raise InputError(f"Matrix folder '{folder}' has no features.tsv(.gz) or genes.tsv(.gz).")
    features = features.rename(columns={0: "gene_ids", 1: "symbol", 2: "feature_types"})
    if "feature_types" not in features:
        features["feature_types"] = "Gene Expression"
    return features


def read_mtx_folder(folder: str | Path) -> ad.AnnData:
    """Read a 10x matrix folder (matrix.mtx, features/genes.tsv, barcodes.tsv; gzipped or not)."""
    folder = Path(folder)
    mtx = _first_existing(folder, ("matrix.mtx.gz", "matrix.mtx"))
    barcodes = _read_table(folder, "barcodes")
    if mtx is None or barcodes is None:
        raise InputError(f"Matrix folder '{folder}' needs matrix.mtx(.gz) and barcodes.tsv(.gz).")
    opener = gzip.open if mtx.suffix == ".gz" else open
    with opener(mtx, "rb") as handle:
        counts = sp.csr_matrix(scipy.io.mmread(handle).T)
    features = _mtx_features(folder)
    adata = ad.AnnData(X=counts, obs=pd.DataFrame(index=barcodes[0].to_numpy()))
    adata.var_names = features["symbol"].to_numpy()
    adata.var["gene_ids"] = features["gene_ids"].to_numpy()
    adata.var["feature_types"] = features["feature_types"].to_numpy()
    adata = adata[:, adata.var["feature_types"] == "Gene Expression"].copy()
    adata.var_names_make_unique()
    return adata


def read_matrix(matrix: Path) -> ad.AnnData:
    """Read the Gene Expression part of a 10x count matrix (HDF5 file or mtx folder)."""
    if matrix.is_dir():
        return read_mtx_folder(matrix)
    import scanpy as sc  # here: about 1.5 s of import that .h5ad inputs never need

    adata = sc.read_10x_h5(matrix)
    adata.var_names_make_unique()
    return adata


def read_spaceranger_genes(layout: SpaceRangerLayout) -> pd.DataFrame:
    """Gene symbols and ids of a Space Ranger output, read without the counts (for validation)."""
    if layout.matrix.is_dir():
        features = _mtx_features(layout.matrix)
        features = features[features["feature_types"] == "Gene Expression"]
        return pd.DataFrame({"gene_ids": features["gene_ids"].to_numpy()}, index=features["symbol"].to_numpy())
    ids, names = read_10x_h5_features(layout.matrix)
    return pd.DataFrame({"gene_ids": ids}, index=names)


def read_spaceranger(path: str | Path, library_id: str, hd_bin_size: int = 8) -> ad.AnnData:
    """Read one Space Ranger output: counts, positions in ``obsm['spatial']`` and ``uns['spatial']``."""
    layout = locate_spaceranger(path, hd_bin_size)
    adata = read_matrix(layout.matrix)
    positions = read_positions(layout.positions)
    missing = adata.obs_names.difference(positions.index)
    if len(missing):
        raise InputError(
            f"{len(missing)} of {adata.n_obs} barcodes of '{layout.matrix}' are not in '{layout.positions}' "
            f"(first: '{missing[0]}'). The matrix and the positions come from different runs."
        )
    positions = positions.loc[adata.obs_names]
    for column in ("in_tissue", "array_row", "array_col"):
        adata.obs[column] = positions[column].to_numpy()
    # scanpy's convention: obsm['spatial'] is (x, y) = (column, row) in full-resolution pixels.
    adata.obsm["spatial"] = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
    scalefactors = json.loads(layout.scalefactors.read_text()) if layout.scalefactors else {}
    images = {key: imread(str(file)) for key, file in layout.images.items()}
    if not images:
        log.warning("No tissue images found under '%s'; spatial plots will show spots only.", layout.root)
    adata.uns["spatial"] = {
        library_id: {
            "images": images,
            "scalefactors": scalefactors,
            "metadata": {"source_image_path": str(layout.root), "layout": layout.kind},
        }
    }
    log.info(
        "Read %s '%s': %d locations x %d genes (%s, %s)",
        layout.kind, layout.root, adata.n_obs, adata.n_vars, layout.matrix.name, layout.positions.name,
    )
    return adata


def read_spatial_h5ad(path: str | Path, library_id: str) -> ad.AnnData:
    """Read a spatial ``.h5ad``; it must carry coordinates in ``obsm['spatial']``."""
    path = Path(path)
    adata = ad.read_h5ad(path)
    if "spatial" not in adata.obsm:
        raise InputError(
            f"Spatial h5ad '{path}' has no obsm['spatial'] coordinates "
            f"(obsm keys: {', '.join(adata.obsm.keys()) or 'none'}). Store spot coordinates there."
        )
    coords = np.asarray(adata.obsm["spatial"])
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise InputError(f"Spatial h5ad '{path}': obsm['spatial'] must be locations x 2, got {coords.shape}.")
    spatial = adata.uns.get("spatial", {})
    if library_id not in spatial:
        first = next(iter(spatial.values()), {"images": {}, "scalefactors": {}, "metadata": {}})
        adata.uns["spatial"] = {library_id: first}
    return adata
