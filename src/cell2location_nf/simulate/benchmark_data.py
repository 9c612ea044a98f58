"""Synthetic benchmark data (histology_and_benchmarks §4.4): spots summed from held-out reference cells.

1. A single-cell atlas from an NB simulator: per-type log-fold programmes on ~10 % of genes, per-cell
   library size, split 50/50 per type into a *reference* half and a *generation* half.
2. Spots on hexagonal lattices (one per sample); tissue zones from smooth random fields; each type
   has a home zone (a few types are ubiquitous), abundance Gamma(5μ, 5)·LogNormal(0, 0.35) with
   μ ∈ {1, 2.8}; cells per spot = ceil(abundance), capped.
3. Spot counts: the summed counts of cells drawn from the generation half, times a per-gene
   technology effect, a per-spot and per-sample detection efficiency, plus ambient RNA; Poisson.
Truth: the number of cells of each type in each spot.
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
class BenchmarkConfig:
    seed: int = 0
    n_genes: int = 1000
    n_types: int = 12
    cells_per_type: int = 600  # split 50/50 into reference and generation halves
    grid: tuple[int, int] = (20, 20)  # spots per sample
    n_samples: int = 2
    library_size: float = 3000.0
    max_cells_per_spot: int = 20
    density: float = 2.0  # scales every type's abundance: about 9 cells per spot on average


def _gamma_mean_cv(rng, mean: float, cv: float, size) -> np.ndarray:
    shape = 1 / cv**2
    return rng.gamma(shape, mean / shape, size=size)


def simulate_atlas(rng: np.random.Generator, cfg: BenchmarkConfig) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """NB single-cell counts (cells x genes), cell-type labels, and the true mean profiles (types x genes)."""
    base = rng.gamma(0.5, 2.0, size=cfg.n_genes)
    base /= base.sum()
    lfc = np.zeros((cfg.n_types, cfg.n_genes))
    for f in range(cfg.n_types):
        genes = rng.choice(cfg.n_genes, size=cfg.n_genes // 10, replace=False)
        lfc[f, genes] = rng.normal(0, 1.5, size=len(genes))
    profiles = base * np.exp(lfc)
    profiles /= profiles.sum(axis=1, keepdims=True)
    labels = np.repeat(np.arange(cfg.n_types), cfg.cells_per_type)
    library = rng.lognormal(np.log(cfg.library_size), 0.5, size=len(labels))
    dispersion = rng.gamma(2.0, 2.0, size=cfg.n_genes)
    mu = profiles[labels] * library[:, None]
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mu))
    return sp.csr_matrix(counts.astype(np.float32)), labels, profiles


def hex_lattice(rows: int, cols: int) -> np.ndarray:
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.column_stack([c * 100.0 + 50.0 * (r % 2), r * 100.0 * np.sqrt(3) / 2])


def zone_fields(rng: np.random.Generator, xy: np.ndarray, n_zones: int) -> np.ndarray:
    """Smooth non-negative zone intensities (spots x zones), normalised so zones partition the tissue."""
    span = xy.max(axis=0) - xy.min(axis=0) + 1
    fields = np.zeros((len(xy), n_zones))
    for z in range(n_zones):
        for _ in range(3):
            centre = xy.min(axis=0) + rng.random(2) * span
            width = span.mean() * rng.uniform(0.15, 0.3)
            fields[:, z] += np.exp(-((xy - centre) ** 2).sum(axis=1) / (2 * width**2))
    fields = fields ** 3
    return fields / fields.sum(axis=1, keepdims=True)


def simulate_spots(rng, cfg: BenchmarkConfig, xy: np.ndarray, home_zone: np.ndarray, high_density: np.ndarray,
                   gen_counts: sp.csr_matrix, gen_labels: np.ndarray, tech: np.ndarray, ambient: np.ndarray):
    """Counts (spots x genes) and true cell numbers (spots x types) of one sample."""
    n_zones = int(home_zone.max()) + 1
    zones = zone_fields(rng, xy, n_zones)
    weight = np.where(home_zone[None, :] >= 0, zones[:, np.clip(home_zone, 0, None)], 0.3)  # -1: ubiquitous
    mu = np.where(high_density, 2.8, 1.0) * cfg.density
    abundance = weight * rng.gamma(5 * mu, 1 / 5, size=(len(xy), cfg.n_types)) * rng.lognormal(0, 0.35, size=(
        len(xy), cfg.n_types))
    abundance[weight < 0.05] = 0
    cells = np.ceil(abundance).astype(int)
    cells[abundance < 0.5] = 0
    while (over := cells.sum(axis=1) > cfg.max_cells_per_spot).any():
        rows = np.flatnonzero(over)
        cols = np.array([rng.choice(cfg.n_types, p=cells[r] / cells[r].sum()) for r in rows])
        cells[rows, cols] -= 1
    by_type = [np.flatnonzero(gen_labels == f) for f in range(cfg.n_types)]
    summed = np.zeros((len(xy), cfg.n_genes))
    for s in range(len(xy)):
        chosen = np.concatenate([rng.choice(by_type[f], size=n, replace=n > len(by_type[f]))
                                 for f, n in enumerate(cells[s]) if n] or [np.array([], dtype=int)])
        if len(chosen):
            summed[s] = np.asarray(gen_counts[chosen].sum(axis=0)).ravel()
    detection = _gamma_mean_cv(rng, 1.0, 0.2, len(xy)) * _gamma_mean_cv(rng, 1.0, 0.45, 1)
    counts = rng.poisson(summed * tech * detection[:, None] + ambient)
    return counts, cells


def make_benchmark_data(outdir: str | Path, cfg: BenchmarkConfig = BenchmarkConfig()) -> Path:
    """Write ``reference.h5ad``, ``<sample>.h5ad`` (obsm['spatial']), ``truth/<sample>.csv`` (cells per type)
    and ``truth/profiles.csv`` (each type's true expression profile, genes x types) under outdir."""
    outdir = Path(outdir)
    (outdir / "truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    counts, labels, profiles = simulate_atlas(rng, cfg)
    genes = [f"GENE{i:05d}" for i in range(cfg.n_genes)]
    types = [f"celltype_{f:02d}" for f in range(cfg.n_types)]
    reference_half = np.zeros(len(labels), dtype=bool)
    for f in range(cfg.n_types):
        members = np.flatnonzero(labels == f)
        reference_half[rng.choice(members, size=len(members) // 2, replace=False)] = True
    obs = pd.DataFrame({"cell_type": pd.Categorical([types[f] for f in labels[reference_half]]),
                        "batch": pd.Categorical(rng.choice(["10x_a", "10x_b"], size=int(reference_half.sum())))},
                       index=[f"cell_{i:06d}" for i in np.flatnonzero(reference_half)])
    write_h5ad(ad.AnnData(counts[reference_half], obs=obs, var=pd.DataFrame(index=genes)), outdir / "reference.h5ad")
    true_profiles = pd.DataFrame(profiles.T, index=pd.Index(genes, name="gene"), columns=types)
    true_profiles.to_csv(outdir / "truth" / "profiles.csv")
    gen_counts, gen_labels = counts[~reference_half], labels[~reference_half]
    n_zones = max(2, cfg.n_types // 3)
    home_zone = rng.integers(0, n_zones, size=cfg.n_types)
    home_zone[rng.random(cfg.n_types) < 0.08] = -1
    high_density = rng.random(cfg.n_types) < 0.2
    tech = rng.gamma(0.4586, 1 / 0.6992, size=cfg.n_genes) / 2
    ambient = 0.03 * (profiles.mean(axis=0) * cfg.library_size * 0.1)
    for s in range(cfg.n_samples):
        sample = f"sample_{s + 1}"
        xy = hex_lattice(*cfg.grid)
        spot_counts, cells = simulate_spots(rng, cfg, xy, home_zone, high_density, gen_counts, gen_labels, tech,
                                            ambient)
        barcodes = [f"{sample}_spot{i:05d}" for i in range(len(xy))]
        adata = ad.AnnData(sp.csr_matrix(spot_counts.astype(np.float32)),
                           obs=pd.DataFrame({"sample": sample}, index=barcodes), var=pd.DataFrame(index=genes))
        adata.obsm["spatial"] = xy
        write_h5ad(adata, outdir / f"{sample}.h5ad")
        pd.DataFrame(cells, index=barcodes, columns=types).to_csv(outdir / "truth" / f"{sample}.csv")
    pd.DataFrame(profiles.T, index=genes, columns=types).to_csv(outdir / "truth" / "profiles.csv")
    return outdir
