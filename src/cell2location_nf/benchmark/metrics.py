"""Accuracy of estimated cell abundances against the truth (spots x types, same index and columns).

Absolute abundance: Pearson over all entries and per type (cell2location paper) and the absolute scale
Σ estimate / Σ truth. Proportions (estimate normalised per spot; the convention is q05 abundance):
RMSE (Spotless: mean over spots of sqrt(mean over types of squared error)) and JSD (per spot, log2; mean
and median). Presence: average precision (AUPR) of abundance scores for truth > 0, pooled over entries.
Diagnostics of the split of a spot's counts between cells and detection (``count_split``): Pearson of the
total cells per spot, and of the composition rescaled to the true totals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import average_precision_score


def proportions(abundance: np.ndarray) -> np.ndarray:
    totals = abundance.sum(axis=1, keepdims=True)
    return np.divide(abundance, totals, out=np.full_like(abundance, 1 / abundance.shape[1]), where=totals > 0)


def aligned(truth: pd.DataFrame, estimate: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(truth, estimate) as float arrays, the estimate's rows and columns in the truth's order."""
    return truth.to_numpy(dtype=float), estimate.loc[truth.index, truth.columns].to_numpy(dtype=float)


def pearson_all(truth: pd.DataFrame, abundance: pd.DataFrame) -> float:
    """Pearson of abundance and truth over all entries (locations x types)."""
    t, a = aligned(truth, abundance)
    return float(np.corrcoef(a.ravel(), t.ravel())[0, 1])


def score(truth: pd.DataFrame, abundance: pd.DataFrame, q05: pd.DataFrame | None = None) -> dict[str, float]:
    """Metrics for one estimate; ``abundance`` (posterior mean) for Pearson/scale, ``q05`` for the rest."""
    q05 = abundance if q05 is None else q05
    t, a = aligned(truth, abundance)
    q = aligned(truth, q05)[1]
    per_type = pearson_by_type(truth, abundance).to_numpy()
    pt, pq = proportions(t), proportions(q)
    jsd = np.array([jensenshannon(pt[s], pq[s], base=2) for s in range(len(t)) if t[s].sum() > 0])
    return {
        "pearson_all": pearson_all(truth, abundance),
        "pearson_per_type": float(np.mean(per_type)),
        "rmse_proportions": float(np.mean(np.sqrt(((pt - pq) ** 2).mean(axis=1)))),
        "jsd_mean": float(jsd.mean()),
        "jsd_median": float(np.median(jsd)),
        "aupr_presence": float(average_precision_score((t > 0).ravel(), q.ravel())),
        "absolute_scale": float(a.sum() / t.sum()),
    }


def pearson_by_type(truth: pd.DataFrame, abundance: pd.DataFrame) -> pd.Series:
    """Pearson of abundance and truth per cell type (types absent or constant in the truth are left out)."""
    t, a = aligned(truth, abundance)
    kept = [f for f in range(t.shape[1]) if t[:, f].std() > 0]
    return pd.Series([np.corrcoef(a[:, f], t[:, f])[0, 1] for f in kept], index=truth.columns[kept])


def count_split(truth: pd.DataFrame, abundance: pd.DataFrame) -> dict[str, float]:
    """Pearson of the total cells per spot ("totals"), and over all entries of the estimate rescaled per spot
    to the true total ("composition"): where Pearson over all entries loses, totals or mixture."""
    t, a = aligned(truth, abundance)
    true_totals, totals = t.sum(axis=1), a.sum(axis=1)
    rescaled = proportions(a) * true_totals[:, None]
    return {"totals_pearson": float(np.corrcoef(totals, true_totals)[0, 1]),
            "composition_pearson": float(np.corrcoef(rescaled.ravel(), t.ravel())[0, 1])}


# Direction of "better" for each metric (absolute scale: closer to 1 is better).
HIGHER_IS_BETTER = {"pearson_all": True, "pearson_per_type": True, "rmse_proportions": False, "jsd_mean": False,
                    "jsd_median": False, "aupr_presence": True}


def signature_score(truth: pd.DataFrame, signatures: pd.DataFrame) -> dict[str, float]:
    """Accuracy of reference signatures (genes x types) against the true expression profiles.

    Both are normalised per type to sum 1 over the shared genes (signatures are on the counts scale, the
    truth on the profile scale); Pearson per type on log values (all genes count, not only the highly
    expressed) and on linear values, averaged over types, and the worst type's log Pearson.
    """
    genes = truth.index.intersection(signatures.index)
    t = truth.loc[genes].to_numpy(dtype=float)
    s = signatures.loc[genes, truth.columns].to_numpy(dtype=float)
    t, s = t / t.sum(axis=0), s / s.sum(axis=0)
    log_r = [np.corrcoef(np.log(s[:, f]), np.log(t[:, f]))[0, 1] for f in range(t.shape[1])]
    lin_r = [np.corrcoef(s[:, f], t[:, f])[0, 1] for f in range(t.shape[1])]
    return {"log_pearson_mean": float(np.mean(log_r)), "log_pearson_min": float(np.min(log_r)),
            "pearson_mean": float(np.mean(lin_r))}


SIGNATURE_HIGHER_IS_BETTER = {"log_pearson_mean": True, "log_pearson_min": True, "pearson_mean": True}
