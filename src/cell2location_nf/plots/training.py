"""ELBO history, as upstream's ``plot_history``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from . import finish


def plot_history(elbo_train: list[float], path: str | Path | None = None, iter_start: int = 0,
                 title: str = "") -> Figure | None:
    """-ELBO per epoch from ``iter_start`` on (the tutorial drops the first 20 reference epochs)."""
    values = np.asarray(elbo_train, dtype=float)
    start = min(iter_start, max(len(values) - 1, 0))
    epochs = np.arange(start, len(values))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, values[start:], label="train")
    ax.set_xlim(0, max(len(values), 1))
    ax.set_xlabel("Training epochs")
    ax.set_ylabel("-ELBO loss")
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return finish(fig, path, dpi=120)
