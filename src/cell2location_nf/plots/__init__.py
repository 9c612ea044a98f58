"""QC figures (matplotlib, Agg backend so they render on headless nodes)."""

import matplotlib

matplotlib.use("Agg")
