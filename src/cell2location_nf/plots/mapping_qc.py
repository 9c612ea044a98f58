"""Mapping QC (model_spec §2.8): spatial maps of total counts, total abundance and detection per batch,
and abundance maps of single cell types."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import finish

ROWS = (
    ("total_counts", "total RNA counts"),
    ("total_abundance", "Total cell abundance (sum_f w_sf)"),
    ("detection_y_s", "RNA detection sensitivity (y_s)"),
)


def _spatial(adata: ad.AnnData, column: str, library: str, ax, vmax: float, title: str) -> None:
    images = adata.uns.get("spatial", {}).get(library, {}).get("images", {})
    if "hires" in images:
        import scanpy as sc  # here, not at the top: about 1.5 s of every mapping task's start, for images only

        with warnings.catch_warnings():  # scanpy points to squidpy; its spatial plot is still the reference
            warnings.simplefilter("ignore", FutureWarning)
            sc.pl.spatial(adata, color=column, library_id=library, img_key="hires", cmap="magma", size=1.3,
                          alpha_img=1.0, vmin=0, vmax=vmax, ax=ax, show=False, title=title)
    else:
        xy = np.asarray(adata.obsm["spatial"])
        points = ax.scatter(xy[:, 0], xy[:, 1], c=adata.obs[column], cmap="magma", vmin=0, vmax=vmax, s=8)
        ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.set_title(title)
        plt.colorbar(points, ax=ax)


def plot_spatial_qc_across_batches(adata: ad.AnnData, path: str | Path | None = None,
                                   batch_key: str = "sample") -> Figure | None:
    """3 rows (counts, abundance, detection) x one column per sample; colour scale shared per row."""
    samples = list(adata.obs[batch_key].cat.categories)
    fig, axes = plt.subplots(3, len(samples), figsize=(4.5 * len(samples), 12), squeeze=False)
    for row, (column, label) in enumerate(ROWS):
        vmax = float(np.quantile(adata.obs[column], 0.992))
        for col, sample in enumerate(samples):
            subset = adata[adata.obs[batch_key] == sample]
            _spatial(subset, column, sample, axes[row, col], vmax, f"{sample}\n{label}")
    fig.tight_layout()
    return finish(fig, path, dpi=100)


def plot_abundance_maps(adata: ad.AnnData, cell_types: list[str], library: str, key: str = "q05_cell_abundance_w_sf",
                        path: str | Path | None = None, ncols: int = 3) -> Figure | None:
    """One panel per cell type: its abundance (``obsm[key]``) over the tissue, on the image when there is one."""
    table = adata.obsm[key]
    columns = dict(zip(table.columns.str.replace(f"{key.split('_')[0]}cell_abundance_w_sf_", "", regex=False),
                       table.columns, strict=True))
    nrows = -(-len(cell_types) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 4.2 * nrows), squeeze=False)
    # coordinates and image only: a copy of the counts would double the memory on Visium HD
    view = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names), obsm={"spatial": np.asarray(adata.obsm["spatial"])},
                      uns={"spatial": adata.uns.get("spatial", {})})
    for ax, cell_type in zip(axes.ravel(), cell_types, strict=False):
        view.obs[cell_type] = table[columns[cell_type]].to_numpy()
        vmax = float(np.quantile(view.obs[cell_type], 0.992)) or None
        _spatial(view, cell_type, library, ax, vmax, cell_type)
    for ax in axes.ravel()[len(cell_types):]:
        ax.axis("off")
    fig.tight_layout()
    return finish(fig, path, dpi=100)
