"""Read the single-cell reference and check that the columns the model needs are there."""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from ..errors import InputError


def read_reference_header(path: str | Path) -> ad.AnnData:
    """Open a reference ``.h5ad`` in backed mode: obs/var are read, the counts are not."""
    path = Path(path)
    try:
        return ad.read_h5ad(path, backed="r")
    except (OSError, KeyError) as exc:
        raise InputError(f"Reference '{path}' is not a readable .h5ad file: {exc}") from exc


def reference_header_problems(
    adata: ad.AnnData, path: str | Path, labels_key: str, batch_key: str | None, covariate_keys: list[str],
    layer: str | None,
) -> list[str]:
    """Describe each required obs column, and the counts layer, that the reference lacks (empty when none)."""
    available = ", ".join(map(str, adata.obs.columns)) or "none"
    wanted = [("--labels_key", labels_key)]
    wanted += [("--batch_key", batch_key)] if batch_key else []
    wanted += [("--categorical_covariate_keys", key) for key in covariate_keys]
    problems = [
        f"reference '{path}': obs column '{column}' (from {param}) does not exist; available columns: {available}"
        for param, column in wanted
        if column not in adata.obs.columns
    ]
    if layer and layer not in adata.layers:
        problems.append(
            f"reference '{path}': layer '{layer}' (from --reference_layer) does not exist; "
            f"layers: {', '.join(adata.layers.keys()) or 'none'}"
        )
    return problems


def read_reference(
    path: str | Path, labels_key: str, batch_key: str | None, covariate_keys: list[str], layer: str | None
) -> ad.AnnData:
    """Read the reference fully, with the raw counts (``X`` or ``layer``) moved into ``X``."""
    path = Path(path)
    header = read_reference_header(path)
    problems = reference_header_problems(header, path, labels_key, batch_key, covariate_keys, layer)
    header.file.close()
    if problems:
        raise InputError("\n".join(problems))
    adata = ad.read_h5ad(path)
    if layer is not None:
        adata.X = adata.layers[layer]
    adata.layers = {}
    labels = adata.obs[labels_key]
    if labels.isna().any():
        raise InputError(
            f"reference '{path}': obs column '{labels_key}' has {int(labels.isna().sum())} cells without a label; "
            "remove them or give them a label."
        )
    return adata
