"""Turn the reference's obs columns into the model's integer codes, rejecting designs it cannot fit."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import InputError
from ..models.reference import ReferenceDesign
from ..preprocessing.labels import label_problems


def _codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes in the column's category order if categorical, else sorted unique values (upstream's order)."""
    categorical = column if isinstance(column.dtype, pd.CategoricalDtype) else column.astype(str).astype("category")
    categorical = categorical.cat.remove_unused_categories()
    return categorical.cat.codes.to_numpy().astype(np.int64), [str(c) for c in categorical.cat.categories]


def build_design(adata: ad.AnnData, labels_key: str, batch_key: str | None, covariate_keys: list[str],
                 min_cells_per_label: int, source: str) -> ReferenceDesign:
    """Codes for labels, batches and covariates; raises InputError on missing columns or bad labels."""
    missing = [k for k in [labels_key, batch_key, *covariate_keys] if k and k not in adata.obs.columns]
    if missing:
        raise InputError(f"reference '{source}': obs column(s) {', '.join(map(repr, missing))} do not exist; "
                         f"available: {', '.join(map(str, adata.obs.columns))}")
    problems = label_problems(adata.obs[labels_key], labels_key, min_cells_per_label, source)
    if problems:
        raise InputError("\n".join(problems))
    labels, factor_names = _codes(adata.obs[labels_key])
    if batch_key:
        batches, batch_names = _codes(adata.obs[batch_key])
    else:
        batches, batch_names = np.zeros(adata.n_obs, dtype=np.int64), ["all"]
    columns, levels, offset = [], [], 0
    for key in covariate_keys:
        codes, names = _codes(adata.obs[key])
        columns.append(codes + offset)
        levels.append(names)
        offset += len(names)
    covariates = np.stack(columns, axis=1) if columns else np.zeros((adata.n_obs, 0), dtype=np.int64)
    return ReferenceDesign(labels, batches, covariates, factor_names, batch_names, levels)
