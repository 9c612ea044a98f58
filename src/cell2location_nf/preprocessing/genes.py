"""Gene identifiers: find Ensembl IDs and symbols, move mitochondrial genes aside, match two gene sets."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError

log = logging.getLogger(__name__)

ENSEMBL_PATTERN = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
ID_COLUMNS = ("gene_ids", "gene_id", "ensembl_id", "ENSEMBL", "ensembl", "feature_id")
SYMBOL_COLUMNS = ("SYMBOL", "symbol", "gene_symbols", "gene_symbol", "gene_name", "feature_name")
MT_PATTERN = re.compile(r"^mt-", re.IGNORECASE)
GENE_MATCH_MODES = ("auto", "ensembl", "symbol")


def _looks_like_ids(values: pd.Index | pd.Series) -> bool:
    values = pd.Series(np.asarray(values, dtype=str))
    return len(values) > 0 and values.str.match(ENSEMBL_PATTERN).mean() > 0.5


def strip_version(ids: pd.Series | np.ndarray) -> np.ndarray:
    """Drop Ensembl version suffixes (ENSG00000141510.17 -> ENSG00000141510)."""
    return pd.Series(np.asarray(ids, dtype=str)).str.replace(r"\.\d+$", "", regex=True).to_numpy()


def gene_ids(var: pd.DataFrame) -> np.ndarray | None:
    """Ensembl IDs per gene: from var_names or a known var column; None when there are none."""
    if _looks_like_ids(var.index):
        return np.asarray(var.index, dtype=str)
    for column in ID_COLUMNS:
        if column in var.columns and _looks_like_ids(var[column]):
            return var[column].astype(str).to_numpy()
    return None


def gene_symbols(var: pd.DataFrame) -> np.ndarray:
    """Gene symbols per gene: var_names unless they are IDs, then a known symbol column."""
    if not _looks_like_ids(var.index):
        return np.asarray(var.index, dtype=str)
    for column in SYMBOL_COLUMNS:
        if column in var.columns and not _looks_like_ids(var[column]):
            return var[column].astype(str).to_numpy()
    return np.asarray(var.index, dtype=str)


def split_mitochondrial(adata: ad.AnnData) -> ad.AnnData:
    """Remove mitochondrial genes (symbol prefix ``MT-``/``mt-``) and keep their counts in ``obsm['MT']``.

    Mitochondrial reads reflect cell quality rather than cell type, so the mapping model must not use them.
    """
    symbols = gene_symbols(adata.var)
    is_mt = np.array([bool(MT_PATTERN.match(s)) for s in symbols])
    x_mt = adata[:, is_mt].X
    x_mt = x_mt.toarray() if sp.issparse(x_mt) else np.asarray(x_mt)
    kept = adata[:, ~is_mt].copy()
    kept.obsm["MT"] = pd.DataFrame(x_mt, index=adata.obs_names, columns=symbols[is_mt])
    log.info("Removed %d mitochondrial genes (kept in obsm['MT'])", int(is_mt.sum()))
    return kept


@dataclass
class GeneMatch:
    """Which spatial genes correspond to which reference genes, and by what key."""

    key: str  # "ensembl" or "symbol"
    spatial_index: np.ndarray  # positions in the spatial var table
    reference_names: np.ndarray  # matching reference var_names, same order


def _describe(values: np.ndarray) -> str:
    return ", ".join(map(str, values[:3])) + (" ..." if len(values) > 3 else "")


def match_genes(
    reference_var: pd.DataFrame, spatial_var: pd.DataFrame, mode: str, reference: str, spatial: str
) -> GeneMatch:
    """Match spatial genes to reference genes by Ensembl ID when both sides have IDs, else by symbol.

    ``mode`` is ``auto``, ``ensembl`` or ``symbol``; ``reference``/``spatial`` name the files in errors.
    Raises :class:`InputError` when no gene is shared.
    """
    if mode not in GENE_MATCH_MODES:
        raise InputError(f"--gene_match '{mode}' is not one of {', '.join(GENE_MATCH_MODES)}.")
    ref_ids, sp_ids = gene_ids(reference_var), gene_ids(spatial_var)
    if mode == "ensembl" and (ref_ids is None or sp_ids is None):
        side = reference if ref_ids is None else spatial
        raise InputError(
            f"--gene_match ensembl, but '{side}' has no Ensembl gene IDs (var_names or a var column "
            f"{', '.join(ID_COLUMNS)}). Use --gene_match symbol or auto."
        )
    both_have_ids = ref_ids is not None and sp_ids is not None
    key = "ensembl" if mode == "ensembl" or (mode == "auto" and both_have_ids) else "symbol"
    if key == "ensembl":
        ref_keys, sp_keys = strip_version(ref_ids), strip_version(sp_ids)
    else:
        ref_keys, sp_keys = gene_symbols(reference_var), gene_symbols(spatial_var)
    ref_lookup = pd.Series(np.asarray(reference_var.index, dtype=str), index=ref_keys)
    ref_lookup = ref_lookup[~ref_lookup.index.duplicated(keep="first")]
    sp_series = pd.Series(np.arange(len(sp_keys)), index=sp_keys)
    sp_series = sp_series[~sp_series.index.duplicated(keep="first")]
    shared = sp_series.index.intersection(ref_lookup.index, sort=False)
    if len(shared) == 0:
        raise InputError(
            f"No genes are shared between reference '{reference}' (e.g. {_describe(ref_keys)}) and "
            f"spatial data '{spatial}' (e.g. {_describe(sp_keys)}), matching by {key}. Check that both "
            "come from the same species and annotation, or set --gene_match (auto, ensembl, symbol)."
        )
    log.info("Matched %d genes by %s between '%s' and '%s'", len(shared), key, reference, spatial)
    return GeneMatch(key, sp_series.loc[shared].to_numpy(), ref_lookup.loc[shared].to_numpy())
