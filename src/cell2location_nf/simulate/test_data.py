"""A small, fully deterministic reference and two spatial samples with known cell abundances.

The reference has cell-type profiles with markers, two batches and one technical covariate; spots are
sums of cells of those types in tissue zones, with a per-gene technology effect, a per-spot detection
efficiency and ambient RNA. Sample 1 is written like Space Ranger 1.x (HDF5 matrix, headerless
``tissue_positions_list.csv``), sample 2 like Space Ranger 2.x (gzipped mtx folder, ``tissue_positions.csv``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..io.write import write_h5ad
from .spaceranger_writer import write_spaceranger_outs

MT_GENES = ["MT-CO1", "MT-CO2", "MT-ND1", "MT-ATP6", "MT-CYB"]


@dataclass(frozen=True)
class SyntheticDataConfig:
    """Sizes of the synthetic data set; the defaults keep the test profile fast."""

    seed: int = 0
    n_genes: int = 300
    n_types: int = 6
    n_cells: int = 1200
    grid: tuple[int, int] = (12, 12)  # spot rows x columns per sample (hexagonal Visium layout)
    n_samples: int = 2
    cells_per_spot: float = 8.0
    spot_spacing_px: float = 100.0


def gene_table(n_genes: int) -> pd.DataFrame:
    """Gene symbols and Ensembl-like IDs; the last genes are mitochondrial."""
    n_nuclear = n_genes - len(MT_GENES)
    symbols = [f"GENE{i:04d}" for i in range(1, n_nuclear + 1)] + MT_GENES
    ids = [f"ENSG{i:011d}" for i in range(1, n_genes + 1)]
    return pd.DataFrame({"gene_ids": ids}, index=symbols)


def cell_type_profiles(rng: np.random.Generator, n_types: int, n_genes: int) -> np.ndarray:
    """Mean counts per cell (types x genes): a shared baseline with type-specific markers."""
    baseline = rng.gamma(0.6, 0.5, size=n_genes)
    profiles = np.tile(baseline, (n_types, 1)) * rng.lognormal(0, 0.3, size=(n_types, n_genes))
    markers = rng.permutation(n_genes - len(MT_GENES))[: n_types * 8].reshape(n_types, 8)
    for f in range(n_types):
        profiles[f, markers[f]] += rng.gamma(4.0, 1.0, size=8)
    profiles[:, -len(MT_GENES):] = rng.gamma(5.0, 1.0, size=(n_types, len(MT_GENES)))
    return profiles


def random_barcodes(rng: np.random.Generator, n: int) -> list[str]:
    """Unique 16-nt barcodes with the ``-1`` GEM-group suffix, as Space Ranger writes them."""
    barcodes: set[str] = set()
    while len(barcodes) < n:
        barcodes.add("".join(rng.choice(list("ACGT"), size=16)) + "-1")
    return sorted(barcodes)


def make_reference(rng: np.random.Generator, profiles: np.ndarray, genes: pd.DataFrame, n_cells: int) -> ad.AnnData:
    """Cells drawn from the profiles with batch and chemistry effects (negative-binomial counts)."""
    n_types, n_genes = profiles.shape
    weights = rng.dirichlet(np.full(n_types, 3.0))
    labels = rng.choice(n_types, size=n_cells, p=weights)
    labels[:n_types] = np.arange(n_types)  # every type present
    batch = rng.choice(2, size=n_cells)
    chemistry = rng.choice(2, size=n_cells)
    # batch: a sequencing-depth factor per batch with small gene-level noise, plus ambient RNA
    batch_effect = np.array([[0.7], [1.4]]) * rng.lognormal(0, 0.1, size=(2, n_genes))
    ambient = rng.gamma(1.0, 0.02, size=(2, n_genes))
    chemistry_effect = np.vstack([np.ones(n_genes), rng.lognormal(0, 0.3, size=n_genes)])
    depth = rng.lognormal(0, 0.3, size=n_cells)
    mu = (profiles[labels] + ambient[batch]) * batch_effect[batch] * chemistry_effect[chemistry] * depth[:, None]
    counts = rng.negative_binomial(5, 5 / (5 + mu))
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{f + 1}" for f in labels]),
            "batch": pd.Categorical([f"batch_{b + 1}" for b in batch]),
            "chemistry": pd.Categorical(np.where(chemistry == 0, "3prime", "5prime")),
        },
        index=[f"cell_{i:05d}" for i in range(n_cells)],
    )
    return ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32), obs=obs, var=genes.copy())


def hex_positions(rows: int, cols: int, spacing: float) -> pd.DataFrame:
    """Visium-like spot grid: odd rows shifted by half a spot, 1 px margin of spacing."""
    array_row, array_col = np.divmod(np.arange(rows * cols), cols)
    array_col = array_col * 2 + (array_row % 2)
    return pd.DataFrame(
        {
            "array_row": array_row,
            "array_col": array_col,
            "pxl_row_in_fullres": np.round(spacing * (1 + array_row * np.sqrt(3) / 2)).astype(int),
            "pxl_col_in_fullres": np.round(spacing * (1 + array_col / 2)).astype(int),
        }
    )


def make_spots(
    rng: np.random.Generator, profiles: np.ndarray, positions: pd.DataFrame, cells_per_spot: float
) -> tuple[np.ndarray, np.ndarray]:
    """Counts and true cell abundances (spots x types) for tissue zones laid out along the x axis."""
    n_types, n_genes = profiles.shape
    n_spots = len(positions)
    x = positions["pxl_col_in_fullres"].to_numpy(dtype=float)
    zone = np.digitize(x, np.quantile(x, [1 / 3, 2 / 3]))
    zone_mix = rng.dirichlet(np.full(n_types, 0.5), size=3)
    n_cells = rng.poisson(cells_per_spot, size=n_spots) + 1
    abundance = np.vstack([rng.multinomial(n, zone_mix[z]) for n, z in zip(n_cells, zone, strict=True)])
    technology = rng.lognormal(0, 0.3, size=n_genes)
    detection = rng.gamma(20, 1 / 20, size=n_spots) * 0.3
    ambient = rng.gamma(1, 0.01, size=n_genes)
    mu = detection[:, None] * (abundance @ profiles) * technology + ambient
    counts = rng.negative_binomial(10, 10 / (10 + mu))
    return counts, abundance


def tissue_image(positions: pd.DataFrame, abundance: np.ndarray, size: int, fullres: float) -> np.ndarray:
    """A pink H&E-like picture whose darkness follows the number of cells under each spot."""
    image = np.ones((size, size, 3)) * np.array([0.95, 0.85, 0.9])
    scale = size / fullres
    total = abundance.sum(axis=1) / abundance.sum(axis=1).max()
    rows = (positions["pxl_row_in_fullres"].to_numpy() * scale).astype(int)
    cols = (positions["pxl_col_in_fullres"].to_numpy() * scale).astype(int)
    radius = max(1, int(30 * scale))
    for r, c, t in zip(rows, cols, total, strict=True):
        image[max(r - radius, 0): r + radius, max(c - radius, 0): c + radius] = [0.8 - 0.4 * t, 0.4, 0.7 - 0.2 * t]
    return image


def make_test_data(outdir: str | Path, config: SyntheticDataConfig = SyntheticDataConfig()) -> Path:
    """Write ``reference.h5ad``, ``sample_N/outs/``, ``truth/`` and ``samplesheet.csv`` under ``outdir``."""
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    genes = gene_table(config.n_genes)
    profiles = cell_type_profiles(rng, config.n_types, config.n_genes)
    write_h5ad(make_reference(rng, profiles, genes, config.n_cells), outdir / "reference.h5ad")
    truth = outdir / "truth"
    truth.mkdir(exist_ok=True)
    type_names = [f"type_{f + 1}" for f in range(config.n_types)]
    pd.DataFrame(profiles.T, index=genes.index, columns=type_names).to_csv(truth / "cell_type_profiles.csv")
    rows = []
    for s in range(config.n_samples):
        sample = f"sample_{s + 1}"
        positions = hex_positions(*config.grid, config.spot_spacing_px)
        counts, abundance = make_spots(rng, profiles, positions, config.cells_per_spot)
        barcodes = random_barcodes(rng, len(positions))
        positions.insert(0, "barcode", barcodes)
        positions.insert(1, "in_tissue", 1)
        pixels = positions[["pxl_row_in_fullres", "pxl_col_in_fullres"]].to_numpy()
        fullres = float(pixels.max() + config.spot_spacing_px)
        images = {"hires": (400, tissue_image(positions, abundance, 400, fullres)),
                  "lowres": (120, tissue_image(positions, abundance, 120, fullres))}
        scalefactors = {
            "spot_diameter_fullres": 0.65 * config.spot_spacing_px,
            "fiducial_diameter_fullres": config.spot_spacing_px,
            "tissue_hires_scalef": images["hires"][0] / fullres,
            "tissue_lowres_scalef": images["lowres"][0] / fullres,
        }
        layout = {"positions_format": "v1", "matrix_format": "h5"} if s % 2 == 0 else {
            "positions_format": "v2", "matrix_format": "mtx.gz"}
        outs = write_spaceranger_outs(
            outdir / sample / "outs", sp.csr_matrix(counts), barcodes, list(genes["gene_ids"]), list(genes.index),
            positions, scalefactors, {k: img for k, (_, img) in images.items()}, **layout,
        )
        pd.DataFrame(abundance, index=barcodes, columns=type_names).to_csv(truth / f"{sample}_cell_abundance.csv")
        rows.append({"sample": sample, "spaceranger_dir": str(outs), "batch": sample,
                     "n_cells_per_location": config.cells_per_spot + 1})
    with (outdir / "samplesheet.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return outdir
