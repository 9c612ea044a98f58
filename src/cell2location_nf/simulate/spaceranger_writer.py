"""Write count matrices in real Space Ranger folder layouts (Visium v1/v2 positions, mtx, Visium HD)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from PIL import Image

from ..io.spaceranger import POSITION_COLUMNS, hd_bin_folder
from ..io.tenx_h5 import write_10x_h5


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Save an (h, w, 3) float image in [0, 1] as an 8-bit PNG."""
    Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(path)


def write_matrix_folder(folder: Path, counts: sp.spmatrix, barcodes, gene_ids, gene_names, gzipped: bool) -> None:
    """Write a 10x ``filtered_feature_bc_matrix/`` folder (Matrix Market, features x barcodes)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gzipped else ""
    opener = gzip.open if gzipped else open
    with opener(folder / f"matrix.mtx{suffix}", "wb") as handle:
        scipy.io.mmwrite(handle, sp.coo_matrix(counts.T, dtype=np.int64), field="integer")
    features = pd.DataFrame({"id": gene_ids, "name": gene_names, "type": "Gene Expression"})
    features.to_csv(folder / f"features.tsv{suffix}", sep="\t", header=False, index=False)
    pd.Series(barcodes).to_csv(folder / f"barcodes.tsv{suffix}", sep="\t", header=False, index=False)


def write_spaceranger_outs(
    outs: Path,
    counts: sp.spmatrix,
    barcodes: list[str],
    gene_ids: list[str],
    gene_names: list[str],
    positions: pd.DataFrame,
    scalefactors: dict,
    images: dict[str, np.ndarray],
    positions_format: str = "v1",
    matrix_format: str = "h5",
) -> Path:
    """Write one Space Ranger ``outs/`` folder.

    ``positions`` has the columns of :data:`POSITION_COLUMNS` (all spots, in and out of tissue);
    ``positions_format`` is ``v1`` (tissue_positions_list.csv, no header), ``v2`` (tissue_positions.csv)
    or ``parquet``; ``matrix_format`` is ``h5``, ``mtx`` or ``mtx.gz``.
    """
    spatial = outs / "spatial"
    spatial.mkdir(parents=True, exist_ok=True)
    if matrix_format == "h5":
        write_10x_h5(outs / "filtered_feature_bc_matrix.h5", counts, barcodes, gene_ids, gene_names)
    else:
        write_matrix_folder(
            outs / "filtered_feature_bc_matrix", counts, barcodes, gene_ids, gene_names, matrix_format == "mtx.gz"
        )
    table = positions[POSITION_COLUMNS]
    if positions_format == "v1":
        table.to_csv(spatial / "tissue_positions_list.csv", header=False, index=False)
    elif positions_format == "v2":
        table.to_csv(spatial / "tissue_positions.csv", index=False)
    else:
        table.to_parquet(spatial / "tissue_positions.parquet", index=False)
    (spatial / "scalefactors_json.json").write_text(json.dumps(scalefactors, indent=4))
    for key, rgb in images.items():
        write_image(spatial / f"tissue_{key}_image.png", rgb)
    return outs


def write_visium_hd_outs(outs: Path, bins: dict[int, dict]) -> Path:
    """Write a Visium HD ``outs/`` with ``binned_outputs/square_NNNum/`` per bin size.

    ``bins`` maps bin size (µm) to the keyword arguments of :func:`write_spaceranger_outs`.
    """
    for size, kwargs in bins.items():
        write_spaceranger_outs(
            outs / "binned_outputs" / hd_bin_folder(size), positions_format="parquet", **kwargs
        )
    return outs
