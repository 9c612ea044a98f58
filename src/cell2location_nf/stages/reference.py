"""Stage 1: estimate reference signatures with the NB regression model, export them, reload them."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from pyro.infer import Trace_ELBO

from .. import __version__
from ..errors import InputError
from ..export.mod import mod_header
from ..export.posterior import analytic_quantiles, central_summary, sampled_summaries
from ..inference.checkpoint import Checkpoint
from ..inference.compile import log_compile_cache_use, prepare_compile
from ..inference.device import resolve_device
from ..inference.svi import TrainingHistory, run_svi, seed_everything
from ..io.model_store import load_model, save_model
from ..io.write import atomic_write, write_h5ad
from ..models.guide import MeanFieldGuide
from ..models.reference import (
    MODEL_NAME,
    ReferenceDesign,
    ReferenceModel,
    cell_groups,
    cluster_averages,
    expected_mean,
    max_epochs_heuristic,
)
from ..models.reference_elbo import RowNonzeros, negative_elbo
from ..plots.reference_qc import plot_reconstruction, plot_signature_vs_average
from ..plots.training import plot_history
from ..preprocessing.counts import check_raw_counts
from .reference_design import build_design

log = logging.getLogger(__name__)

SIGNATURE_SITE = "per_cluster_mu_fg"
DENSE_LIMIT = 100_000_000  # cells x genes kept dense on the device below this; larger data is densified per batch


@dataclass
class ReferenceSettings:
    """Training settings; defaults are upstream's tutorial values."""

    max_epochs: int | None = 250  # None -> upstream's heuristic min(20000/C*1000, 1000)
    batch_size: int | None = 2500  # None -> full batch
    lr: float = 0.002
    seed: int = 0
    device: str = "auto"
    clip_norm: float | None = None
    min_cells_per_label: int = 10
    elbo: str = "fused"  # "fused": the −ELBO in plain torch (models/reference_elbo.py); "pyro": Trace_ELBO
    compile: bool | None = None  # torch.compile the fused objective; None: see loss_function


@dataclass
class TrainedReference:
    adata: ad.AnnData
    design: ReferenceDesign
    guide: MeanFieldGuide
    keys: dict
    settings: ReferenceSettings
    history: TrainingHistory = field(default_factory=TrainingHistory)
    device: str = "cpu"


def _dense_tensor(x, device: torch.device) -> torch.Tensor:
    """Rows of a count matrix (dense or scipy sparse) as a dense float32 tensor on ``device``."""
    return torch.as_tensor(x.toarray() if sp.issparse(x) else np.asarray(x), dtype=torch.float32, device=device)


class _CellBatches:
    """Shuffled minibatches of cells each epoch (no drop_last), as the upstream loader gives them.

    With ``with_rows`` False (the grouped objective reads no count rows) no copy of the counts is kept and
    minibatches carry empty rows."""

    def __init__(self, x, design: ReferenceDesign, batch_size: int | None, device: torch.device, seed: int,
                 with_rows: bool = True):
        self.n_obs = x.shape[0]
        self.device = device
        self.source = x  # read for the guide's example rows; the AnnData holds it anyway
        self.dense = x.shape[0] * x.shape[1] <= DENSE_LIMIT
        self.x = None
        if with_rows:
            self.x = _dense_tensor(x, device) if self.dense else sp.csr_matrix(x, dtype=np.float32)
        self.labels = torch.as_tensor(design.labels, device=device)
        self.batches = torch.as_tensor(design.batches, device=device)
        self.covariates = torch.as_tensor(design.covariates, device=device)
        self.batch_size = batch_size or self.n_obs
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def with_rows(self) -> bool:
        return self.x is not None

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        if not self.with_rows:
            return torch.empty((len(idx), 0), device=self.device)
        if self.dense:
            return self.x[idx]
        return _dense_tensor(self.x[idx.cpu().numpy()], self.device)

    def codes(self, idx: torch.Tensor) -> tuple:
        """Design codes of cells ``idx`` (on the device), and ``idx``: the model's arguments after the rows."""
        return self.labels[idx], self.batches[idx], self.covariates[idx], idx

    def args(self, idx: torch.Tensor) -> tuple:
        idx = idx.to(self.device)
        return self.rows(idx), *self.codes(idx)

    def example(self, n: int) -> tuple:
        """The model's arguments for the first ``n`` cells, rows read from the source matrix whatever ``with_rows``
        says: the guide's initial values come from one trace of the model."""
        idx = torch.arange(min(self.n_obs, n), device=self.device)
        return _dense_tensor(self.source[:len(idx)], self.device), *self.codes(idx)

    def __call__(self, epoch: int):
        if self.batch_size >= self.n_obs:
            yield self.args(torch.arange(self.n_obs))
            return
        order = torch.randperm(self.n_obs, generator=self.generator)
        for start in range(0, self.n_obs, self.batch_size):
            yield self.args(order[start:start + self.batch_size])


COMPILE_WORK = 5e9  # cells x genes x epochs above which compiling the per-cell objective (seconds, once) pays off


def loss_function(settings: ReferenceSettings, x, design: ReferenceDesign, n_epochs: int, device: torch.device):
    """The training objective: the fused torch −ELBO or pyro's Trace_ELBO.

    Returns it and whether it reads the minibatch's count rows (the fused one sums per design-row group
    instead when a minibatch has more cells than there are groups). By default only the per-cell objective of
    a long run is compiled: summed per group, what torch.compile would fuse is types x genes and groups x genes,
    and on the 10,000-cell benchmark it saved 1–3 ms of a 43 ms step for 18–22 s of compiling, and the
    eager run took 54.8 s against 77.0 s (bench/RESULTS.md, "Reference: eager when summed per group").
    """
    if settings.elbo == "pyro":
        return Trace_ELBO().differentiable_loss, True
    if settings.elbo != "fused":
        raise ValueError(f"elbo must be 'fused' or 'pyro', got {settings.elbo!r}")
    groups = cell_groups(design)
    cells_per_step = min(settings.batch_size or x.shape[0], x.shape[0])
    grouped = groups.n_groups < cells_per_step
    log.info("Likelihood summed over %s (%d design-row groups, %d cells per step)",
             "design-row groups" if grouped else "cells", groups.n_groups, cells_per_step)
    long_run = x.shape[0] * x.shape[1] * n_epochs >= COMPILE_WORK
    compiled = settings.compile if settings.compile is not None else long_run and not grouped
    if compiled:
        log.info("Compiling the reference objective with torch.compile (once; cached for later runs)")
        prepare_compile(device)
    nonzeros = RowNonzeros(x, device, groups if grouped else None)
    return partial(negative_elbo, use_compile=compiled, nonzeros=nonzeros), not grouped


def _model(adata: ad.AnnData, design: ReferenceDesign, device: torch.device) -> ReferenceModel:
    return ReferenceModel(adata.n_obs, adata.n_vars, design, device=device)


def train_reference(adata: ad.AnnData, labels_key: str, batch_key: str | None, covariate_keys: list[str],
                    settings: ReferenceSettings | None = None, source: str = "reference",
                    checkpoint: Checkpoint | None = None) -> TrainedReference:
    """Fit the regression model to raw counts; the guide starts at upstream's initial values.

    ``checkpoint``: resume from / save training state there (:func:`~..inference.svi.run_svi`).
    """
    settings = settings or ReferenceSettings()
    check_raw_counts(adata.X, f"reference '{source}'")
    design = build_design(adata, labels_key, batch_key, covariate_keys, settings.min_cells_per_label, source)
    device = resolve_device(settings.device)
    seed_everything(settings.seed, device)
    n_epochs = settings.max_epochs or max_epochs_heuristic(adata.n_obs)
    log.info("Reference model: %d cells x %d genes, %d cell types, %d batches, %d covariate levels; "
             "%d epochs, batch size %s, lr %g, device %s", adata.n_obs, adata.n_vars, design.n_factors,
             design.n_batches, design.n_covariate_levels, n_epochs, settings.batch_size, settings.lr, device)
    loss_fn, with_rows = loss_function(settings, adata.X, design, n_epochs, device)
    data = _CellBatches(adata.X, design, settings.batch_size, device, settings.seed, with_rows)
    model = _model(adata, design, device)
    averages = torch.as_tensor(cluster_averages(adata.X, design.labels, design.n_factors), dtype=torch.float32,
                               device=device)
    guide = MeanFieldGuide(model.initial_values(averages, data.example(2)))
    guide.to(device)
    history = run_svi(model, guide, data, n_epochs, settings.lr, settings.clip_norm, name="reference",
                      loss_fn=loss_fn, checkpoint=checkpoint)
    log_compile_cache_use("reference")
    keys = {"labels_key": labels_key, "batch_key": batch_key or "", "categorical_covariate_keys": covariate_keys}
    return TrainedReference(adata, design, guide, keys, settings, history, str(device))


def export_reference(trained: TrainedReference, outdir: str | Path, prefix: str = "reference",
                     num_samples: int = 1000, use_quantiles: bool = False) -> dict[str, Path]:
    """Write signatures CSV, the reference h5ad with varm/uns['mod'] keyed as upstream, and the QC figures.

    The exported signature is the posterior mean of g_fg (``scale_average_detection`` is a no-op upstream
    because the model has no ``detection_y_c`` site). With ``use_quantiles`` summaries are analytic
    quantiles (q05, q50, q95) and the signature is the posterior median.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    adata, design, guide = trained.adata.copy(), trained.design, trained.guide
    sites = guide.site_names
    if use_quantiles:
        summaries = analytic_quantiles(guide, sites, ("q05", "q50", "q95"))
    else:
        summaries = sampled_summaries(guide, sites, num_samples, seed=trained.settings.seed)
    factors = design.factor_names
    for kind, values in summaries.items():
        adata.varm[f"{kind}_{SIGNATURE_SITE}"] = pd.DataFrame(
            values[SIGNATURE_SITE].T, index=adata.var_names, columns=[f"{kind}_{SIGNATURE_SITE}_{f}" for f in factors])
    mod = mod_header(MODEL_NAME, factors, adata.var_names, adata.obs_names)
    mod.update({f"post_sample_{kind}": values for kind, values in summaries.items()})
    adata.uns["mod"] = mod
    signature = central_summary(summaries)[SIGNATURE_SITE]
    files = {
        "signatures": outdir / f"{prefix}.signatures.csv",
        "h5ad": outdir / f"{prefix}.trained.h5ad",
        "history": outdir / f"{prefix}.elbo_history.png",
        "reconstruction": outdir / f"{prefix}.reconstruction.png",
        "signature_vs_average": outdir / f"{prefix}.signature_vs_average.png",
        "summary": outdir / f"{prefix}.training_summary.json",
    }
    table = pd.DataFrame(signature.T, index=adata.var_names, columns=factors)
    table.index.name = "gene"
    atomic_write(files["signatures"], lambda tmp: table.to_csv(tmp))
    write_h5ad(adata, files["h5ad"])
    atomic_write(files["history"], lambda tmp: plot_history(trained.history.elbo_train, tmp, iter_start=20,
                                                            title="Reference model training"))
    observed, expected = reconstruction(trained, central_summary(summaries))
    atomic_write(files["reconstruction"], lambda tmp: plot_reconstruction(observed, expected, tmp))
    averages = cluster_averages(trained.adata.X, design.labels, design.n_factors)
    atomic_write(files["signature_vs_average"], lambda tmp: plot_signature_vs_average(averages, signature, tmp))
    summary = training_summary(trained, observed, expected)
    atomic_write(files["summary"], lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    return files


def reconstruction(trained: TrainedReference, means: dict[str, np.ndarray], n_cells: int = 1000):
    """Observed counts and expected μ (posterior means) for up to ``n_cells`` random cells."""
    rng = np.random.default_rng(trained.settings.seed)
    cells = np.sort(rng.choice(trained.adata.n_obs, size=min(n_cells, trained.adata.n_obs), replace=False))
    d = trained.design
    t = means.get("detection_tech_gene_tg")
    g, s, y = (torch.as_tensor(means[k]) for k in ("per_cluster_mu_fg", "s_g_gene_add", "detection_mean_y_e"))
    mu = expected_mean(g, s, y, torch.as_tensor(t) if t is not None else None, torch.as_tensor(d.labels[cells]),
                       torch.as_tensor(d.batches[cells]), torch.as_tensor(d.covariates[cells])).numpy()
    x = trained.adata.X[cells]
    return (x.toarray() if sp.issparse(x) else np.asarray(x)), mu


def training_summary(trained: TrainedReference, observed: np.ndarray, expected: np.ndarray) -> dict:
    """Small metrics for reports: sizes, epochs, final -ELBO, runtime, device, reconstruction correlation."""
    return {
        "cells": trained.adata.n_obs, "genes": trained.adata.n_vars,
        "cell_types": trained.design.n_factors, "batches": trained.design.n_batches,
        "epochs": len(trained.history.elbo_train), "final_elbo": trained.history.elbo_train[-1],
        "runtime_s": round(trained.history.seconds, 2), "device": trained.device,
        "reconstruction_pearson": float(np.corrcoef(np.log1p(observed.ravel()), np.log1p(expected.ravel()))[0, 1]),
    }


def save_reference(trained: TrainedReference, path: str | Path) -> Path:
    """Trained parameters, names and settings in HDF5 (no pickle)."""
    d = trained.design
    names = {"var_names": list(trained.adata.var_names), "factor_names": d.factor_names,
             "batch_names": d.batch_names, "sites": trained.guide.site_names}
    names.update({f"covariate_levels_{i}": levels for i, levels in enumerate(d.covariate_levels)})
    metadata = {"model_name": MODEL_NAME, "package_version": __version__, "n_obs": trained.adata.n_obs,
                "n_vars": trained.adata.n_vars, "keys": trained.keys, "settings": asdict(trained.settings),
                "device": trained.device, "runtime_s": trained.history.seconds}
    return save_model(path, trained.guide, trained.history.elbo_train, names, metadata)


def load_reference(path: str | Path, adata: ad.AnnData, source: str = "reference") -> TrainedReference:
    """Rebuild a trained reference from saved parameters and the same prepared reference data."""
    stored = load_model(path)
    if stored.metadata.get("model_name") != MODEL_NAME:
        raise InputError(f"'{path}' holds a {stored.metadata.get('model_name')} model, not a reference model")
    if list(adata.var_names) != stored.names["var_names"]:
        raise InputError(f"reference '{source}' has other genes than the model saved in '{path}'; "
                         "export with the reference the model was trained on")
    keys = stored.metadata["keys"]
    settings = ReferenceSettings(**stored.metadata["settings"])
    design = build_design(adata, keys["labels_key"], keys["batch_key"] or None, keys["categorical_covariate_keys"],
                          settings.min_cells_per_label, source)
    if design.factor_names != stored.names["factor_names"]:
        raise InputError(f"reference '{source}' has other cell types than the model saved in '{path}'")
    guide = MeanFieldGuide({k: torch.ones(stored.locs[k].shape) for k in stored.names["sites"]})
    guide.load_state_dict(stored.guide_state())
    history = TrainingHistory(stored.history, stored.metadata.get("runtime_s", 0.0))
    return TrainedReference(adata, design, guide, keys, settings, history, stored.metadata.get("device", "cpu"))

