"""QC figures (matplotlib, Agg backend so they render on headless nodes).

Every plot function saves to ``path`` when given one, and otherwise returns the figure, so that the QC
notebooks show the same figures the pipeline steps write.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def finish(fig: Figure, path: str | Path | None, dpi: int = 120) -> Figure | None:
    """Save and close ``fig`` when ``path`` is given; else hand it back for display."""
    if path is None:
        return fig
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return None
