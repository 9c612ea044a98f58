"""The cell2location reference gene filter (model_spec §3.1) and its QC plot.

A gene is kept when it is detected in more than ``cell_percentage_cutoff2`` of all cells, or in more
than ``cell_count_cutoff`` cells with a mean non-zero count above ``nonz_mean_cutoff``. Comparisons are
strict and made on log10 values, exactly as upstream, so the same genes survive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..plots import finish  # noqa: E402


@dataclass(frozen=True)
class GeneFilterCutoffs:
    """The three cut-offs; defaults are the tutorial's values (the pipeline's defaults)."""

    cell_count_cutoff: float = 5
    cell_percentage_cutoff2: float = 0.03
    nonz_mean_cutoff: float = 1.12


def gene_statistics(adata: ad.AnnData) -> None:
    """Write ``var['n_cells']`` (cells with count > 0) and ``var['nonz_mean']`` (mean of non-zero counts)."""
    n_cells = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    totals = np.asarray(adata.X.sum(axis=0)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        adata.var["n_cells"] = n_cells
        adata.var["nonz_mean"] = totals / n_cells


def select_genes(adata: ad.AnnData, cutoffs: GeneFilterCutoffs) -> np.ndarray:
    """Boolean mask of genes to keep; fills the per-gene statistics in ``adata.var`` first."""
    gene_statistics(adata)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_cells = np.log10(adata.var["n_cells"].to_numpy(dtype=float))
        log_nonz = np.log10(adata.var["nonz_mean"].to_numpy(dtype=float))
        widely_expressed = log_cells > np.log10(adata.n_obs * cutoffs.cell_percentage_cutoff2)
        specific_but_high = (log_cells > np.log10(cutoffs.cell_count_cutoff)) & (
            log_nonz > np.log10(cutoffs.nonz_mean_cutoff)
        )
    return widely_expressed | specific_but_high


def plot_gene_filter(stats: pd.DataFrame, n_obs: int, cutoffs: GeneFilterCutoffs,
                     path: str | Path | None = None) -> Figure | None:
    """2-D histogram of log10 non-zero mean vs log10 detecting cells, excluded region shaded orange.

    ``stats`` holds ``n_cells`` and ``nonz_mean`` per gene (:func:`gene_statistics`) of ``n_obs`` cells.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log10(stats["nonz_mean"].to_numpy(dtype=float))
        y = np.log10(stats["n_cells"].to_numpy(dtype=float))
    finite = np.isfinite(x) & np.isfinite(y)
    y_min, y_max = 1.0, 4.5
    count_cut = np.log10(cutoffs.cell_count_cutoff)
    percent_cut = np.log10(n_obs * cutoffs.cell_percentage_cutoff2)
    nonz_cut = np.log10(cutoffs.nonz_mean_cutoff)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.hist2d(x[finite], y[finite], bins=100, norm=LogNorm(), range=[[0, 0.5], [y_min, y_max]])

    def frac(v: float) -> float:  # axvspan takes y limits as fractions of the axis
        return float(np.clip((v - y_min) / (y_max - y_min), 0, 1))

    ax.axvspan(0, nonz_cut, ymin=0, ymax=frac(percent_cut), color="darkorange", alpha=0.3)
    ax.axvspan(nonz_cut, 0.5, ymin=0, ymax=frac(count_cut), color="darkorange", alpha=0.3)
    ax.hlines(percent_cut, 0, nonz_cut, color="darkorange")
    ax.hlines(count_cut, nonz_cut, 0.5, color="darkorange")
    ax.vlines(nonz_cut, count_cut, percent_cut, color="darkorange")
    ax.set_xlim(0, 0.5)
    ax.set_ylim(y_min, y_max)
    ax.set_xlabel("Mean non-zero expression level of gene (log)")
    ax.set_ylabel("Number of cells expressing gene (log)")
    ax.set_title(f"Gene filter: {n_obs} cells x {len(stats)} genes")
    fig.tight_layout()
    return finish(fig, path, dpi=120)
