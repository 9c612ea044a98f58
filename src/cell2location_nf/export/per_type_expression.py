"""Observed counts split among cell types (upstream's ``compute_expected_per_cell_type``), streamed to disk.

For location s, gene g and type f the allocation is D_sg · w_sf g_fg m_g / (Σ_f' w_sf' g_f'g m_g + s_{e(s)g})
(model_spec §2.7: y_s cancels; the ambient share is not returned). Only non-zero counts get a value, so each
type's matrix has the sparsity of the data. Upstream builds all F matrices in memory (its issue #399); here
they are computed per chunk of locations and written into one CSR layer per type of an .h5ad file, so memory
grows with the chunk, not with locations x genes x types.

Every layer has the counts' sparsity pattern, so the file holds its ``indices`` and ``indptr`` once: the other
layers' are HDF5 hard links to the first layer's, which any HDF5 reader (anndata included) follows as it
would a dataset of their own. That halves the file and its writing (bench/RESULTS.md).
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

SPLIT_BLOCK = 16_384  # non-zeros split at a time: their (non-zeros x types) temporaries stay in the CPU's cache


def split_counts(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, w_sf: np.ndarray, signatures: np.ndarray,
                 m_g: np.ndarray, s_eg: np.ndarray, batch_codes: np.ndarray) -> np.ndarray:
    """(non-zeros, types): each count ``data[k]`` at (``rows[k]``, ``cols[k]``) split among types.

    ``rows`` index ``w_sf`` and ``batch_codes``; the ambient s_eg is per batch (E x G), looked up per count.
    """
    dtype = np.result_type(w_sf, signatures, m_g, s_eg, np.float32)  # float64 signatures: split in float64
    per_type = (signatures[:, cols].T * m_g.reshape(-1)[cols, None]).astype(dtype, copy=False)
    per_type *= w_sf[rows]
    per_type /= per_type.sum(axis=1, keepdims=True) + s_eg[batch_codes[rows], cols][:, None]
    per_type *= data.astype(np.float32)[:, None]
    return per_type


def allocation_chunks(counts: sp.csr_matrix, w_sf: np.ndarray, signatures: np.ndarray, m_g: np.ndarray,
                      s_eg: np.ndarray, batch_codes: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first non-zero, last + 1, their :func:`split_counts` as float32 (types, non-zeros)) over row chunks of CSR
    ``counts`` holding at most ``MAX_CHUNK_VALUES`` (non-zero x type) values, split ``SPLIT_BLOCK`` at a time."""
    indptr = counts.indptr
    n_types = w_sf.shape[1]
    start = 0
    while start < counts.shape[0]:
        budget = (indptr[start + 1:] - indptr[start]) * n_types
        stop = start + max(1, int(np.searchsorted(budget, MAX_CHUNK_VALUES, side="right")))
        lo, hi = int(indptr[start]), int(indptr[stop])
        rows = np.repeat(np.arange(start, stop), np.diff(indptr[start:stop + 1]))
        values = np.empty((n_types, hi - lo), np.float32)
        for a in range(0, hi - lo, SPLIT_BLOCK):
            b = min(a + SPLIT_BLOCK, hi - lo)
            values[:, a:b] = split_counts(counts.data[lo + a:lo + b], rows[a:b], counts.indices[lo + a:lo + b],
                                          w_sf, signatures, m_g, s_eg, batch_codes).T  # transposed and rounded
        yield lo, hi, values
        start = stop


def write_per_type_expression(path: str | Path, counts: sp.csr_matrix, w_sf: np.ndarray, signatures: np.ndarray,
                              m_g: np.ndarray, s_eg: np.ndarray, batch_codes: np.ndarray, obs: pd.DataFrame,
                              var: pd.DataFrame, cell_types: list[str]) -> Path:
    """An .h5ad with obs, var and one CSR layer per cell type (no X), written chunk by chunk and atomically."""
    counts = sp.csr_matrix(counts)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
            write_elem(f, "obs", obs)
            write_elem(f, "var", var)
            layers = f.create_group("layers")
            layers.attrs["encoding-type"], layers.attrs["encoding-version"] = "dict", "0.1.0"
            data = []
            for name in cell_types:
                layer = layers.create_group(name)
                layer.attrs["encoding-type"], layer.attrs["encoding-version"] = "csr_matrix", "0.1.0"
                layer.attrs["shape"] = counts.shape
                data.append(layer.create_dataset("data", shape=(counts.nnz,), dtype=np.float32))
                if name == cell_types[0]:
                    layer.create_dataset("indices", data=counts.indices)
                    layer.create_dataset("indptr", data=counts.indptr)
                else:  # hard links: the same pattern, stored once
                    layer["indices"] = layers[cell_types[0]]["indices"]
                    layer["indptr"] = layers[cell_types[0]]["indptr"]
            for lo, hi, values in allocation_chunks(counts, w_sf, signatures, m_g, s_eg, batch_codes):
                for dataset, row in zip(data, values, strict=True):
                    dataset[lo:hi] = row
        with h5py.File(tmp, "r") as f:  # fail here, not in the user's hands, if a layer came out wrong
            for name in cell_types:
                layer = sparse_dataset(f["layers"][name])
                if tuple(layer.shape) != tuple(counts.shape):
                    raise RuntimeError(f"layer {name!r} of {path} has shape {layer.shape}, not {counts.shape}")

    return atomic_write(Path(path), write)
