"""Stage 2: map cell types onto all spatial samples jointly with the cell2location model."""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Callable
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
from ..export.per_type_expression import write_per_type_expression
from ..export.posterior import (
    MAX_CHUNK_VALUES,
    analytic_quantiles,
    central_summary,
    parse_quantile_name,
    sampled_summaries,
    summarise_draws,
)
from ..inference.checkpoint import Checkpoint
from ..inference.compile import DYNAMIC, build_kernel_header_in_background, log_compile_cache_use, prepare_compile
from ..inference.device import resolve_device
from ..inference.svi import Schedule, TrainingHistory, run_svi, seed_everything
from ..inference.warm_start import UPDATES, check_relaxation, poisson_nmf
from ..io.model_store import load_model, save_model
from ..io.write import atomic_write, write_h5ad
from ..models.guide import MeanFieldGuide
from ..models.mapping import (
    LOCAL_SITES,
    MODEL_NAME,
    MappingHyperparameters,
    MappingModel,
    detection_mean_from_data,
    expected_mean,
)
from ..models.mapping_elbo import CountBatch, negative_elbo
from ..plots.mapping_qc import plot_spatial_qc_across_batches
from ..plots.reference_qc import plot_reconstruction
from ..plots.training import plot_history
from ..preprocessing.counts import canonical_csr, check_raw_counts, row_log_factorials
from .mapping_inputs import check_aligned, check_signatures

log = logging.getLogger(__name__)

ABUNDANCE_SITE = "w_sf"


SCHEDULES: dict[str, dict] = {
    # upstream cell2location 0.1.5: 30,000 full-batch epochs from the prior means at a constant Adam lr 0.002
    "upstream": {"max_epochs": 30000, "lr": 0.002, "lr_final": None, "warm_start": False},
    # validated against upstream in bench/RESULTS.md (issue 5); the guide's scales at 0.35 of the learning rate
    # slow the drift of the absolute scale, and ending the decay at 0.012 rather than 0.002 lets the split of
    # each spot's counts between cells and detection converge further (RESULTS.md, "A slower end of the decay";
    # chosen over 0.006 with 0.42 in "Four seeds per set"); a fifth of each location's starting composition from
    # Poisson NMF keeps similar types from trading abundance on the optimiser's random path ("A composition start")
    "fast": {"max_epochs": 9000, "lr": 0.04, "lr_final": 0.012, "warm_start": False, "scale_lr_factor": 0.35,
             "composition_start": 0.2},
}
# 'fast' when training on minibatches of locations (--batch-size below the number of locations): 100 epochs
# and a learning rate that falls with the number of minibatches per epoch (minibatch_lr), from the Poisson-NMF
# warm start: each location's parameters move only when its minibatch comes up (100 times in 100 epochs), too
# few steps to travel from the prior mean (bench/RESULTS.md, scale)
FAST_MINIBATCH: dict = {"max_epochs": 100, "warm_start": True}
# fourfold lower for every tenfold more minibatches per epoch: 0.04 at 4, 0.023 at 10, 0.01 at 40, which trained well
MINIBATCH_LR_EXPONENT = math.log10(4)


def uses_minibatches(batch_size: int | None, n_obs: int) -> bool:
    """Whether training steps on part of the locations (a batch size below their number) rather than all."""
    return batch_size is not None and batch_size < n_obs


def minibatches_per_epoch(n_obs: int, batch_size: int) -> int:
    """Steps per epoch on minibatches: the loader's split of the locations, and the count the learning rate follows."""
    return math.ceil(n_obs / batch_size)


def minibatch_lr(n_obs: int, batch_size: int) -> tuple[float, float]:
    """Initial and final learning rates of ``fast-minibatch`` for ``n_obs`` locations in minibatches.

    Many noisy steps per epoch make training diverge at a learning rate that full-batch training takes
    in its stride (at 40 steps per epoch 0.02 diverged, 0.01 did not), while few steps converge slowly at a
    low one (at 4 steps, 0.01 reached Pearson 0.45 where 0.04 reached 0.84). The start is 0.04 up to 4
    steps per epoch and falls fourfold for every tenfold more steps beyond; it decays tenfold over the epochs.
    """
    steps = minibatches_per_epoch(n_obs, batch_size)
    lr = SCHEDULES["fast"]["lr"] * min(1.0, (4 / steps) ** MINIBATCH_LR_EXPONENT)
    return round(lr, 5), round(lr / 10, 6)


@dataclass
class MappingSettings:
    """Training settings; the defaults are upstream's schedule (see :func:`settings_for_schedule`)."""

    max_epochs: int = 30000
    batch_size: int | None = None  # None -> all locations every step
    lr: float = 0.002
    seed: int = 0
    device: str = "auto"
    clip_norm: float | None = None
    detection_alpha: float = 20.0
    detection_mean_correction: float = 1.0
    A_factors_per_location: float = 7.0  # noqa: N815
    B_groups_per_location: float = 7.0  # noqa: N815
    n_groups: int = 50
    elbo: str = "fused"  # "fused": models/mapping_elbo.py (same objective, faster); "pyro": Trace_ELBO
    warm_start: bool = False  # start w_sf from Poisson NMF with fixed signatures instead of the prior mean
    # that NMF: UPDATES (300) plain updates by default. Fewer (a stop on its deviance) or over-relaxed ones saved a few
    # seconds in 20,000 bins and moved the mapping's metrics, mostly down (JSD up to 0.010 higher, the absolute scale
    # up to 0.05 further from 1: bench/RESULTS.md, "Shorter warm starts: measured, not adopted"); the composition
    # start of 'fast' always makes UPDATES plain updates
    warm_start_updates: int = UPDATES  # that NMF's most updates
    warm_start_relaxation: float = 1.0  # exponent of its updates' factors (1: plain updates)
    warm_start_tol: float = 0.0  # stop it early once its deviance is flat to this (0: never)
    composition_start: float = 0.0  # share of w_sf's starting composition from Poisson NMF (totals at the prior mean)
    lr_final: float | None = None  # exponential learning-rate decay from lr to lr_final
    lr_warmup: int = 0  # epochs of linear learning-rate warm-up before the decay (see inference.svi.Schedule)
    tol: float | None = None  # stop when the -ELBO plateaus (see inference.svi.Schedule)
    min_epochs: int = 1000
    schedule: str = "upstream"  # the preset the epoch/lr/warm-start settings came from (recorded, not used)
    scale_lr_factor: float = 1.0  # learning rate of the guide's scales relative to lr
    compile: bool | None = None  # torch.compile the objective; None: when the run is long (COMPILE_WORK)

    def __post_init__(self) -> None:
        if not 0.0 <= self.composition_start <= 1.0:
            raise ValueError(f"composition_start must be between 0 and 1, got {self.composition_start}")
        if self.warm_start_tol < 0:
            raise ValueError(f"warm_start_tol must be 0 or more, got {self.warm_start_tol}")
        if self.warm_start_updates < 1:
            raise ValueError(f"warm_start_updates must be 1 or more, got {self.warm_start_updates}")
        check_relaxation(self.warm_start_relaxation, "warm_start_relaxation")

    @property
    def composition_share(self) -> float:
        """The share of w_sf's starting composition from Poisson NMF that training uses: none after the full
        NMF start (``warm_start``), which sets w_sf whole."""
        return 0.0 if self.warm_start else self.composition_start

    def hyperparameters(self) -> MappingHyperparameters:
        return MappingHyperparameters(A_factors_per_location=self.A_factors_per_location,
                                      B_groups_per_location=self.B_groups_per_location, n_groups=self.n_groups)


def settings_for_schedule(schedule: str, n_obs: int | None = None, **overrides) -> MappingSettings:
    """Settings from a named preset (``SCHEDULES``); overrides that are None keep the preset's value.

    With ``n_obs`` locations and a ``batch_size`` below it, ``fast`` takes its minibatch form
    (``FAST_MINIBATCH`` with :func:`minibatch_lr`), recorded as ``fast-minibatch``. An ``lr`` without
    ``lr_final`` moves the whole decay: the final learning rate keeps the preset's ratio to the initial one.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    preset = SCHEDULES[schedule]
    batch_size = overrides.get("batch_size")
    if schedule == "fast" and n_obs is not None and uses_minibatches(batch_size, n_obs):
        lr, lr_final = minibatch_lr(n_obs, batch_size)
        preset, schedule = {**FAST_MINIBATCH, "lr": lr, "lr_final": lr_final}, "fast-minibatch"
    chosen = {**preset, **{k: v for k, v in overrides.items() if v is not None}}
    if overrides.get("lr") is not None and overrides.get("lr_final") is None and preset.get("lr_final"):
        chosen["lr_final"] = preset["lr_final"] * overrides["lr"] / preset["lr"]  # keep the preset's decay
    return MappingSettings(**chosen, schedule=schedule)


@dataclass
class TrainedMapping:
    adata: ad.AnnData  # combined samples, genes aligned with the signatures
    signatures: pd.DataFrame  # genes x cell types
    guide: MeanFieldGuide
    model: MappingModel
    settings: MappingSettings
    history: TrainingHistory = field(default_factory=TrainingHistory)
    device: str = "cpu"

    @property
    def batch_index(self) -> np.ndarray:
        return batch_codes(self.adata)


def batch_codes(adata: ad.AnnData) -> np.ndarray:
    """Integer batch code of every location (the model's e(s))."""
    return adata.obs["batch"].cat.codes.to_numpy().astype(np.int64)


class DenseRows:
    """The dense (locations x genes) counts of each minibatch, written from its non-zeros into one reused array.

    scipy's ``toarray`` zeroed and filled a fresh 100 MB array on one thread for each 5,000-bin minibatch; here only
    the previous minibatch's non-zeros are set back to 0 and the new ones written, on the training device (with
    :func:`~..models.nb_likelihood.distinct_with_counts`, making a minibatch took 31 instead of 36–38 ms of a
    180 ms step: bench/RESULTS.md, "Minibatch counts built in torch"). The same values; a minibatch's array is
    valid until the next minibatch is made, which training never outlives (each step's counts are used up before
    the next step is drawn, and the likelihood keeps no reference to them).
    """

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.written: torch.Tensor | None = None  # flat positions of the last minibatch's non-zeros

    def __call__(self, shape: tuple[int, int], rows: torch.Tensor, cols: torch.Tensor,
                 values: torch.Tensor) -> torch.Tensor:
        n_rows, n_genes = shape
        if self.buffer is None or self.buffer.shape[0] < n_rows or self.buffer.shape[1] != n_genes:
            self.buffer = torch.zeros(shape, dtype=values.dtype, device=values.device)
        elif self.written is not None:
            self.buffer.view(-1).index_fill_(0, self.written, 0)
        self.written = rows * n_genes + cols
        dense = self.buffer[:n_rows]
        dense.view(-1).index_copy_(0, self.written, values)  # distinct positions: no accumulate path needed
        return dense


class _LocationBatches:
    """All locations per step (full batch) or shuffled minibatches; yields (counts, batch index, idx).

    ``idx`` holds a minibatch's locations; it is None for the full batch (every location, in order), which the
    objective then takes whole instead of gathering rows (``negative_elbo``).

    An epoch's minibatches are as many as ``batch_size`` asks for and of equal size (within one location), not
    full ones and a short remainder: inductor's C++ reductions over more than 4,096 locations take another form,
    so a last minibatch of 1,765 bins (200,000-bin slide, 5,000 per step) compiled the objective again
    (bench/RESULTS.md, "Minibatch counts built in torch"), and a small minibatch's gradient, scaled up to all
    locations, is the noisiest step of the epoch.
    """

    def __init__(self, x, batch_index: np.ndarray, n_batches: int, batch_size: int | None, device: torch.device,
                 seed: int):
        self.n_obs = x.shape[0]
        self.device = device
        self.full = not uses_minibatches(batch_size, self.n_obs)
        self.x = canonical_csr(x)
        self.batch_index = torch.as_tensor(np.asarray(batch_index, dtype=np.int64), device=device)
        self.batch_size = batch_size or self.n_obs
        self.generator = torch.Generator().manual_seed(seed)
        self.n_batches = n_batches
        self._dense_rows = DenseRows()
        self.row_log_factorial = torch.as_tensor(row_log_factorials(self.x), device=device)
        # the full batch carries no index: the objective takes every location whole
        self._full_step = (*self._step(np.arange(self.n_obs))[:2], None) if self.full else None

    def _step(self, idx: np.ndarray) -> tuple[CountBatch, torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(idx, device=self.device)
        batch_index = self.batch_index[rows]
        cut = self.x[idx]
        in_rows = np.repeat(np.arange(len(idx), dtype=np.int64), np.diff(cut.indptr))
        nonzeros = tuple(torch.as_tensor(a, device=self.device)
                         for a in (in_rows, cut.indices.astype(np.int64), cut.data))
        counts = CountBatch(self._dense_rows(cut.shape, *nonzeros), batch_index, self.n_batches, nonzeros,
                            self.row_log_factorial[rows].sum().to(torch.float32))
        return counts, batch_index, rows

    def __call__(self, epoch: int):
        if self.full:
            yield self._full_step
            return
        order = torch.randperm(self.n_obs, generator=self.generator).numpy()
        for part in np.array_split(order, minibatches_per_epoch(self.n_obs, self.batch_size)):
            yield self._step(part)


def _pyro_loss(model, guide, counts: CountBatch, batch_index, idx):
    if idx is None:  # the full batch: pyro's plate subsamples by an index tensor
        idx = torch.arange(counts.n_rows, device=batch_index.device)
    return Trace_ELBO().differentiable_loss(model, guide, counts.x, batch_index, idx)


LOSSES = {"fused": negative_elbo, "pyro": _pyro_loss}
COMPILE_WORK = 5e8  # locations x genes x epochs above which compiling (seconds, once) pays off


def use_compile(settings: MappingSettings, n_obs: int, n_genes: int) -> bool:
    """Compile the objective when asked, or by default when the run is long enough to gain from it."""
    if settings.compile is not None:
        return settings.compile
    return settings.elbo == "fused" and n_obs * n_genes * settings.max_epochs >= COMPILE_WORK


def build_model(adata: ad.AnnData, signatures: pd.DataFrame, settings: MappingSettings,
                device: torch.device) -> MappingModel:
    """The model with data-derived detection mean and per-location expected cell numbers."""
    batches = adata.obs["batch"].cat.categories
    n_cells = adata.obs["n_cells_per_location"].to_numpy(dtype=np.float32)
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    detection_mean = detection_mean_from_data(totals, n_cells, signatures.to_numpy().T,
                                              settings.detection_mean_correction)
    return MappingModel(
        n_obs=adata.n_obs,
        signatures=torch.as_tensor(signatures.to_numpy(dtype=np.float32).T, device=device),
        n_batches=len(batches),
        n_cells_per_location=torch.as_tensor(n_cells, device=device).reshape(-1, 1),
        detection_alpha=torch.full((len(batches), 1), float(settings.detection_alpha), device=device),
        detection_mean=detection_mean,
        hyper=settings.hyperparameters(),
    )


def warm_start_abundance(init: dict[str, torch.Tensor], x, model: MappingModel, updates: int, relaxation: float,
                         tol: float) -> None:
    """Start w_sf and m_g from Poisson NMF with fixed signatures (n_s and z_sr set to match); the rest are the NMF's
    settings (:func:`~..inference.warm_start.poisson_nmf`)."""
    w, m, _ = poisson_nmf(x, model.cell_state, init["detection_y_s"], model.n_cells, n_iter=updates,
                          relaxation=relaxation, tol=tol)
    init["w_sf"], init["m_g"] = w, m
    init["n_s_cells_per_location"] = w.sum(dim=1, keepdim=True).clamp_min(1e-2)
    init["z_sr_groups_factors"] = (init["n_s_cells_per_location"] / model.hyper.n_groups).expand_as(
        init["z_sr_groups_factors"]).clone()
    log.info("Warm start (Poisson NMF): median %.2f cells per location",
             float(init["n_s_cells_per_location"].median()))


def start_composition(init: dict[str, torch.Tensor], x, model: MappingModel, share: float) -> None:
    """Blend w_sf's starting composition: ``share`` from Poisson NMF with fixed signatures, the rest uniform.

    Each location keeps its prior-mean total of cells and every other site its prior mean, so only the split
    between cell types starts from the data; the totals, detection and gene scales are left to training (a
    full NMF start settles them at a joint fit whose absolute scale then drifts low: bench/RESULTS.md).
    """
    w = poisson_nmf(x, model.cell_state, init["detection_y_s"], model.n_cells).w
    composition = w / w.sum(dim=1, keepdim=True)
    uniform = 1.0 / composition.shape[1]
    init["w_sf"] = init["n_s_cells_per_location"] * ((1.0 - share) * uniform + share * composition)
    log.info("Composition start: %g of each location's starting composition from Poisson NMF", share)


def train_mapping(adata: ad.AnnData, signatures: pd.DataFrame, settings: MappingSettings | None = None,
                  source: str = "signatures", checkpoint: Checkpoint | None = None,
                  on_epoch: Callable[[int, MeanFieldGuide], None] | None = None) -> TrainedMapping:
    """Fit the cell2location model to all locations of ``adata`` (samples as batches) jointly.

    ``checkpoint``: resume from / save training state there (:func:`~..inference.svi.run_svi`).
    ``on_epoch(done, guide)``: called after each epoch (``bench/trace_training.py`` scores the guide with it).
    """
    settings = settings or MappingSettings()
    check_signatures(signatures, source)
    check_aligned(adata, signatures, source)
    check_raw_counts(adata.X, "spatial data")
    device = resolve_device(settings.device)
    seed_everything(settings.seed, device)
    compiled = use_compile(settings, adata.n_obs, adata.n_vars)
    if compiled:  # before the set-up below, which the compiler's probes can overlap
        prepare_compile(device)
    model = build_model(adata, signatures, settings, device)
    batch_index = batch_codes(adata)
    init = model.initial_values(batch_index)
    if settings.warm_start:
        warm_start_abundance(init, adata.X, model, settings.warm_start_updates, settings.warm_start_relaxation,
                             settings.warm_start_tol)
    if settings.composition_share > 0:
        start_composition(init, adata.X, model, settings.composition_share)
    guide = MeanFieldGuide(init, local_sites=LOCAL_SITES).to(device)
    data = _LocationBatches(adata.X, batch_index, model.n_batches, settings.batch_size, device, settings.seed)
    log.info("Mapping model: %d locations x %d genes, %d cell types, %d batches; detection mean %.4g, "
             "detection alpha %g; schedule %s: %d epochs, batch size %s, lr %g -> %s (scales x %g, warm-up %d "
             "epochs), device %s",
             adata.n_obs, adata.n_vars, signatures.shape[1], model.n_batches, model.detection_mean,
             settings.detection_alpha, settings.schedule, settings.max_epochs, settings.batch_size or "all",
             settings.lr, settings.lr_final or settings.lr, settings.scale_lr_factor, settings.lr_warmup, device)
    if settings.elbo not in LOSSES:
        raise ValueError(f"elbo must be one of {sorted(LOSSES)}, got {settings.elbo!r}")
    schedule = Schedule(lr_final=settings.lr_final, warmup_epochs=settings.lr_warmup, tol=settings.tol,
                        min_epochs=settings.min_epochs)
    loss_fn = LOSSES[settings.elbo]
    if compiled:
        log.info("Compiling the objective with torch.compile (once; cached for later runs)")
        if device.type == "cpu":  # while Python traces on one core
            build_kernel_header_in_background()
        # minibatch sizes change (the last one of an epoch, the distinct counts of every step): one dynamic compile
        loss_fn = partial(negative_elbo, use_compile=True if data.full else DYNAMIC)
    history = run_svi(model, guide, data, settings.max_epochs, settings.lr, settings.clip_norm, name="mapping",
                      loss_fn=loss_fn, schedule=schedule, scale_lr_factor=settings.scale_lr_factor,
                      checkpoint=checkpoint, on_epoch=None if on_epoch is None else lambda done: on_epoch(done, guide))
    log_compile_cache_use("mapping")
    return TrainedMapping(adata, signatures, guide, model, settings, history, str(device))


def _u_sf_summaries(trained: TrainedMapping, num_samples: int, quantiles: tuple[str, ...]) -> dict[str, np.ndarray]:
    """u_sf = w_sf Σ_g g_fg m_g from joint draws of w (per location chunk) and m_g (one draw set)."""
    guide, seed = trained.guide, trained.settings.seed
    device = guide.locs["w_sf"].device
    gen = torch.Generator(device=device).manual_seed(seed + zlib.crc32(b"u_sf_mRNA_factors"))
    m_g = guide.sample_site("m_g", num_samples, gen)  # (n, 1, G)
    totals = m_g[:, 0, :] @ trained.model.cell_state.T  # (n, F); a matmul, never an (n, F, G) product in memory
    loc, scale = guide.locs["w_sf"].detach(), guide.scale("w_sf").detach()
    levels = {q: parse_quantile_name(q) for q in quantiles}
    chunk = max(1, MAX_CHUNK_VALUES // (num_samples * loc.shape[1]))
    parts: dict[str, list] = {k: [] for k in ("means", "stds", *quantiles)}
    for start in range(0, loc.shape[0], chunk):
        sl = slice(start, start + chunk)
        noise = torch.randn((num_samples, *loc[sl].shape), generator=gen, device=device)
        u = torch.exp(loc[sl] + scale[sl] * noise) * totals[:, None, :]
        for key, value in summarise_draws(u, levels).items():
            parts[key].append(value)
    return {k: torch.cat(v).cpu().numpy() for k, v in parts.items()}


def posterior_summaries(trained: TrainedMapping, num_samples: int = 1000,
                        use_quantiles: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """{'means'|'stds'|'q05'|'q95' (or 'q05'|'q50'|'q95'): {site: array}}, chunked over locations."""
    sites = trained.guide.site_names
    alpha = trained.model.detection_alpha.cpu().numpy()
    if use_quantiles:
        return analytic_quantiles(trained.guide, sites, ("q05", "q50", "q95"))
    quantiles = ("q05", "q95")
    summaries = sampled_summaries(trained.guide, sites, num_samples, seed=trained.settings.seed, quantiles=quantiles)
    for kind, values in _u_sf_summaries(trained, num_samples, quantiles).items():
        summaries[kind]["u_sf_mRNA_factors"] = values
    for kind in summaries:
        summaries[kind]["detection_hyp_prior_alpha"] = np.zeros_like(alpha) if kind == "stds" else alpha
    return summaries


def _sample_adata(trained: TrainedMapping, summaries: dict, sample: str) -> ad.AnnData:
    """One sample's locations with upstream's obsm keys and uns['mod'] (local arrays for its rows only)."""
    adata = trained.adata
    rows = np.flatnonzero((adata.obs["sample"] == sample).to_numpy())
    out = adata[rows].copy()
    out.uns["spatial"] = {sample: adata.uns["spatial"][sample]} if sample in adata.uns.get("spatial", {}) else {}
    factors = list(trained.signatures.columns)
    for kind, values in summaries.items():
        columns = [f"{kind}cell_abundance_w_sf_{f}" for f in factors]  # no underscore after kind, as upstream
        out.obsm[f"{kind}_cell_abundance_w_sf"] = pd.DataFrame(values[ABUNDANCE_SITE][rows], index=out.obs_names,
                                                               columns=columns)
    central = central_summary(summaries)
    out.obs["detection_y_s"] = central["detection_y_s"][rows, 0]
    out.obs["total_abundance"] = central[ABUNDANCE_SITE][rows].sum(axis=1)
    if "u_sf_mRNA_factors" in central:
        out.obsm["means_mRNA_abundance_u_sf"] = pd.DataFrame(
            central["u_sf_mRNA_factors"][rows], index=out.obs_names,
            columns=[f"meansmRNA_abundance_u_sf_{f}" for f in factors])
    local = set(LOCAL_SITES) | {"u_sf_mRNA_factors"}
    mod = mod_header(MODEL_NAME, factors, out.var_names, out.obs_names)
    for kind, values in summaries.items():
        mod[f"post_sample_{kind}"] = {site: (v[rows] if site in local else v) for site, v in values.items()}
    mod["batch_names"] = np.array(list(adata.obs["batch"].cat.categories), dtype=object)  # rows of s_g_gene_add
    out.uns["mod"] = mod
    return out


def export_mapping(trained: TrainedMapping, outdir: str | Path, num_samples: int = 1000,
                   use_quantiles: bool = False, prefix: str = "mapping",
                   per_type_expression: bool = False) -> dict[str, Path]:
    """Per-sample .h5ad and abundance CSVs, QC figures and a training summary.

    ``per_type_expression`` adds ``<sample>.expression_per_cell_type.h5ad`` (counts split among types).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    summaries = posterior_summaries(trained, num_samples, use_quantiles)
    files: dict[str, Path] = {}
    qc = trained.adata.copy()
    central = central_summary(summaries)
    qc.obs["total_counts"] = np.asarray(qc.X.sum(axis=1)).ravel()
    qc.obs["total_abundance"] = central[ABUNDANCE_SITE].sum(axis=1)
    qc.obs["detection_y_s"] = summaries["q05"]["detection_y_s"][:, 0]
    for sample in trained.adata.obs["sample"].cat.categories:
        adata = _sample_adata(trained, summaries, sample)
        files[f"{sample}.h5ad"] = write_h5ad(adata, outdir / f"{sample}.mapped.h5ad")
        for kind in ("means", "q50", "q05"):
            if f"{kind}_cell_abundance_w_sf" not in adata.obsm:
                continue
            table = adata.obsm[f"{kind}_cell_abundance_w_sf"].copy()
            table.columns = list(trained.signatures.columns)
            table.insert(0, "barcode", adata.obs["barcode"].to_numpy())
            files[f"{sample}.{kind}.csv"] = atomic_write(outdir / f"{sample}.cell_abundance_{kind}.csv",
                                                         partial(table.to_csv, index_label="location"))
        if per_type_expression:
            files[f"{sample}.per_type"] = _write_per_type_expression(trained, summaries["q05"], sample, outdir)
    history = trained.history.elbo_train
    files["history"] = atomic_write(outdir / f"{prefix}.elbo_history.png", lambda tmp: plot_history(
        history, tmp, iter_start=1000 if len(history) > 2000 else 0, title="Mapping model training"))
    observed, expected = reconstruction(trained, central)
    files["reconstruction"] = atomic_write(outdir / f"{prefix}.reconstruction.png",
                                           lambda tmp: plot_reconstruction(observed, expected, tmp))
    files["spatial_qc"] = atomic_write(outdir / f"{prefix}.spatial_qc.png",
                                       lambda tmp: plot_spatial_qc_across_batches(qc, tmp))
    summary = mapping_summary(trained, qc, observed, expected)
    files["summary"] = atomic_write(outdir / f"{prefix}.training_summary.json",
                                    lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    return files


def _write_per_type_expression(trained: TrainedMapping, q05: dict[str, np.ndarray], sample: str,
                               outdir: Path) -> Path:
    """Counts of one sample split among cell types at the q05 posterior (as upstream's tutorial does)."""
    adata = trained.adata
    rows = np.flatnonzero((adata.obs["sample"] == sample).to_numpy())
    return write_per_type_expression(
        outdir / f"{sample}.expression_per_cell_type.h5ad", sp.csr_matrix(adata.X[rows]), q05[ABUNDANCE_SITE][rows],
        trained.signatures.to_numpy().T, q05["m_g"], q05["s_g_gene_add"], trained.batch_index[rows],
        adata.obs.iloc[rows][["barcode", "sample"]], adata.var[[]], list(trained.signatures.columns))


def _observed_and_expected(x, central: dict[str, np.ndarray], cell_state: torch.Tensor, batch_index: np.ndarray,
                           n_locations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed counts and posterior expected μ (from the point estimates ``central``) of up to
    ``n_locations`` random locations."""
    rows = np.sort(np.random.default_rng(seed).choice(x.shape[0], size=min(n_locations, x.shape[0]), replace=False))
    t = {k: torch.as_tensor(np.asarray(central[k], dtype=np.float32))
         for k in ("w_sf", "m_g", "s_g_gene_add", "detection_y_s")}
    mu = expected_mean(t["w_sf"][rows], cell_state, t["m_g"], t["s_g_gene_add"], t["detection_y_s"][rows],
                       torch.as_tensor(batch_index[rows])).numpy()
    observed = x[rows]
    return (observed.toarray() if sp.issparse(observed) else np.asarray(observed)), mu


def reconstruction(trained: TrainedMapping, central: dict[str, np.ndarray], n_locations: int = 1000):
    """Observed counts and posterior expected μ for up to ``n_locations`` random locations."""
    return _observed_and_expected(trained.adata.X, central, trained.model.cell_state.cpu(), trained.batch_index,
                                  n_locations, trained.settings.seed)


def sample_reconstruction(mapped: ad.AnnData, signatures: pd.DataFrame, n_locations: int = 1000, seed: int = 0):
    """Observed counts and posterior expected μ for up to ``n_locations`` locations of one exported sample.

    Needs only the published files: ``<sample>.mapped.h5ad`` and the reference signatures.
    """
    mod = mapped.uns["mod"]
    central = central_summary({k[len("post_sample_"):]: v for k, v in mod.items() if k.startswith("post_sample_")})
    batch_names = list(mod["batch_names"])
    batch_index = np.array([batch_names.index(b) for b in mapped.obs["batch"].astype(str)], dtype=np.int64)
    cell_state = signatures.loc[mapped.var_names, list(mod["factor_names"])].to_numpy(dtype=np.float32).T
    return _observed_and_expected(mapped.X, central, torch.as_tensor(cell_state), batch_index, n_locations, seed)


def mapping_summary(trained: TrainedMapping, qc: ad.AnnData, observed: np.ndarray, expected: np.ndarray) -> dict:
    per_sample = qc.obs.groupby("sample", observed=True).agg(
        locations=("total_counts", "size"), median_umis=("total_counts", "median"),
        total_cells=("total_abundance", "sum"), median_abundance=("total_abundance", "median"))
    return {
        "locations": trained.adata.n_obs, "genes": trained.adata.n_vars, "cell_types": trained.signatures.shape[1],
        "batches": trained.model.n_batches, "epochs": len(trained.history.elbo_train),
        "schedule": trained.settings.schedule, "lr": trained.settings.lr, "lr_final": trained.settings.lr_final,
        "lr_warmup": trained.settings.lr_warmup, "scale_lr_factor": trained.settings.scale_lr_factor,
        "warm_start": trained.settings.warm_start,
        **({"warm_start_updates": trained.settings.warm_start_updates,
            "warm_start_relaxation": trained.settings.warm_start_relaxation,
            "warm_start_tol": trained.settings.warm_start_tol} if trained.settings.warm_start else {}),
        "composition_start": trained.settings.composition_share,
        "batch_size": trained.settings.batch_size,
        "final_elbo": trained.history.elbo_train[-1], "runtime_s": round(trained.history.seconds, 2),
        "device": trained.device, "detection_alpha": trained.settings.detection_alpha,
        "detection_mean": trained.model.detection_mean,
        "reconstruction_pearson": float(np.corrcoef(np.log1p(observed.ravel()), np.log1p(expected.ravel()))[0, 1]),
        "samples": json.loads(per_sample.to_json(orient="index")),
    }


def save_mapping(trained: TrainedMapping, path: str | Path) -> Path:
    names = {"obs_names": list(trained.adata.obs_names), "var_names": list(trained.adata.var_names),
             "factor_names": list(trained.signatures.columns), "sites": trained.guide.site_names}
    metadata = {"model_name": MODEL_NAME, "package_version": __version__, "settings": asdict(trained.settings),
                "device": trained.device, "runtime_s": trained.history.seconds}
    return save_model(path, trained.guide, trained.history.elbo_train, names, metadata)


def load_mapping(path: str | Path, adata: ad.AnnData, signatures: pd.DataFrame) -> TrainedMapping:
    """Rebuild a trained mapping from saved parameters and the same combined inputs."""
    stored = load_model(path)
    if stored.metadata.get("model_name") != MODEL_NAME:
        raise InputError(f"'{path}' holds a {stored.metadata.get('model_name')} model, not a mapping model")
    if list(adata.obs_names) != stored.names["obs_names"] or list(adata.var_names) != stored.names["var_names"]:
        raise InputError(f"the spatial data differ from those the model in '{path}' was trained on")
    settings = MappingSettings(**stored.metadata["settings"])
    device = resolve_device(settings.device)
    model = build_model(adata, signatures, settings, device)
    guide = MeanFieldGuide({k: torch.ones(stored.locs[k].shape) for k in stored.names["sites"]},
                           local_sites=LOCAL_SITES)
    guide.load_state_dict(stored.guide_state())
    history = TrainingHistory(stored.history, stored.metadata.get("runtime_s", 0.0))
    return TrainedMapping(adata, signatures, guide.to(device), model, settings, history, str(device))
