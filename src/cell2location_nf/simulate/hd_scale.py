"""A Visium-HD-sized synthetic slide for the scale benchmark, generated chunk by chunk (never dense in full).

Bins lie on a square grid; smooth tissue zones give each cell type a home region. Each bin holds a few
whole cells (Poisson per type, about ``cells_per_bin`` in all), and its counts are Poisson draws around
the summed expected profiles of those cells times a per-bin detection, plus a little ambient RNA. The
true expected counts per cell and type are written as the signatures, so the run measures the mapping
alone. Counts are sparse (HD-like: a few hundred UMIs per bin).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..io.write import write_h5ad


@dataclass(frozen=True)
class HDScaleConfig:
    n_locations: int = 200_000
    n_genes: int = 5000
    n_types: int = 30
    cells_per_bin: float = 1.5
    umis_per_cell: float = 150.0
    chunk: int = 5000
    seed: int = 0


def _profiles(rng: np.random.Generator, cfg: HDScaleConfig) -> np.ndarray:
    """Expected counts per cell (types x genes): a shared base with type-specific programmes."""
    base = rng.gamma(0.4, 1.0, size=cfg.n_genes)
    lfc = np.where(rng.random((cfg.n_types, cfg.n_genes)) < 0.1, rng.normal(0, 1.5, (cfg.n_types, cfg.n_genes)), 0)
    profiles = base * np.exp(lfc)
    return profiles / profiles.sum(axis=1, keepdims=True) * cfg.umis_per_cell


def _zone_weights(rng: np.random.Generator, xy: np.ndarray, centres: np.ndarray, widths: np.ndarray,
                  home: np.ndarray) -> np.ndarray:
    """Per-bin weight of each type (bins x types) from Gaussian zone blobs; home -1 means everywhere."""
    d2 = ((xy[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    zones = np.exp(-d2 / (2 * widths[None, :] ** 2)) ** 2
    zones /= zones.sum(axis=1, keepdims=True) + 1e-12
    return np.where(home[None, :] >= 0, zones[:, np.clip(home, 0, None)], 0.3)


def make_hd_scale_data(outdir: str | Path, cfg: HDScaleConfig = HDScaleConfig()) -> Path:
    """Write ``hd.h5ad`` (obsm['spatial']), ``signatures.csv`` and ``truth.csv`` (true cells per bin and type)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    profiles = _profiles(rng, cfg)
    side = int(np.ceil(np.sqrt(cfg.n_locations)))
    n_zones = max(2, cfg.n_types // 3)
    centres = rng.random((n_zones, 2)) * side
    widths = rng.uniform(0.1, 0.25, size=n_zones) * side
    home = rng.integers(0, n_zones, size=cfg.n_types)
    home[rng.random(cfg.n_types) < 0.1] = -1
    ambient = profiles.mean(axis=0) * 0.02
    parts, truth, coords = [], [], []
    for start in range(0, cfg.n_locations, cfg.chunk):
        ids = np.arange(start, min(start + cfg.chunk, cfg.n_locations))
        xy = np.column_stack([ids % side, ids // side]).astype(float)
        weight = _zone_weights(rng, xy, centres, widths, home)
        rate = weight / weight.sum(axis=1, keepdims=True) * cfg.cells_per_bin
        cells = rng.poisson(rate)
        detection = rng.gamma(10.0, 0.1, size=(len(ids), 1))
        counts = rng.poisson((cells @ profiles + ambient) * detection).astype(np.float32)
        parts.append(sp.csr_matrix(counts))
        truth.append(cells.astype(np.int16))
        coords.append(xy)
    genes = [f"GENE{i:05d}" for i in range(cfg.n_genes)]
    types = [f"celltype_{f:02d}" for f in range(cfg.n_types)]
    barcodes = [f"s_008um_{i:06d}" for i in range(cfg.n_locations)]
    adata = ad.AnnData(sp.vstack(parts, format="csr"), obs=pd.DataFrame({"sample": "hd"}, index=barcodes),
                       var=pd.DataFrame(index=genes))
    adata.obsm["spatial"] = np.vstack(coords)
    write_h5ad(adata, outdir / "hd.h5ad")
    pd.DataFrame(profiles.T, index=genes, columns=types).to_csv(outdir / "signatures.csv")
    pd.DataFrame(np.vstack(truth), index=barcodes, columns=types).to_csv(outdir / "truth.csv")
    return outdir
