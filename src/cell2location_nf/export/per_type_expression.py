"""Observed counts split among cell types (upstream's ``compute_expected_per_cell_type``), streamed to disk.

For location s, gene g and type f the allocation is D_sg · w_sf g_fg m_g / (Σ_f' w_sf' g_f'g m_g + s_{e(s)g})
(model_spec §2.7: y_s cancels; the ambient share is not returned). Only non-zero counts get a value, so each
type's matrix has the sparsity of the data. Upstream builds all F matrices in memory (its issue #399); here
they are computed per chunk of locations and appended to one CSR layer per type of an .h5ad file, so memory
grows with the chunk, not with locations x genes x types.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import sparse_dataset, write_elem

from ..io.write import atomic_write
from .posterior import MAX_CHUNK_VALUES


def allocate_counts(counts: sp.csr_matrix, w_sf: np.ndarray, signatures: np.ndarray, m_g: np.ndarray,
                    s_eg: np.ndarray, batch_codes: np.ndarray) -> list[sp.csr_matrix]:
    """One CSR matrix per type for a block of locations; ambient s_eg is per batch (E x G), looked up per count."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    cols = counts.indices
    per_type = w_sf[rows] * (signatures[:, cols].T * m_g.reshape(-1)[cols, None])  # (nnz, F)
    share = per_type / (per_type.sum(axis=1, keepdims=True) + s_eg[batch_codes[rows], cols][:, None])
    values = (counts.data[:, None] * share).astype(np.float32)
    return [sp.csr_matrix((values[:, f], cols, counts.indptr), shape=counts.shape) for f in range(w_sf.shape[1])]


def allocation_chunks(counts: sp.csr_matrix, w_sf: np.ndarray, signatures: np.ndarray, m_g: np.ndarray,
                      s_eg: np.ndarray, batch_codes: np.ndarray) -> Iterator[list[sp.csr_matrix]]:
    """:func:`allocate_counts` over row chunks holding at most ``MAX_CHUNK_VALUES`` (non-zero x type) values."""
    n_types = w_sf.shape[1]
    nnz_per_row = np.diff(counts.indptr)
    start = 0
    while start < counts.shape[0]:
        budget = np.cumsum(nnz_per_row[start:]) * n_types
        stop = start + max(1, int(np.searchsorted(budget, MAX_CHUNK_VALUES, side="right")))
        yield allocate_counts(counts[start:stop], w_sf[start:stop], signatures, m_g, s_eg, batch_codes[start:stop])
        start = stop


def write_per_type_expression(path: str | Path, counts: sp.csr_matrix, w_sf: np.ndarray, signatures: np.ndarray,
                              m_g: np.ndarray, s_eg: np.ndarray, batch_codes: np.ndarray, obs: pd.DataFrame,
                              var: pd.DataFrame, cell_types: list[str]) -> Path:
    """An .h5ad with obs, var and one CSR layer per cell type (no X), written chunk by chunk and atomically."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
            write_elem(f, "obs", obs)
            write_elem(f, "var", var)
            layers = f.create_group("layers")
            layers.attrs["encoding-type"], layers.attrs["encoding-version"] = "dict", "0.1.0"
            first = True
            for matrices in allocation_chunks(counts, w_sf, signatures, m_g, s_eg, batch_codes):
                for name, matrix in zip(cell_types, matrices, strict=True):
                    if first:
                        write_elem(layers, name, matrix)
                    else:
                        sparse_dataset(layers[name]).append(matrix)
                first = False
        with h5py.File(tmp, "r") as f:  # fail here, not in the user's hands, if a layer came out wrong
            for name in cell_types:
                layer = sparse_dataset(f["layers"][name])
                if tuple(layer.shape) != tuple(counts.shape):
                    raise RuntimeError(f"layer {name!r} of {path} has shape {layer.shape}, not {counts.shape}")

    return atomic_write(Path(path), write)
