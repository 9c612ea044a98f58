"""Count matrices: check that one holds raw UMI counts (finite, non-negative integers), and lay one out as
canonical CSR for the training steps."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import gammaln

from ..errors import InputError

RAW_COUNTS_HINT = (
    "cell2location needs raw integer UMI counts (not normalised, log-transformed or scaled data)"
)


def check_raw_counts(x: np.ndarray | sp.spmatrix, source: str, hint: str = "") -> None:
    """Raise :class:`InputError` naming ``source`` and the first bad value if ``x`` is not raw counts."""
    values = x.data if sp.issparse(x) else np.asarray(x).ravel()
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.number):
        raise InputError(f"{source}: counts have non-numeric type {values.dtype}; {RAW_COUNTS_HINT}.")
    suffix = f" {hint}" if hint else ""
    nonfinite = ~np.isfinite(values)
    if nonfinite.any():
        raise InputError(
            f"{source}: {int(nonfinite.sum())} count value(s) are NaN or infinite; {RAW_COUNTS_HINT}.{suffix}"
        )
    if values.size and values.min() < 0:
        raise InputError(
            f"{source}: {int((values < 0).sum())} count value(s) are negative (minimum {values.min():g}); "
            f"{RAW_COUNTS_HINT}.{suffix}"
        )
    fractional = values != np.round(values)
    if fractional.any():
        raise InputError(
            f"{source}: {int(fractional.sum())} count value(s) are not integers (e.g. "
            f"{values[fractional][0]:g}); {RAW_COUNTS_HINT}.{suffix}"
        )


def canonical_csr(x) -> sp.csr_matrix:
    """x as float32 CSR with sorted column indices, no duplicate entries and no stored zeros, so that its rows list
    their non-zeros in the order ``torch.nonzero`` would (the same sums, bit for bit). Copies only when it must: the
    caller's arrays (an AnnData's X) are never changed in place."""
    csr = sp.csr_matrix(x, dtype=np.float32)
    if csr.has_canonical_format and not (csr.data == 0).any():
        return csr
    csr = sp.csr_matrix(x, dtype=np.float32, copy=True)
    csr.sum_duplicates()  # also sorts the column indices
    csr.eliminate_zeros()
    return csr


def row_log_factorials(csr: sp.csr_matrix, rows_per_chunk: int = 4096) -> np.ndarray:
    """Σ_g log x_sg! of every row in float64: the likelihood's constant, taken once per location (mapping) or cell
    (reference) so that a minibatch sums its rows' values instead of evaluating log Γ at each of its non-zeros
    every step. Chunked by rows, so no float64 copy of all the stored values is made."""
    totals = np.zeros(csr.shape[0])
    indptr = csr.indptr
    for start in range(0, csr.shape[0], rows_per_chunk):
        end = min(start + rows_per_chunk, csr.shape[0])
        offsets = indptr[start:end + 1] - indptr[start]
        log_factorials = gammaln(csr.data[indptr[start]:indptr[end]].astype(np.float64) + 1)
        running = np.concatenate(([0.0], np.cumsum(log_factorials)))
        totals[start:end] = running[offsets[1:]] - running[offsets[:-1]]
    return totals
