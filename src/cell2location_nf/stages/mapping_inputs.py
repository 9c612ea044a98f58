"""Assemble the joint mapping input: samples concatenated, genes aligned with the signatures, checks."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import InputError
from ..preprocessing.counts import canonical_csr

log = logging.getLogger(__name__)


def check_signatures(signatures: pd.DataFrame, source: str) -> None:
    """Signatures must be finite and non-negative (NaN gives upstream's 'Gamma(10, rate nan)' failure)."""
    values = signatures.to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        types = signatures.columns[bad.any(axis=0)].tolist()
        genes = signatures.index[bad.any(axis=1)].tolist()
        raise InputError(
            f"signatures '{source}': {int(bad.sum())} value(s) are NaN or infinite, in cell type(s) "
            f"{', '.join(map(str, types[:5]))} and gene(s) {', '.join(map(str, genes[:5]))}. "
            "Re-run the reference model or remove those genes; cell2location cannot use NaN signatures."
        )
    if (values < 0).any():
        raise InputError(f"signatures '{source}': negative expression values; signatures must be >= 0.")
    empty = signatures.columns[values.sum(axis=0) <= 0].tolist()
    if empty:
        raise InputError(f"signatures '{source}': cell type(s) {', '.join(map(str, empty))} have no expression.")


def check_aligned(adata: ad.AnnData, signatures: pd.DataFrame, source: str) -> None:
    """Upstream's rule: the signature index must be exactly ``adata.var_names`` in the same order."""
    if list(signatures.index) != list(adata.var_names):
        shared = len(set(signatures.index) & set(adata.var_names))
        raise InputError(
            f"signatures '{source}' have genes that do not match the spatial genes ({len(signatures)} signature "
            f"genes, {adata.n_vars} spatial genes, {shared} shared, or a different order); intersect genes first "
            "(the map-spatial command does this)."
        )


def combine_samples(adatas: list[ad.AnnData], default_n_cells: float) -> ad.AnnData:
    """Concatenate prepared samples on their shared genes; location ids become '<sample>_<barcode>'."""
    parts = []
    for adata in adatas:
        info = dict(adata.uns.get("cell2location_nf", {}))
        sample = str(info.get("sample") or adata.obs["sample"].iloc[0])
        part = adata.copy()
        part.obs["barcode"] = part.obs_names.astype(str)
        part.obs_names = [f"{sample}_{b}" for b in part.obs["barcode"]]
        part.obs["sample"] = sample
        part.obs["batch"] = str(info.get("batch") or part.obs.get("batch", pd.Series([sample])).iloc[0])
        n_cells = float(info.get("n_cells_per_location", -1))
        part.obs["n_cells_per_location"] = n_cells if n_cells > 0 else float(default_n_cells)
        parts.append(part)
    combined = ad.concat(parts, join="inner", merge="same")
    combined.uns["spatial"] = {k: v for p in parts for k, v in p.uns.get("spatial", {}).items()}
    for column in ("sample", "batch"):
        order = list(dict.fromkeys(combined.obs[column]))  # first-seen order: samples as given
        combined.obs[column] = pd.Categorical(combined.obs[column], categories=order)
    return combined


def drop_empty_locations(adata: ad.AnnData) -> ad.AnnData:
    """Remove locations with no counts (warning); a sample left without locations is an error."""
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    empty = totals <= 0
    if not empty.any():
        return adata
    counts = adata.obs.loc[empty, "sample"].value_counts()
    for sample, n in counts.items():
        if n:
            log.warning("Sample '%s': dropping %d location(s) with zero total counts", sample, n)
    kept = adata[~empty].copy()
    remaining = kept.obs["sample"].value_counts()
    lost = [s for s in adata.obs["sample"].cat.categories if remaining.get(s, 0) == 0]
    if lost:
        raise InputError(f"sample(s) {', '.join(lost)}: every location has zero counts after gene matching; "
                         "check that the sample and the reference share expressed genes.")
    kept.obs["sample"] = kept.obs["sample"].cat.remove_unused_categories()
    return kept


def align_genes(adata: ad.AnnData, signatures: pd.DataFrame, source: str) -> tuple[ad.AnnData, pd.DataFrame]:
    """Keep the genes present in both, in the spatial order; error when none are shared."""
    shared = adata.var_names.intersection(signatures.index, sort=False)
    if len(shared) == 0:
        raise InputError(
            f"signatures '{source}' share no genes with the spatial data (e.g. signatures: "
            f"{', '.join(map(str, signatures.index[:3]))}; spatial: {', '.join(map(str, adata.var_names[:3]))}). "
            "Use the signatures of the reference the samples were prepared with."
        )
    if len(shared) < adata.n_vars:
        log.info("Using %d genes shared by the signatures and all samples (of %d spatial genes)", len(shared),
                 adata.n_vars)
    adata = adata[:, shared].copy()
    # canonical once here (sorted, no duplicates, no stored zeros): the warm start, the composition start and the
    # training loader each check for it and would otherwise each make their own copy
    adata.X = canonical_csr(adata.X)
    return adata, signatures.loc[shared]
