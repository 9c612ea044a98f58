"""Prepare reference and spatial inputs for the two model stages and write them as .h5ad."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..io.reference import read_reference
from ..io.spaceranger import read_spaceranger, read_spatial_h5ad
from ..io.write import atomic_write, write_h5ad
from .counts import check_raw_counts
from .gene_filter import GeneFilterCutoffs, plot_gene_filter, select_genes
from .genes import gene_ids, gene_symbols, match_genes, split_mitochondrial

log = logging.getLogger(__name__)


def _as_csr_float32(x) -> sp.csr_matrix:
    return sp.csr_matrix(x, dtype=np.float32)


def prepare_reference(
    path: str | Path,
    labels_key: str,
    batch_key: str | None,
    covariate_keys: list[str],
    layer: str | None,
    cutoffs: GeneFilterCutoffs,
    out_h5ad: str | Path,
    out_plot: str | Path,
    out_stats: str | Path | None = None,
) -> ad.AnnData:
    """Check the reference counts and columns, apply the gene filter, write the filtered reference.

    ``out_stats`` gets the per-gene filter statistics of all genes (the reference QC notebook plots them).
    """
    adata = read_reference(path, labels_key, batch_key, covariate_keys, layer)
    where = f"reference '{path}'" + (f" layer '{layer}'" if layer else " X")
    check_raw_counts(adata.X, where, hint="Pass --reference_layer if raw counts are kept in a layer.")
    adata.X = _as_csr_float32(adata.X)
    keep = select_genes(adata, cutoffs)
    atomic_write(out_plot, lambda tmp: plot_gene_filter(adata.var, adata.n_obs, cutoffs, tmp))
    if out_stats is not None:
        stats = adata.var[["n_cells", "nonz_mean"]].assign(kept=keep)
        stats.index.name = "gene"
        atomic_write(out_stats, lambda tmp: stats.to_csv(tmp))
    if not keep.any():
        raise InputError(
            f"reference '{path}': the gene filter kept no genes out of {adata.n_vars} "
            f"(cutoffs {cutoffs}). Lower --gene_filter_cell_count_cutoff or the other cut-offs."
        )
    log.info("Gene filter kept %d of %d genes (%s)", int(keep.sum()), adata.n_vars, cutoffs)
    filtered = adata[:, keep].copy()
    ids = gene_ids(filtered.var)
    if ids is not None and "gene_ids" not in filtered.var:
        filtered.var["gene_ids"] = ids
    filtered.var["SYMBOL"] = gene_symbols(filtered.var)
    for key in [labels_key, batch_key, *covariate_keys]:
        if key:
            filtered.obs[key] = filtered.obs[key].astype(str).astype("category")
    filtered.uns["cell2location_nf"] = {
        "labels_key": labels_key,
        "batch_key": batch_key or "",
        "categorical_covariate_keys": list(covariate_keys),
        "gene_filter": {
            "cell_count_cutoff": cutoffs.cell_count_cutoff,
            "cell_percentage_cutoff2": cutoffs.cell_percentage_cutoff2,
            "nonz_mean_cutoff": cutoffs.nonz_mean_cutoff,
            "n_genes_before": int(adata.n_vars),
            "n_cells": int(adata.n_obs),
        },
    }
    write_h5ad(filtered, out_h5ad)
    return filtered


def read_spatial_sample(kind: str, path: str | Path, sample: str, hd_bin_size: int) -> ad.AnnData:
    """Read one sample from a Space Ranger folder (``kind='spaceranger'``) or an h5ad."""
    if kind == "spaceranger":
        return read_spaceranger(path, sample, hd_bin_size)
    if kind == "h5ad":
        return read_spatial_h5ad(path, sample)
    raise ValueError(f"unknown spatial input kind {kind!r}")


def prepare_spatial(
    kind: str,
    path: str | Path,
    sample: str,
    reference_h5ad: str | Path,
    out_h5ad: str | Path,
    gene_match: str = "auto",
    hd_bin_size: int = 8,
    batch: str | None = None,
    n_cells_per_location: float | None = None,
) -> ad.AnnData:
    """Read a sample, check counts, set mitochondrial genes aside and keep the genes shared with the reference.

    Genes are renamed to the reference's var_names so signatures and spatial data share one index.
    """
    adata = read_spatial_sample(kind, path, sample, hd_bin_size)
    check_raw_counts(adata.X, f"spatial sample '{sample}' ('{path}')")
    adata.X = _as_csr_float32(adata.X)
    if adata.n_obs == 0:
        raise InputError(f"spatial sample '{sample}' ('{path}') has no locations.")
    adata = split_mitochondrial(adata)
    header = ad.read_h5ad(reference_h5ad, backed="r")
    reference_var = header.var.copy()
    header.file.close()
    match = match_genes(reference_var, adata.var, gene_match, str(reference_h5ad), str(path))
    symbols = gene_symbols(adata.var)[match.spatial_index]
    ids = gene_ids(adata.var)
    prepared = adata[:, match.spatial_index].copy()
    prepared.var_names = match.reference_names
    prepared.var["SYMBOL"] = symbols
    if ids is not None:
        prepared.var["gene_ids"] = ids[match.spatial_index]
    prepared.obs["sample"] = sample
    prepared.obs["batch"] = batch or sample
    prepared.uns["cell2location_nf"] = {
        "sample": sample,
        "batch": batch or sample,
        "gene_match": match.key,
        "n_genes_before_matching": int(adata.n_vars),
        "n_cells_per_location": float(n_cells_per_location) if n_cells_per_location else -1.0,
    }
    log.info("Sample '%s': %d locations x %d shared genes", sample, prepared.n_obs, prepared.n_vars)
    write_h5ad(prepared, out_h5ad)
    return prepared
