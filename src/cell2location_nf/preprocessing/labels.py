"""Checks on reference cell-type labels, light enough for the validation step (no torch import)."""

from __future__ import annotations

import pandas as pd


def label_problems(labels: pd.Series, labels_key: str, min_cells_per_label: int, source: str) -> list[str]:
    """Problems with the cell-type labels: fewer than two types, or types with too few cells."""
    counts = labels.value_counts()
    problems = []
    if len(counts) < 2:
        problems.append(
            f"reference '{source}': obs column '{labels_key}' has a single cell type "
            f"({', '.join(map(str, counts.index))}); signatures need at least two cell types to be told apart"
        )
    small = counts[counts < min_cells_per_label]
    if len(small):
        shown = ", ".join(f"'{k}' ({v} cells)" for k, v in small.items())
        problems.append(
            f"reference '{source}': cell type(s) {shown} in obs column '{labels_key}' have fewer than "
            f"{min_cells_per_label} cells (--min_cells_per_label); remove or merge them, or lower the minimum"
        )
    return problems
