"""Reference QC (model_spec §1.7): reconstruction accuracy and estimated signature vs cluster average."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from . import finish


def _hist2d(ax, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str) -> None:
    ax.hist2d(np.log10(x.ravel() + 1), np.log10(y.ravel() + 1), bins=50, norm=LogNorm())
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def plot_reconstruction(observed: np.ndarray, expected: np.ndarray, path: str | Path | None = None) -> Figure | None:
    """2-D histogram of log10(observed + 1) vs log10(expected μ + 1); should be a noisy diagonal."""
    fig, ax = plt.subplots(figsize=(5, 5))
    _hist2d(ax, observed, expected, "Data, log10(nUMI + 1)", "Posterior expected value, log10(μ + 1)",
            "Reconstruction accuracy")
    fig.tight_layout()
    return finish(fig, path, dpi=120)


def plot_signature_vs_average(average: np.ndarray, signature: np.ndarray,
                              path: str | Path | None = None) -> Figure | None:
    """Estimated signatures vs plain cluster means over all genes x labels."""
    fig, ax = plt.subplots(figsize=(5, 5))
    _hist2d(ax, average, signature, "Mean expression for every gene in every cluster, log10(x + 1)",
            "Estimated expression, log10(x + 1)", "Signature vs cluster average")
    fig.tight_layout()
    return finish(fig, path, dpi=120)
