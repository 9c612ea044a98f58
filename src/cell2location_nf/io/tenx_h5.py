"""Write count matrices in the 10x Genomics HDF5 feature-barcode schema (Cell Ranger >= 3).

Reading goes through :func:`scanpy.read_10x_h5`; writing is ours because scanpy has no writer and the
test-data generator must produce files that real Space Ranger readers accept.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp


def write_10x_h5(
    path: str | Path,
    counts: sp.spmatrix | np.ndarray,
    barcodes: list[str],
    gene_ids: list[str],
    gene_names: list[str],
    genome: str = "GRCh38",
    software_version: str = "spaceranger-2.1.0",
) -> Path:
    """Write ``counts`` (barcodes x genes) as a 10x feature-barcode matrix HDF5 file."""
    path = Path(path)
    # 10x stores features x barcodes in CSC, i.e. barcodes x features in CSR.
    matrix = sp.csr_matrix(counts, dtype=np.int32)
    n_barcodes, n_genes = matrix.shape
    if len(barcodes) != n_barcodes or len(gene_ids) != n_genes or len(gene_names) != n_genes:
        raise ValueError("barcodes / gene lists do not match the count matrix shape")
    with h5py.File(path, "w", track_order=True) as f:
        f.attrs["filetype"] = np.array([b"matrix"])
        f.attrs["version"] = np.array([2], dtype=np.int32)
        f.attrs["software_version"] = software_version
        f.attrs["chemistry_description"] = np.array([b"Visium Spatial Gene Expression"])
        group = f.create_group("matrix")
        group.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        group.create_dataset("data", data=matrix.data, compression="gzip")
        group.create_dataset("indices", data=matrix.indices.astype(np.int64), compression="gzip")
        group.create_dataset("indptr", data=matrix.indptr.astype(np.int64))
        group.create_dataset("shape", data=np.array([n_genes, n_barcodes], dtype=np.int32))
        features = group.create_group("features")
        features.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        features.create_dataset("feature_type", data=np.array([b"Gene Expression"] * n_genes))
        features.create_dataset("genome", data=np.array([genome.encode()] * n_genes))
        features.create_dataset("id", data=np.array(gene_ids, dtype="S"))
        features.create_dataset("name", data=np.array(gene_names, dtype="S"))
    return path


def read_10x_h5_features(path: str | Path) -> tuple[list[str], list[str]]:
    """Return (gene ids, gene names) of a 10x HDF5 file without reading the counts."""
    with h5py.File(path, "r") as f:
        if "matrix" in f:  # Cell Ranger >= 3
            feats = f["matrix/features"]
            keep = np.ones(len(feats["id"]), dtype=bool)
            if "feature_type" in feats:
                keep = feats["feature_type"][:] == b"Gene Expression"
            ids = [x.decode() for x in feats["id"][:][keep]]
            names = [x.decode() for x in feats["name"][:][keep]]
        else:  # Cell Ranger 2: one group per genome
            genome = next(iter(f.keys()))
            ids = [x.decode() for x in f[genome]["genes"][:]]
            names = [x.decode() for x in f[genome]["gene_names"][:]]
    return ids, names
