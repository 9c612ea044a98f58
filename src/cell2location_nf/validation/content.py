"""Cheap checks of file contents (headers, layouts, gene lists) that catch bad input before heavy work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from ..errors import InputError
from ..io.reference import read_reference_header, reference_header_problems
from ..io.spaceranger import locate_spaceranger, read_spaceranger_genes
from ..preprocessing.genes import GENE_MATCH_MODES, match_genes
from ..preprocessing.labels import label_problems
from .schema import is_remote


def _split_keys(value: str | None) -> list[str]:
    return [k.strip() for k in value.split(",") if k.strip()] if value else []


def check_reference(params: dict[str, Any]) -> tuple[list[str], pd.DataFrame | None]:
    """Problems with the reference's columns and layer, and its gene table for the overlap check."""
    path = params.get("reference")
    if not path or is_remote(path) or not Path(path).is_file():
        return [], None
    try:
        adata = read_reference_header(path)
    except InputError as exc:
        return [str(exc)], None
    labels_key = params.get("labels_key") or "cell_type"
    problems = reference_header_problems(
        adata, path, labels_key, params.get("batch_key"), _split_keys(params.get("categorical_covariate_keys")),
        params.get("reference_layer"),
    )
    if labels_key in adata.obs.columns:
        problems += label_problems(adata.obs[labels_key], labels_key, int(params.get("min_cells_per_label") or 1), path)
    var = adata.var.copy()
    adata.file.close()
    return problems, var


def spatial_genes(row: dict[str, Any], default_bin_size: int) -> pd.DataFrame | None:
    """Gene table of one sample (no counts read); raises InputError on an incomplete layout."""
    if "spaceranger_dir" in row:
        if is_remote(row["spaceranger_dir"]):
            return None
        layout = locate_spaceranger(row["spaceranger_dir"], row.get("hd_bin_size", default_bin_size))
        return read_spaceranger_genes(layout)
    if is_remote(row["h5ad"]):
        return None
    adata = ad.read_h5ad(row["h5ad"], backed="r")
    try:
        if "spatial" not in adata.obsm:
            raise InputError(f"spatial h5ad '{row['h5ad']}' has no obsm['spatial'] coordinates")
        return adata.var.copy()
    finally:
        adata.file.close()


def check_samples(
    rows: list[dict[str, Any]], where: list[str], reference_var: pd.DataFrame | None, params: dict[str, Any]
) -> list[str]:
    """Layout of each Space Ranger folder / h5ad, and genes shared with the reference."""
    problems = []
    mode = params.get("gene_match") or "auto"
    mode = mode if mode in GENE_MATCH_MODES else "auto"  # a bad value is already reported by the schema
    for row, location in zip(rows, where, strict=True):
        try:
            genes = spatial_genes(row, int(params.get("hd_bin_size") or 8))
            if genes is not None and reference_var is not None:
                source = row.get("spaceranger_dir") or row.get("h5ad")
                match_genes(reference_var, genes, mode, params["reference"], source)
        except InputError as exc:
            problems.append(f"{location}: {exc}")
    return problems
